package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"unicode"
)

// OCI engine flavours.
const (
	FlavorPodman = "podman"
	FlavorDocker = "docker"
)

// OCI is the Engine of podman and docker: every Spec becomes a
// foreground "run --rm" of the engine's command-line client. Command
// expresses a Spec so:
//
//   - Binds become "-v src:dst[:ro]". Both clients split -v on ':' (and
//     the option list on ','), and take a relative source for a named
//     volume, so a source or target that is not absolute or holds ':' or
//     ',' is refused, naming the bind and its Why.
//   - Env entries become one "--env K=V" argument each; no shell is
//     involved, so a value arrives verbatim (anything but NUL). The name
//     must be a shell variable name: "--env K" without '=' would copy the
//     client's own variable and podman expands "K*" as a glob over it.
//     A later entry for a name replaces an earlier one.
//   - Network false is "--network=none", true is "--network=host": never
//     the default bridge, which edits the host's network set-up and slows
//     every start.
//   - GPUNvidia is "--device nvidia.com/gpu=all" (podman, CDI: it needs
//     "nvidia-ctk cdi generate" on the node) or "--gpus all" (docker, the
//     NVIDIA container toolkit); GPUAMD is "--device /dev/kfd --device
//     /dev/dri" for both. "--group-add keep-groups" is not added: podman
//     supports it with crun only, and Scalebox's podman set-up uses runc;
//     add the render/video groups through Flags where a site needs them.
//   - CleanEnv, ContainAll and WritableTmpfs are Apptainer notions and
//     are accepted and ignored: an OCI container never inherits the
//     client's environment, has its own PID, IPC and mount namespaces and
//     always has a writable layer.
//   - Stdin is "-i"; without it the container's stdin is /dev/null.
//
// Killing the client does not always stop its container (SIGKILL leaves it
// running; SIGTERM is forwarded to it): after a timeout or cancellation
// the caller removes the container by name with Remove.
type OCI struct {
	Flavor string   // FlavorPodman or FlavorDocker
	Path   string   // the client binary; "" = Flavor, looked up on PATH when run
	Env    []string // environment of the clients Remove runs; nil = this process's
}

// NewOCI returns the engine of flavor ("podman" or "docker") whose client
// is at path ("" = the flavor's name, looked up on PATH when run).
func NewOCI(flavor, path string) (*OCI, error) {
	o := &OCI{Flavor: flavor, Path: path}
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *OCI) check() error {
	switch o.Flavor {
	case FlavorPodman, FlavorDocker:
		return nil
	}
	return fmt.Errorf("OCI engine flavor %q is not %q or %q", o.Flavor, FlavorPodman, FlavorDocker)
}

// bin is the client binary.
func (o *OCI) bin() string {
	if o.Path != "" {
		return o.Path
	}
	return o.Flavor
}

// Name implements Engine: "podman" or "docker".
func (o *OCI) Name() string { return o.Flavor }

var (
	ociEnvNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// Container names as podman (libpod NameRegex) and docker
	// (RestrictedNamePattern, two characters at least) accept them.
	podmanNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	dockerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
)

// Command implements Engine: it returns the argv of
//
//	<bin> run --rm [-i] [--name N] --network=none|host [--workdir DIR]
//	    -v src:dst[:ro]... --env K=V... [GPU devices] [Flags...] IMAGE ARGV...
//
// and a nil env (the container's variables are arguments). See OCI for
// how each field is expressed and what is refused.
func (o *OCI) Command(s *Spec) (argv, env []string, err error) {
	if err := o.check(); err != nil {
		return nil, nil, err
	}
	if s == nil {
		return nil, nil, errors.New("container spec is nil")
	}
	if s.Image == "" {
		return nil, nil, fmt.Errorf("container spec has no Image: give an image reference or ID for %s", o.Flavor)
	}
	if strings.HasPrefix(s.Image, "-") {
		return nil, nil, fmt.Errorf("container image %q starts with '-' and would be read as a flag", s.Image)
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, nil, fmt.Errorf("container spec for %s has no Argv: give the program to run", s.Image)
	}
	argv = []string{o.bin(), "run", "--rm"}
	if s.Stdin {
		argv = append(argv, "-i")
	}
	if s.Name != "" {
		re := podmanNameRE
		if o.Flavor == FlavorDocker {
			re = dockerNameRE
		}
		if !re.MatchString(s.Name) {
			return nil, nil, fmt.Errorf("container name %q is not valid for %s: use letters, digits, '_', '.' and '-', starting with a letter or digit", s.Name, o.Flavor)
		}
		argv = append(argv, "--name", s.Name)
	}
	if s.Network {
		argv = append(argv, "--network=host")
	} else {
		argv = append(argv, "--network=none")
	}
	if s.Dir != "" {
		if !path.IsAbs(s.Dir) {
			return nil, nil, fmt.Errorf("container working directory %q is not absolute", s.Dir)
		}
		argv = append(argv, "--workdir", s.Dir)
	}
	for i, b := range s.Binds {
		v, err := BindSpec(b, o.Flavor+" -v", false)
		if err != nil {
			return nil, nil, fmt.Errorf("bind %s: %w", label(b, i), err)
		}
		argv = append(argv, "-v", v)
	}
	envs, err := ParseEnv(s.Env)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range envs {
		argv = append(argv, "--env", e.Name+"="+e.Value)
	}
	switch s.GPU {
	case GPUNone:
	case GPUNvidia:
		if o.Flavor == FlavorDocker {
			argv = append(argv, "--gpus", "all")
		} else {
			argv = append(argv, "--device", "nvidia.com/gpu=all")
		}
	case GPUAMD:
		argv = append(argv, "--device", "/dev/kfd", "--device", "/dev/dri")
	default:
		return nil, nil, fmt.Errorf("container GPU %q is not one of %q, %q, %q", s.GPU, GPUNone, GPUNvidia, GPUAMD)
	}
	argv = append(argv, s.Flags...)
	argv = append(argv, s.Image)
	argv = append(argv, s.Argv...)
	return argv, nil, nil
}

