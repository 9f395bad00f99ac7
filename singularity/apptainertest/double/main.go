// Command double is a test double of the apptainer (and SingularityCE
// singularity) executable, for tests on machines without Apptainer. It
// checks its command line as the real tool does (same flag parser rules,
// same error texts and exit codes for the cases the tests exercise) and
// really runs the command inside the image's root file system.
//
// It is test-only: package apptainertest builds it and puts it on PATH.
//
// # Flavour
//
// Invoked as "apptainer" it is Apptainer 1.3.4. Invoked as "singularity"
// it is SingularityCE 4.1.0, unless the "singularity" it was invoked as is
// a symbolic link to a file named "apptainer" — that is how the Apptainer
// package installs its singularity compatibility name, so then it is
// Apptainer too.
//
// # Commands
//
//	--version, version          the version line / number
//	exec [flags] IMAGE CMD...   run CMD in the image
//	run [flags] IMAGE ARGS...   run /.singularity.d/runscript with ARGS
//	pull [--force] [DEST] REF   copy REF from $APPTAINERTEST_REGISTRY
//	inspect [-l|-d|-j] IMAGE    labels / definition file of a SIF
//
// # How exec runs
//
// IMAGE is a SIF file (its primary system partition, which must be
// squashfs for runtime.GOARCH), a bare squashfs file, a sandbox directory,
// or a docker://, oras://, library:// reference found in the registry
// directory. A squashfs root file system is extracted once with
// "unsquashfs -o OFFSET" into $APPTAINERTEST_CACHE (default
// $TMPDIR/apptainertest-cache), keyed by the image's ID, size, mtime and
// partition offset, under an flock so that concurrent first runs share one
// extraction; every extraction appends a line to extract.log there.
//
// The double then unshares a mount namespace (plus IPC with --containall
// or --ipc, UTS with --uts/--hostname, network with --net --network none)
// and re-executes itself as the "init" stage, keeping its PID, so that
// signals sent to it reach the stage that forwards them. The init stage
// makes / private recursively, mounts a tmpfs with an overlay whose lower
// layer is the extracted root file system (read-only unless
// --writable-tmpfs, as a squashfs image is; writes to a writable tmpfs are
// discarded at exit, and bind targets missing from the image are created
// in the overlay's upper layer, as Apptainer's underlay/overlay does),
// mounts /sys, /dev (a minimal /dev with --contain), $HOME, /tmp, /var/tmp
// (tmpfs with --contain), /etc/hosts, /etc/localtime, /etc/resolv.conf,
// the user binds and the current directory, mounts a fresh /proc, chroots,
// changes to the working directory and runs the command as its child,
// forwarding SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
// SIGWINCH, and exits with the command's status (128+N if signal N killed
// it). With --pid or --containall the command runs under a small init
// shim that is PID 1 of a new PID namespace and reaps orphans, as
// Apptainer's shim does; without, there is no PID namespace, as in
// Apptainer. stdin, stdout and stderr are passed through unchanged.
//
// # Environment
//
// As Apptainer's SetContainerEnv: host variables are passed except HOME,
// PATH, LD_LIBRARY_PATH, PS1, APPTAINER_* and SINGULARITY_* (and the
// double's own APPTAINERTEST_*); with --cleanenv only TERM and the proxy
// variables are, and LANG=C. APPTAINERENV_K=V (SingularityCE:
// SINGULARITYENV_; Apptainer also takes SINGULARITYENV_ with a
// deprecation warning) sets K=V and overrides the host's K; --env K=V
// (parsed as pflag's stringToString, like the real --env) overrides both.
// HOME and PATH cannot be set that way except through *ENV_PATH,
// *ENV_PREPEND_PATH and *ENV_APPEND_PATH. PATH defaults to
// /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin.
// LD_LIBRARY_PATH gets /.singularity.d/libs appended. HOME is the
// invoking user's home directory from the passwd database.
//
// Values are passed verbatim: the double does no shell evaluation. The
// real tool without --no-eval evaluates '$', '`' and '\' in values, so
// without --no-eval a value holding one of them is a fatal error here
// instead of silently differing. The image's /.singularity.d/env scripts
// are not sourced (images built with %environment or from docker ENV get
// their variables from there in the real tool).
//
// # Test configuration
//
//	APPTAINERTEST_CACHE     extraction cache directory
//	APPTAINERTEST_REGISTRY  directory of <ref with "://", "/", ":" → "_">.sif
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const (
	initStage = "__apptainertest_init"
	shimStage = "__apptainertest_shim"
)

// flavor is the tool being imitated.
type flavor struct {
	name    string // "apptainer" or "singularity-ce"
	prog    string // command name in messages: "apptainer" or "singularity"
	version string
	// configPrefixes are the prefixes of variables that configure the
	// tool (APPTAINER_BIND…), highest precedence first; such variables
	// are never passed into the container.
	configPrefixes []string
	envPrefix      string // APPTAINERENV_ or SINGULARITYENV_
	legacyPrefix   string // SINGULARITYENV_ for Apptainer; "" for SingularityCE
	varPrefix      string // prefix of the variables set inside: APPTAINER_ or SINGULARITY_
}

