package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// actionFlags are the flags of exec and run, as Apptainer 1.3 and
// SingularityCE 4.1 define them (a subset; flags not listed are unknown
// flags to the double, which real users would notice as a difference).
var actionFlags = []flagDef{
	{name: "bind", short: 'B', kind: arrayFlag, env: []string{"BIND", "BINDPATH"}, usage: "a user-bind path specification: src[:dest[:opts]]", emulated: true},
	{name: "pwd", kind: stringFlag, env: []string{"PWD", "TARGET_PWD"}, usage: "initial working directory for payload process inside the container", emulated: true},
	{name: "cleanenv", short: 'e', kind: boolFlag, env: []string{"CLEANENV"}, usage: "clean environment before running container", emulated: true},
	{name: "containall", short: 'C', kind: boolFlag, env: []string{"CONTAINALL"}, usage: "contain not only file systems, but also PID, IPC, and environment", emulated: true},
	{name: "contain", short: 'c', kind: boolFlag, env: []string{"CONTAIN"}, usage: "use minimal /dev and empty other directories (e.g. /tmp and $HOME)", emulated: true},
	{name: "writable-tmpfs", kind: boolFlag, env: []string{"WRITABLE_TMPFS"}, usage: "makes the file system accessible as read-write with non persistent data", emulated: true},
	{name: "nv", kind: boolFlag, env: []string{"NV"}, usage: "enable Nvidia support", emulated: true},
	{name: "rocm", kind: boolFlag, env: []string{"ROCM"}, usage: "enable experimental Rocm support", emulated: true},
	{name: "no-eval", kind: boolFlag, env: []string{"NO_EVAL"}, usage: "do not shell evaluate env vars or OCI container CMD/ENTRYPOINT/ARGS", emulated: true},
	{name: "env", kind: envMapFlag, usage: "pass environment variable to contained process", emulated: true},
	{name: "home", short: 'H', kind: stringFlag, env: []string{"HOME"}, usage: "a home directory specification: src[:dest]", emulated: true},
	{name: "no-home", kind: boolFlag, env: []string{"NO_HOME"}, usage: "do NOT mount users home directory if /home is not the current working directory", emulated: true},
	{name: "no-mount", kind: sliceFlag, env: []string{"NO_MOUNT"}, usage: "disable one or more 'mount xxx' options set in the configuration file and/or specify absolute destination path to disable a bind path entry", emulated: true},
	{name: "pid", short: 'p', kind: boolFlag, env: []string{"PID", "UNSHARE_PID"}, usage: "run container in a new PID namespace", emulated: true},
	{name: "ipc", short: 'i', kind: boolFlag, env: []string{"IPC", "UNSHARE_IPC"}, usage: "run container in a new IPC namespace", emulated: true},
	{name: "uts", kind: boolFlag, env: []string{"UTS", "UNSHARE_UTS"}, usage: "run container in a new UTS namespace", emulated: true},
	{name: "hostname", kind: stringFlag, env: []string{"HOSTNAME"}, usage: "set container hostname", emulated: true},
	{name: "net", short: 'n', kind: boolFlag, env: []string{"NET", "UNSHARE_NET"}, usage: "run container in a new network namespace", emulated: true},
	{name: "network", kind: stringFlag, env: []string{"NETWORK"}, usage: "specify desired network type separated by commas, each network will bring up a dedicated interface inside container", emulated: true},
	{name: "no-init", kind: boolFlag, env: []string{"NOSHIMINIT"}, usage: "do NOT start shim process with --pid", emulated: true},
	// Accepted without effect: privileges, capabilities, security and
	// resource limits do not change what the tests observe as root.
	{name: "userns", short: 'u', kind: boolFlag, env: []string{"USERNS", "UNSHARE_USERNS"}, usage: "run container in a new user namespace", inert: true},
	{name: "no-privs", kind: boolFlag, env: []string{"NO_PRIVS"}, usage: "drop all privileges from root user in container", inert: true},
	{name: "keep-privs", kind: boolFlag, env: []string{"KEEP_PRIVS"}, usage: "let root user keep privileges in container (root only)", inert: true},
	{name: "fakeroot", short: 'f', kind: boolFlag, env: []string{"FAKEROOT"}, usage: "run container with the appearance of running as root", inert: true},
	{name: "add-caps", kind: stringFlag, env: []string{"ADD_CAPS"}, usage: "a comma separated capability list to add", inert: true},
	{name: "drop-caps", kind: stringFlag, env: []string{"DROP_CAPS"}, usage: "a comma separated capability list to drop", inert: true},
	{name: "allow-setuid", kind: boolFlag, env: []string{"ALLOW_SETUID"}, usage: "allow setuid binaries in container (root only)", inert: true},
	{name: "security", kind: sliceFlag, env: []string{"SECURITY"}, usage: "enable security features (SELinux, Apparmor, Seccomp)", inert: true},
	{name: "no-umask", kind: boolFlag, env: []string{"NO_UMASK"}, usage: "do not propagate umask to the container, set default 0022 umask", inert: true},
	{name: "dns", kind: stringFlag, env: []string{"DNS"}, usage: "list of DNS server separated by commas to add in resolv.conf", inert: true},
	{name: "disable-cache", kind: boolFlag, env: []string{"DISABLE_CACHE"}, usage: "do not use or create cached images/blobs", inert: true},
	{name: "no-https", kind: boolFlag, env: []string{"NOHTTPS", "NO_HTTPS"}, usage: "use http instead of https for docker:// oras:// and library://<hostname>/... URIs", inert: true},
	{name: "nohttps", kind: boolFlag, usage: "use http instead of https (deprecated)", inert: true},
	{name: "apply-cgroups", kind: stringFlag, env: []string{"APPLY_CGROUPS"}, usage: "apply cgroups from file for container processes (root only)", inert: true},
	{name: "cpus", kind: stringFlag, env: []string{"CPUS"}, usage: "number of CPUs available to container", inert: true},
	{name: "memory", kind: stringFlag, env: []string{"MEMORY"}, usage: "maximum memory available to container", inert: true},
	{name: "pids-limit", kind: stringFlag, env: []string{"PIDS_LIMIT"}, usage: "limit number of container PIDs, use -1 for unlimited", inert: true},
	// Parsed but not emulated: using one is a fatal error.
	{name: "writable", short: 'w', kind: boolFlag, env: []string{"WRITABLE"}, usage: "by default all containers are read-only; this makes the file system accessible as read-write"},
	{name: "overlay", short: 'o', kind: arrayFlag, env: []string{"OVERLAY", "OVERLAYIMAGE"}, usage: "use an overlayFS image for persistent data storage"},
	{name: "scratch", short: 'S', kind: arrayFlag, env: []string{"SCRATCH", "SCRATCHDIR"}, usage: "include a scratch directory within the container"},
	{name: "workdir", short: 'W', kind: stringFlag, env: []string{"WORKDIR"}, usage: "working directory to be used for /tmp, /var/tmp and $HOME"},
	{name: "env-file", kind: stringFlag, env: []string{"ENV_FILE"}, usage: "pass environment variables from file to contained process"},
	{name: "app", kind: stringFlag, env: []string{"APP", "APPNAME"}, usage: "set an application to run inside a container"},
	{name: "mount", kind: arrayFlag, env: []string{"MOUNT"}, usage: "a mount specification"},
	{name: "fusemount", kind: arrayFlag, env: []string{"FUSESPEC"}, usage: "a FUSE filesystem mount specification"},
	{name: "network-args", kind: arrayFlag, env: []string{"NETWORK_ARGS"}, usage: "specify network arguments to pass to CNI plugins"},
	{name: "compat", kind: boolFlag, env: []string{"COMPAT"}, usage: "apply settings for increased OCI/Docker compatibility"},
	{name: "nvccli", kind: boolFlag, env: []string{"NVCCLI"}, usage: "use nvidia-container-cli for GPU setup (experimental)"},
	{name: "boot", kind: boolFlag, usage: "execute /sbin/init to boot container (root only)"},
	{name: "unsquash", kind: boolFlag, env: []string{"UNSQUASH"}, usage: "Convert SIF file to temporary sandbox before running", only: "apptainer"},
	{name: "sif-fuse", kind: boolFlag, env: []string{"SIF_FUSE"}, usage: "attempt FUSE mount of SIF"},
	{name: "oci", kind: boolFlag, env: []string{"OCI"}, usage: "Launch container with OCI runtime", only: "singularity-ce"},
	{name: "tmp-sandbox", kind: boolFlag, env: []string{"TMP_SANDBOX"}, usage: "Convert SIF file to temporary sandbox before running", only: "singularity-ce"},
	{name: "keep-layers", kind: boolFlag, env: []string{"KEEP_LAYERS"}, usage: "Keep layers when creating an OCI-SIF", only: "singularity-ce"},
}