// BindSpec renders a bind as "src:dst[:ro]", the form of podman/docker -v
// and apptainer --bind. Both split it on ':' (and Apptainer on ','), so
// paths holding those cannot be expressed; tool names the flag in the
// message; strict also refuses surrounding spaces and control characters
// (Apptainer trims and mangles them), else only NUL is refused.
func BindSpec(b Bind, tool string, strict bool) (string, error) {
	for _, p := range []struct{ what, path string }{{"source", b.Source}, {"target", b.Target}} {
		switch {
		case p.path == "":
			return "", fmt.Errorf("empty %s path", p.what)
		case !path.IsAbs(p.path):
			return "", fmt.Errorf("%s %q is not an absolute path", p.what, p.path)
		case strings.ContainsAny(p.path, ":,"):
			return "", fmt.Errorf("%s %q contains ':' or ',', which %s splits on: rename the directory or bind a parent", p.what, p.path, tool)
		case strict && (strings.TrimSpace(p.path) != p.path || strings.ContainsFunc(p.path, unicode.IsControl)):
			return "", fmt.Errorf("%s %q has surrounding spaces or control characters", p.what, p.path)
		case strings.ContainsRune(p.path, 0):
			return "", fmt.Errorf("%s %q contains a NUL byte", p.what, p.path)
		}
	}
	v := b.Source + ":" + b.Target
	if b.ReadOnly {
		v += ":ro"
	}
	return v, nil
}

// EnvVar is one container variable.
type EnvVar struct{ Name, Value string }

// ParseEnv reads "K=V" entries for a container, as every engine needs
// them: each name a shell variable name, no value holding NUL, and a later
// entry for a name replacing an earlier one in place.
func ParseEnv(kvs []string) ([]EnvVar, error) {
	index := map[string]int{}
	var out []EnvVar
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("container env entry %q is not NAME=VALUE", ociClip(kv, 80))
		}
		if !ociEnvNameRE.MatchString(k) {
			return nil, fmt.Errorf("container env name %q is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)", ociClip(k, 80))
		}
		if strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("container env %s contains a NUL byte", k)
		}
		if i, dup := index[k]; dup {
			out[i].Value = v
			continue
		}
		index[k] = len(out)
		out = append(out, EnvVar{k, v})
	}
	return out, nil
}

func ociClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// RemoveArgv returns the argv that force-removes the container name,
// stopping it at once (SIGKILL) if it runs, and succeeds if there is no
// such container: "podman rm -f --time 0 --ignore NAME" or
// "docker rm -f NAME" (docker rm -f kills at once; it reports a missing
// container, which Remove ignores).
func (o *OCI) RemoveArgv(name string) []string {
	if o.Flavor == FlavorDocker {
		return []string{o.bin(), "rm", "-f", name}
	}
	return []string{o.bin(), "rm", "-f", "--time", "0", "--ignore", name}
}

// Remove force-removes the container name (see RemoveArgv), for
// Runtime.Remove: killing a podman or docker client does not always stop
// its container. A missing container is not an error.
func (o *OCI) Remove(ctx context.Context, name string) error {
	if err := o.check(); err != nil {
		return err
	}
	if name == "" || strings.HasPrefix(name, "-") {
		return fmt.Errorf("remove container: bad name %q", name)
	}
	argv := o.RemoveArgv(name)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = o.Env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if o.Flavor == FlavorDocker && strings.Contains(strings.ToLower(msg), "no such container") {
			return nil
		}
		if msg != "" {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, ociClip(msg, 1000))
		}
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return nil
}

var _ Engine = (*OCI)(nil)

// ImageDigest returns the content digest ("sha256:…") of a local image,
// for the attempt record: podman's manifest digest, docker's image ID. An
// image that is not local yet (the run will pull it) is an error.
func (o *OCI) ImageDigest(ctx context.Context, image string) (string, error) {
	if err := o.check(); err != nil {
		return "", err
	}
	if image == "" || strings.HasPrefix(image, "-") {
		return "", fmt.Errorf("image digest: bad image %q", image)
	}
	format := "{{.Digest}}"
	if o.Flavor == FlavorDocker {
		format = "{{.Id}}"
	}
	cmd := exec.CommandContext(ctx, o.bin(), "image", "inspect", "--format", format, image)
	cmd.Env = o.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s image inspect %s: %w: %s", o.Flavor, image, err, ociClip(strings.TrimSpace(stderr.String()), 500))
	}
	return strings.TrimSpace(string(out)), nil
}
