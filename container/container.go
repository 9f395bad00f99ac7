// Package container runs module programs inside container images: the
// shared vocabulary of the engines (Apptainer/Singularity in package
// singularity, podman and docker here), the per-task runtime, and the slot
// runtime whose container is started once per slot and runs every task of
// that slot through a small agent inside it.
package container

// Bind makes a host path visible inside the container.
type Bind struct {
	Source   string `json:"source"`              // host path
	Target   string `json:"target"`              // path inside the container
	ReadOnly bool   `json:"read_only,omitempty"` // mounted read-only
	Why      string `json:"why,omitempty"`       // what asked for it ("work dir", "module volumes[2]", …), for explain-binds
}

// GPU vendors a container may need devices of.
const (
	GPUNone   = ""
	GPUNvidia = "nvidia" // apptainer --nv, podman/docker --device nvidia.com/gpu=all or --gpus
	GPUAMD    = "amd"    // apptainer --rocm, podman/docker --device /dev/kfd --device /dev/dri
)

// Spec is one foreground container run: the engine starts it, it runs
// Argv, and it is removed when Argv exits.
type Spec struct {
	Name    string   // container name where the engine has names (podman/docker); "" = engine default
	Image   string   // a .sif file, a sandbox directory, or a docker://, oras://, library:// or OCI reference, already resolved/staged
	Binds   []Bind   // already de-duplicated and checked
	Env     []string // "K=V", each passed as its own --env argument, never through a shell
	Dir     string   // working directory inside the container
	Argv    []string // program and arguments inside the container
	GPU     string   // GPUNone, GPUNvidia, GPUAMD
	Network bool     // false: no network (podman/docker --network=none; apptainer keeps the host's, it has no netns by default)
	Stdin   bool     // keep the container's stdin open: podman/docker -i; Apptainer always passes stdin

	CleanEnv      bool     // apptainer --cleanenv (podman/docker never inherit the host env)
	ContainAll    bool     // apptainer --containall
	WritableTmpfs bool     // apptainer --writable-tmpfs
	Flags         []string // extra engine flags, verbatim, before the image (e.g. --userns, --no-privs)
}

// Engine turns a Spec into the argv of a foreground run of a container
// engine ("apptainer exec …", "podman run --rm …").
type Engine interface {
	// Name is the engine's name: "apptainer", "singularity", "podman", "docker".
	Name() string
	// Command returns the argv (argv[0] is the engine binary) that runs s
	// in the foreground, and env, variables to add to the engine process's
	// own environment (Apptainer takes the container's variables as
	// APPTAINERENV_K=V there; podman/docker return nil). It fails with a
	// clear message for a Spec the engine (or its version) cannot express.
	Command(s *Spec) (argv, env []string, err error)
}