// mountSpec is one mount the init stage performs, in order.
type mountSpec struct {
	Kind string `json:"kind"` // "bind", "tmpfs", "mindev"
	Src  string `json:"src,omitempty"`
	Dst  string `json:"dst"`
	RO   bool   `json:"ro,omitempty"`
	// User is set for --bind/--home mounts: their failures are fatal
	// with the real tool's "mount hook function failure" text. Other
	// (system) mounts are skipped when their source is missing.
	User bool `json:"user,omitempty"`
}

// initConfig is what the init stage needs; it travels as JSON in a memfd.
type initConfig struct {
	Flavor    string      `json:"flavor"`
	Lower     string      `json:"lower"`
	MntDir    string      `json:"mnt_dir"`
	Writable  bool        `json:"writable"`
	Mounts    []mountSpec `json:"mounts"`
	Proc      bool        `json:"proc"`
	PIDNS     bool        `json:"pidns"`
	Shim      bool        `json:"shim"`
	LoUp      bool        `json:"lo_up"`
	Hostname  string      `json:"hostname,omitempty"`
	Pwd       string      `json:"pwd,omitempty"`  // explicit --pwd
	Cwds      []string    `json:"cwds,omitempty"` // candidates when no --pwd
	Argv      []string    `json:"argv"`
	Env       []string    `json:"env"`
	Runscript bool        `json:"runscript,omitempty"`
}