var (
	apptainerFlavor = &flavor{
		name:           "apptainer",
		prog:           "apptainer",
		version:        "1.3.4",
		configPrefixes: []string{"APPTAINER_", "SINGULARITY_"},
		envPrefix:      "APPTAINERENV_",
		legacyPrefix:   "SINGULARITYENV_",
		varPrefix:      "APPTAINER_",
	}
	ceFlavor = &flavor{
		name:           "singularity-ce",
		prog:           "singularity",
		version:        "4.1.0",
		configPrefixes: []string{"SINGULARITY_"},
		envPrefix:      "SINGULARITYENV_",
		varPrefix:      "SINGULARITY_",
	}
)

func detectFlavor(argv0 string) *flavor {
	if filepath.Base(argv0) != "singularity" {
		return apptainerFlavor
	}
	p := argv0
	if !strings.Contains(p, "/") {
		if lp, err := exec.LookPath(p); err == nil {
			p = lp
		}
	}
	if target, err := os.Readlink(p); err == nil && filepath.Base(target) == "apptainer" {
		return apptainerFlavor
	}
	return ceFlavor
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case initStage:
			runInit(os.Args[2:])
			return
		case shimStage:
			runShim(os.Args[2:])
			return
		}
	}
	os.Exit(run(detectFlavor(os.Args[0]), os.Args[1:]))
}

// sylog's level prefixes, padded to 9 columns as the real tool does.
func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FATAL:   "+format+"\n", args...)
	os.Exit(255)
}

func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "WARNING: "+format+"\n", args...)
}

func infof(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "INFO:    "+format+"\n", args...)
}

var rootFlags = []flagDef{
	{name: "debug", short: 'd', kind: boolFlag, usage: "print debugging information (highest verbosity)", inert: true},
	{name: "quiet", short: 'q', kind: boolFlag, usage: "suppress normal output", inert: true},
	{name: "silent", short: 's', kind: boolFlag, usage: "only print errors", inert: true},
	{name: "verbose", short: 'v', kind: boolFlag, usage: "print additional information", inert: true},
	{name: "nocolor", kind: boolFlag, usage: "print without color output", inert: true},
	{name: "config", short: 'c', kind: stringFlag, usage: "specify a configuration file (for root or unprivileged installation only)", inert: true},
	{name: "version", kind: boolFlag, usage: "version for the tool", emulated: true},
}

// run dispatches a command line and returns the exit code (commands that
// run a container do not return).
func run(fl *flavor, args []string) int {
	root := newFlagSet(fl.prog, fl, rootFlags)
	rest, err := root.parse(args)
	if err == errHelp {
		printRootHelp(fl)
		return 0
	}
	if err != nil {
		return usageError(fl, fl.prog, root, err, true)
	}
	if root.bool("version") {
		fmt.Printf("%s version %s\n", fl.name, fl.version)
		return 0
	}
	if len(rest) == 0 {
		printRootHelp(fl)
		return 1
	}
	switch cmd, cmdArgs := rest[0], rest[1:]; cmd {
	case "version":
		fmt.Println(fl.version)
		return 0
	case "exec":
		return cmdExec(fl, "exec", cmdArgs)
	case "run":
		return cmdExec(fl, "run", cmdArgs)
	case "pull":
		return cmdPull(fl, cmdArgs)
	case "inspect":
		return cmdInspect(fl, cmdArgs)
	case "help":
		printRootHelp(fl)
		return 0
	case "instance", "shell", "build", "test", "oci", "overlay", "sif", "cache", "remote", "key", "sign", "verify", "push", "search", "plugin", "config", "checkpoint", "delete", "capability", "registry", "completion":
		fatalf("apptainertest double: the %q command is not emulated", cmd)
		return 255
	default:
		fmt.Fprintf(os.Stderr, "Error: unknown command %q for %q\n\n", cmd, fl.prog)
		fmt.Fprintf(os.Stderr, "Run '%s --help' for more detailed usage information.\n", fl.prog)
		return 1
	}
}

func printRootHelp(fl *flavor) {
	fmt.Printf("Usage:\n  %s [global options...] <command>\n\nAvailable Commands:\n  exec        Run a command within a container\n  inspect     Show metadata for an image\n  pull        Pull an image from a URI\n  run         Run the user-defined default command within a container\n  version     Show the version for %s\n\nRun '%s --help' for more detailed usage information.\n", fl.prog, fl.prog, fl.prog)
}

// usageError prints an error as Apptainer's ExecuteApptainer does and
// returns its exit code, 1.
func usageError(fl *flavor, cmd string, fs *flagSet, err error, flagErr bool) int {
	if flagErr {
		fmt.Fprintf(os.Stderr, "Error for command %q: %s\n\n", cmd, err)
		fmt.Fprintf(os.Stderr, "Options for %s command:\n\n%s\n", cmd, fs.usage())
	} else {
		fmt.Fprintf(os.Stderr, "Error for command %q: %s\n\n", cmd, err)
		fmt.Fprintf(os.Stderr, "Usage:\n  %s %s [%s options...] %s\n\n", fl.prog, cmd, cmd, cmdUse[cmd])
	}
	fmt.Fprintf(os.Stderr, "Run '%s --help' for more detailed usage information.\n", fl.prog)
	return 1
}

var cmdUse = map[string]string{
	"exec":    "<container> <command>",
	"run":     "<container> [args...]",
	"pull":    "[output file] <URI>",
	"inspect": "<image path>",
}

func printCmdHelp(fl *flavor, cmd string, fs *flagSet) {
	fmt.Printf("Usage:\n  %s %s [%s options...] %s\n\nOptions:\n%s", fl.prog, cmd, cmd, cmdUse[cmd], fs.usage())
}