func cmdExec(fl *flavor, cmd string, args []string) int {
	fs := newFlagSet(cmd, fl, actionFlags)
	rest, err := fs.parse(args)
	if err == errHelp {
		printCmdHelp(fl, cmd, fs)
		return 0
	}
	if err != nil {
		return usageError(fl, cmd, fs, err, true)
	}
	minArgs := 2
	if cmd == "run" {
		minArgs = 1
	}
	if len(rest) < minArgs {
		return usageError(fl, cmd, fs, fmt.Errorf("requires at least %d arg(s), only received %d", minArgs, len(rest)), false)
	}
	if err := fs.applyEnv(fl); err != nil {
		fatalf("%s", err)
	}
	if err := fs.emulationCheck(); err != nil {
		fatalf("%s", err)
	}
	if fs.bool("containall") {
		fs.setBool("contain", true)
		fs.setBool("cleanenv", true)
		fs.setBool("pid", true)
		fs.setBool("ipc", true)
	}
	netNone := false
	if fs.bool("net") {
		switch nw := fs.str("network"); nw {
		case "none":
			netNone = true
		default:
			if nw == "" {
				nw = "bridge"
			}
			fatalf("apptainertest double: --net with --network %s is not emulated (only --network none is)", nw)
		}
	} else if fs.isSet("network") {
		warnf("network requires --net, ignoring --network %s", fs.str("network"))
	}

	ref := rest[0]
	img, err := openImage(fl, ref)
	if err != nil {
		fatalf("could not open image %s: %s", ref, err)
	}

	u, err := user.Current()
	if err != nil {
		fatalf("could not retrieve user information: %s", err)
	}
	homeSrc, homeDst, customHome := u.HomeDir, u.HomeDir, false
	if h := fs.str("home"); h != "" {
		src, dst, hasDst := strings.Cut(h, ":")
		homeSrc, homeDst, customHome = src, src, true
		if hasDst {
			homeDst = dst
		}
		if !filepath.IsAbs(homeDst) {
			fatalf("home destination path %q must be an absolute path", homeDst)
		}
		if abs, err := filepath.Abs(homeSrc); err == nil {
			homeSrc = abs
		}
	}

	var binds []bindPath
	for _, b := range fs.list("bind") {
		bs, err := parseBindPath(b)
		if err != nil {
			fatalf("while parsing bind path: %s", err)
		}
		binds = append(binds, bs...)
	}

	noMount := map[string]bool{}
	for _, m := range fs.list("no-mount") {
		noMount[strings.TrimSpace(m)] = true
	}
	contain := fs.bool("contain")

	var mounts []mountSpec
	if !noMount["sys"] {
		mounts = append(mounts, mountSpec{Kind: "bind", Src: "/sys", Dst: "/sys"})
	}
	if !noMount["dev"] {
		if contain {
			mounts = append(mounts, mountSpec{Kind: "mindev", Dst: "/dev"})
		} else {
			mounts = append(mounts, mountSpec{Kind: "bind", Src: "/dev", Dst: "/dev"})
		}
	}
	if !noMount["bind-paths"] {
		for _, p := range []string{"/etc/localtime", "/etc/hosts"} {
			if !noMount[p] {
				mounts = append(mounts, mountSpec{Kind: "bind", Src: p, Dst: p})
			}
		}
	}
	if !noMount["/etc/resolv.conf"] {
		mounts = append(mounts, mountSpec{Kind: "bind", Src: "/etc/resolv.conf", Dst: "/etc/resolv.conf"})
	}
	mountedHome := false
	switch {
	case fs.bool("no-home") && !customHome, noMount["home"] && !customHome:
	case contain && !customHome:
		mounts = append(mounts, mountSpec{Kind: "tmpfs", Dst: homeDst})
		mountedHome = true
	default:
		mounts = append(mounts, mountSpec{Kind: "bind", Src: homeSrc, Dst: homeDst, User: customHome})
		mountedHome = true
	}
	if !noMount["tmp"] {
		for _, d := range []string{"/tmp", "/var/tmp"} {
			if contain {
				mounts = append(mounts, mountSpec{Kind: "tmpfs", Dst: d})
			} else {
				mounts = append(mounts, mountSpec{Kind: "bind", Src: d, Dst: d})
			}
		}
	}
	if customHome {
		if _, err := os.Stat(homeSrc); err != nil {
			fatalf("container creation failed: mount hook function failure: mount %s->%s error: while mounting %s: mount source %s doesn't exist", homeSrc, homeDst, homeSrc, homeSrc)
		}
	}
	for _, b := range binds {
		src, dst := b.src, b.dst
		if abs, err := filepath.Abs(src); err == nil {
			src = abs
		}
		if !filepath.IsAbs(dst) {
			fatalf("container creation failed: mount hook function failure: mount %s->%s error: while mounting %s: destination %s must be an absolute path", src, dst, src, dst)
		}
		if _, err := os.Stat(src); err != nil {
			fatalf("container creation failed: mount hook function failure: mount %s->%s error: while mounting %s: mount source %s doesn't exist", src, dst, src, src)
		}
		mounts = append(mounts, mountSpec{Kind: "bind", Src: src, Dst: filepath.Clean(dst), RO: b.ro, User: true})
	}

	hostCwd, _ := os.Getwd()
	if !contain && !noMount["cwd"] && hostCwd != "" && shouldMountCwd(hostCwd, mounts) {
		mounts = append(mounts, mountSpec{Kind: "bind", Src: hostCwd, Dst: hostCwd})
	}

	if fs.bool("nv") {
		if !hostHasLib("libnvidia-ml.so", "libcuda.so") {
			if fl.name == "apptainer" {
				warnf("Could not find any nv libraries on this host!")
			} else {
				warnf("Could not find any Nvidia libraries on this host!")
			}
		} else {
			warnf("apptainertest double: --nv does not bind the host's NVIDIA libraries into the container")
		}
	}
	if fs.bool("rocm") {
		if !hostHasLib("libamdhip64.so", "libhsa-runtime64.so") {
			warnf("Could not find any rocm libraries on this host!")
		} else {
			warnf("apptainertest double: --rocm does not bind the host's ROCm libraries into the container")
		}
	}

	envMap, envKeys := fs.envPairs()
	env, err := containerEnv(fl, os.Environ(), envOptions{
		cleanenv: fs.bool("cleanenv"),
		noEval:   fs.bool("no-eval"),
		flagEnv:  envMap,
		flagKeys: envKeys,
		homeDest: homeDst,
		image:    img.path,
		command:  cmd,
	})
	if err != nil {
		fatalf("%s", err)
	}

	cfg := initConfig{
		Flavor:   fl.name,
		MntDir:   "",
		Writable: fs.bool("writable-tmpfs"),
		Mounts:   mounts,
		Proc:     !noMount["proc"],
		PIDNS:    fs.bool("pid"),
		LoUp:     netNone,
		Hostname: fs.str("hostname"),
		Env:      env,
	}
	cfg.Shim = cfg.PIDNS && !fs.bool("no-init")
	if fs.isSet("pwd") {
		cfg.Pwd = fs.str("pwd")
	} else {
		if !contain && hostCwd != "" {
			cfg.Cwds = append(cfg.Cwds, hostCwd)
		}
		if mountedHome || customHome {
			cfg.Cwds = append(cfg.Cwds, homeDst)
		}
		cfg.Cwds = append(cfg.Cwds, "/")
	}
	if cmd == "run" {
		cfg.Runscript = true
		cfg.Argv = append([]string{"/.singularity.d/runscript"}, rest[1:]...)
	} else {
		cfg.Argv = rest[1:]
	}

	cacheRoot, err := cacheDir()
	if err != nil {
		fatalf("apptainertest double: cache: %s", err)
	}
	cfg.MntDir = filepath.Join(cacheRoot, ".mnt")
	if err := os.MkdirAll(cfg.MntDir, 0o755); err != nil {
		fatalf("apptainertest double: cache: %s", err)
	}
	lower, err := img.rootfs(cacheRoot)
	if err != nil {
		fatalf("container creation failed: mount hook function failure: mount /proc/self/fd/3->/usr/local/var/apptainer/mnt/session/rootfs error: while mounting image /proc/self/fd/3: failed to mount squashfs filesystem: %s", err)
	}
	cfg.Lower = lower

	var cloneFlags uintptr = unix.CLONE_NEWNS
	if fs.bool("ipc") {
		cloneFlags |= unix.CLONE_NEWIPC
	}
	if fs.bool("uts") || cfg.Hostname != "" {
		cloneFlags |= unix.CLONE_NEWUTS
	}
	if netNone {
		cloneFlags |= unix.CLONE_NEWNET
	}
	execInit(cfg, cloneFlags)
	return 255 // not reached
}

// execInit unshares namespaces on this thread and re-executes the double
// as the init stage, keeping the PID.
func execInit(cfg initConfig, cloneFlags uintptr) {
	b, err := json.Marshal(cfg)
	if err != nil {
		fatalf("apptainertest double: %s", err)
	}
	fd, err := unix.MemfdCreate("apptainertest-config", 0)
	if err != nil {
		fatalf("apptainertest double: memfd: %s", err)
	}
	f := os.NewFile(uintptr(fd), "config")
	if _, err := f.Write(b); err != nil {
		fatalf("apptainertest double: write config: %s", err)
	}
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	runtime.LockOSThread()
	if err := unix.Unshare(int(cloneFlags)); err != nil {
		fatalf("container creation failed: while unsharing namespaces: %s", err)
	}
	argv := []string{os.Args[0], initStage, strconv.Itoa(fd)}
	err = syscall.Exec(self, argv, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
	fatalf("apptainertest double: exec init stage: %s", err)
}

// shouldMountCwd applies Apptainer's addCwdMount rules: no operating
// system directories, nothing under /proc, /sys, /dev, and nothing
// already visible through another mount.
func shouldMountCwd(cwd string, mounts []mountSpec) bool {
	if resolved, err := filepath.EvalSymlinks(cwd); err == nil {
		cwd = resolved
	}
	switch cwd {
	case "/", "/etc", "/bin", "/mnt", "/usr", "/var", "/opt", "/sbin", "/lib", "/lib64":
		return false
	}
	for _, p := range []string{"/sys", "/proc", "/dev"} {
		if within(cwd, p) {
			return false
		}
	}
	for _, m := range mounts {
		if within(cwd, m.Dst) {
			return false
		}
	}
	return true
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	dir = filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// hostHasLib reports whether the dynamic linker cache names one of libs.
func hostHasLib(libs ...string) bool {
	b, err := os.ReadFile("/etc/ld.so.cache")
	if err != nil {
		return false
	}
	for _, l := range libs {
		if strings.Contains(string(b), l) {
			return true
		}
	}
	return false
}

// bindPath is one parsed --bind entry.
type bindPath struct {
	src, dst string
	ro       bool
}

var (
	bindElemRE  = regexp.MustCompile(`([^,^:]+:?)`)
	bindOptions = map[string]bool{"ro": true, "rw": true, "image-src": false, "id": false}
)

// parseBindPath parses "src[:dst[:opts]][,src2…]" with the same grammar as
// Apptainer's bind.ParseBindPath: elements are split on ',' and ':';
// after a source and a destination, elements that are bind options (ro,
// rw, image-src=, id=) belong to the current bind.
func parseBindPath(spec string) ([]bindPath, error) {
	var out []bindPath
	var cur string
	elem := 0
	flush := func() error {
		b, err := newBindPath(cur)
		if err != nil {
			return fmt.Errorf("while getting bind path: %s", err)
		}
		out = append(out, b)
		return nil
	}
	for _, m := range bindElemRE.FindAllString(spec, -1) {
		s := strings.TrimSpace(m)
		afterColon := cur != "" && strings.HasSuffix(cur, ":")
		if elem == 2 {
			if isBindOption(s) {
				if !afterColon {
					cur += ","
				}
				cur += s
				continue
			}
		} else if elem > 2 {
			return nil, fmt.Errorf("wrong bind syntax: %s", cur)
		}
		elem++
		if cur != "" {
			if afterColon {
				cur += s
				continue
			}
			if err := flush(); err != nil {
				return nil, err
			}
			elem = 1
		}
		cur = s
	}
	if cur != "" {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func isBindOption(s string) bool {
	for opt, isFlag := range bindOptions {
		if isFlag && s == opt || !isFlag && strings.HasPrefix(s, opt+"=") {
			return true
		}
	}
	return false
}

func newBindPath(spec string) (bindPath, error) {
	parts := strings.SplitN(spec, ":", 3)
	b := bindPath{src: parts[0], dst: parts[0]}
	if b.src == "" {
		return b, fmt.Errorf("empty bind source for bind path %q", spec)
	}
	if len(parts) > 1 {
		b.dst = parts[1]
	}
	if len(parts) > 2 {
		for _, opt := range strings.Split(parts[2], ",") {
			if !isBindOption(opt) {
				return b, fmt.Errorf("%s is not a valid bind option", opt)
			}
			switch {
			case opt == "ro":
				b.ro = true
			case opt == "rw":
			default:
				return b, fmt.Errorf("apptainertest double: bind option %s is not emulated", opt)
			}
		}
	}
	return b, nil
}
