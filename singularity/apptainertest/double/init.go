package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// forwarded are the signals the init stage and the shim pass on to the
// command.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

func readConfig(fdArg string) (initConfig, *os.File) {
	var cfg initConfig
	fd, err := strconv.Atoi(fdArg)
	if err != nil {
		fatalf("apptainertest double: bad config descriptor %q", fdArg)
	}
	f := os.NewFile(uintptr(fd), "config")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		fatalf("apptainertest double: config: %s", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		fatalf("apptainertest double: config: %s", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		fatalf("apptainertest double: config: %s", err)
	}
	unix.CloseOnExec(fd)
	return cfg, f
}

// runInit is the init stage: in the new mount namespace, with the PID of
// the original invocation.
func runInit(args []string) {
	runtime.LockOSThread() // Pdeathsig of our children follows this thread
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	if len(args) != 1 {
		fatalf("apptainertest double: init stage needs the config descriptor")
	}
	cfg, cfgFile := readConfig(args[0])
	root := setupMounts(&cfg)

	if cfg.PIDNS {
		// The command (or the shim) is the first process of a new PID
		// namespace; it mounts /proc, chroots and runs the command.
		stage := shimStage
		self, err := os.Executable()
		if err != nil {
			self = "/proc/self/exe"
		}
		cmd := exec.Command(self, stage, "3")
		cmd.Args[0] = os.Args[0]
		cmd.Env = []string{}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.ExtraFiles = []*os.File{cfgFile}
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Pdeathsig: unix.SIGKILL}
		if err := cmd.Start(); err != nil {
			fatalf("container creation failed: while starting container process: %s", err)
		}
		_ = cfgFile.Close()
		done := make(chan struct{})
		go func() {
			for {
				select {
				case s := <-sigs:
					_ = cmd.Process.Signal(s)
				case <-done:
					return
				}
			}
		}()
		err = cmd.Wait()
		close(done)
		os.Exit(exitCode(cmd.ProcessState, err))
	}

	_ = cfgFile.Close()
	if cfg.Proc {
		mountProc(root)
	}
	enterRoot(&cfg, root)
	runCommand(&cfg, sigs, false)
}

// runShim is PID 1 of the container's PID namespace (--pid, --containall).
func runShim(args []string) {
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	cfg, f := readConfig(args[0])
	_ = f.Close()
	root := filepath.Join(cfg.MntDir, "root")
	if cfg.Proc {
		mountProc(root)
	}
	enterRoot(&cfg, root)
	if !cfg.Shim {
		// --no-init: the command itself is PID 1.
		signal.Reset()
		bin := lookCommand(&cfg)
		err := syscall.Exec(bin, cfg.Argv, cfg.Env)
		fatalf("%q: %s", cfg.Argv[0], err)
	}
	runCommand(&cfg, sigs, true)
}

func exitCode(ps *os.ProcessState, err error) int {
	if ps == nil {
		fatalf("apptainertest double: waiting for container process: %v", err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// mountFailure reports a failed mount of a user bind as the real tool.
func mountFailure(m mountSpec, err error) {
	fatalf("container creation failed: mount hook function failure: mount %s->%s error: while mounting %s: %s", m.Src, m.Dst, m.Src, err)
}

// setupMounts builds the container's root file system under
// cfg.MntDir/root and returns that directory.
func setupMounts(cfg *initConfig) string {
	must := func(what string, err error) {
		if err != nil {
			fatalf("container creation failed: %s: %s", what, err)
		}
	}
	must("make / private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
	must("mount session tmpfs", unix.Mount("tmpfs", cfg.MntDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"))
	upper := filepath.Join(cfg.MntDir, "upper")
	work := filepath.Join(cfg.MntDir, "work")
	root := filepath.Join(cfg.MntDir, "root")
	for _, d := range []string{upper, work, root} {
		must("session directory", os.Mkdir(d, 0o755))
	}
	// The upper layer's root takes the lower root's mode.
	if st, err := os.Stat(cfg.Lower); err == nil {
		_ = os.Chmod(upper, st.Mode().Perm())
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", overlayEscape(cfg.Lower), overlayEscape(upper), overlayEscape(work))
	must("mount overlay on "+cfg.Lower, unix.Mount("overlay", root, "overlay", unix.MS_NODEV, opts))

	if cfg.Hostname != "" {
		must("set hostname", unix.Sethostname([]byte(cfg.Hostname)))
	}
	if cfg.LoUp {
		must("bring up loopback", loopbackUp())
	}

	for _, m := range cfg.Mounts {
		target := mountOne(root, m)
		// A recursive bind of a directory holding the session mounts
		// (the cache is under /tmp by default) copies them into the
		// container: detach the copy.
		if target != "" && m.Kind == "bind" && within(cfg.MntDir, m.Src) {
			if rel, err := filepath.Rel(m.Src, cfg.MntDir); err == nil {
				_ = unix.Unmount(filepath.Join(target, rel), unix.MNT_DETACH)
			}
		}
	}
	if cfg.Proc {
		if _, err := ensureTarget(root, "/proc", true); err != nil {
			fatalf("container creation failed: mount /proc: %s", err)
		}
	}
	if !cfg.Writable {
		must("remount root file system read-only", unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NODEV, ""))
	}
	return root
}

func overlayEscape(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}

// mountOne performs m and returns the host path of its target ("" when a
// system bind was skipped).
func mountOne(root string, m mountSpec) string {
	switch m.Kind {
	case "tmpfs":
		target, err := ensureTarget(root, m.Dst, true)
		if err != nil {
			fatalf("container creation failed: mount tmpfs->%s error: %s", m.Dst, err)
		}
		mode := "mode=0755" // a contained $HOME
		if m.Dst == "/tmp" || m.Dst == "/var/tmp" {
			mode = "mode=1777"
		}
		if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, mode); err != nil {
			fatalf("container creation failed: mount tmpfs->%s error: %s", m.Dst, err)
		}
		return target
	case "mindev":
		mountMinimalDev(root)
		return ""
	case "bind":
		st, err := os.Stat(m.Src)
		if err != nil {
			if m.User {
				mountFailure(m, fmt.Errorf("mount source %s doesn't exist", m.Src))
			}
			return "" // a system bind whose host source is missing is skipped
		}
		target, err := ensureTarget(root, m.Dst, st.IsDir())
		if err != nil {
			if m.User {
				mountFailure(m, err)
			}
			warnf("skipping mount of %s: %s", m.Src, err)
			return ""
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV)
		if m.Src == "/dev" {
			flags &^= unix.MS_NODEV
		}
		if err := unix.Mount(m.Src, target, "", flags, ""); err != nil {
			mountFailure(m, err)
		}
		// A bind mount ignores flags other than MS_REC: nosuid, nodev and
		// ro take a remount, as the real tool does.
		remount := flags&^unix.MS_REC | unix.MS_REMOUNT
		if m.RO {
			remount |= unix.MS_RDONLY
		}
		if err := unix.Mount("", target, "", remount, ""); err != nil {
			mountFailure(m, fmt.Errorf("while remounting: %s", err))
		}
		return target
	}
	fatalf("apptainertest double: unknown mount kind %q", m.Kind)
	return ""
}

// mountMinimalDev makes the --contain /dev: a tmpfs with the usual device
// nodes bound from the host, a private devpts and a /dev/shm tmpfs.
func mountMinimalDev(root string) {
	dev, err := ensureTarget(root, "/dev", true)
	if err == nil {
		err = unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID, "mode=0755")
	}
	if err != nil {
		fatalf("container creation failed: mount /dev: %s", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		t := filepath.Join(dev, n)
		if f, err := os.Create(t); err == nil {
			_ = f.Close()
			if err := unix.Mount("/dev/"+n, t, "", unix.MS_BIND, ""); err != nil {
				_ = os.Remove(t)
			}
		}
	}
	for _, d := range []string{"pts", "shm"} {
		_ = os.Mkdir(filepath.Join(dev, d), 0o755)
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err == nil {
		_ = os.Symlink("pts/ptmx", filepath.Join(dev, "ptmx"))
	}
	_ = unix.Mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		_ = os.Symlink(target, filepath.Join(dev, name))
	}
}

func mountProc(root string) {
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fatalf("container creation failed: mount proc->/proc error: %s", err)
	}
}

// ensureTarget resolves the container path p under root, following
// symbolic links as they would be followed inside the container, and
// creates what is missing (a directory, or an empty file when dir is
// false, plus parent directories) in the overlay's upper layer. It returns
// the host path of the target.
func ensureTarget(root, p string, dir bool) (string, error) {
	resolved, err := resolveIn(root, p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(resolved)
	switch {
	case err == nil:
		if dir && !st.IsDir() {
			return "", fmt.Errorf("destination %s is not a directory", p)
		}
		if !dir && st.IsDir() {
			return "", fmt.Errorf("destination %s is a directory but the source is not", p)
		}
		return resolved, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	if dir {
		return resolved, os.MkdirAll(resolved, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(resolved), 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(resolved, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	return resolved, f.Close()
}

// resolveIn resolves p inside root as chroot(root) would, without letting
// a symbolic link escape root. Missing components are kept as they are.
func resolveIn(root, p string) (string, error) {
	parts := strings.Split(filepath.Clean("/"+p), "/")
	cur := root
	links := 0
	for i := 0; i < len(parts); i++ {
		c := parts[i]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			if cur != root {
				cur = filepath.Dir(cur)
			}
			continue
		}
		next := filepath.Join(cur, c)
		st, err := os.Lstat(next)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("too many levels of symbolic links in %s", p)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = root
		}
		rest := append(strings.Split(target, "/"), parts[i+1:]...)
		parts = append(parts[:i+1:i+1], rest...)
	}
	return cur, nil
}

// loopbackUp brings up lo in a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// enterRoot chroots into root and changes to the working directory.
func enterRoot(cfg *initConfig, root string) {
	if err := unix.Chroot(root); err != nil {
		fatalf("container creation failed: chroot %s: %s", root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		fatalf("container creation failed: chdir /: %s", err)
	}
	if cfg.Pwd != "" {
		if err := unix.Chdir(cfg.Pwd); err != nil {
			fatalf("can't enter in current working directory: chdir %s: %s", cfg.Pwd, err)
		}
		return
	}
	for _, d := range cfg.Cwds {
		if unix.Chdir(d) == nil {
			return
		}
	}
}

// runCommand starts the command, forwards signals to it, reaps children
// (all of them when reapAll, as PID 1 must) and exits with its status.
func runCommand(cfg *initConfig, sigs chan os.Signal, reapAll bool) {
	bin := lookCommand(cfg)
	proc, err := os.StartProcess(bin, cfg.Argv, &os.ProcAttr{
		Env:   cfg.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL},
	})
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		fatalf("%q: %s", cfg.Argv[0], err)
	}
	pid := proc.Pid
	status := make(chan unix.WaitStatus, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			wpid := pid
			if reapAll {
				wpid = -1
			}
			got, err := unix.Wait4(wpid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				fatalf("apptainertest double: wait: %s", err)
			}
			if got == pid && (ws.Exited() || ws.Signaled()) {
				status <- ws
				return
			}
		}
	}()
	for {
		select {
		case s := <-sigs:
			_ = unix.Kill(pid, s.(unix.Signal))
		case ws := <-status:
			if ws.Signaled() {
				os.Exit(128 + int(ws.Signal()))
			}
			os.Exit(ws.ExitStatus())
		}
	}
}

// lookCommand finds the command with the container's PATH, or exits as
// the real tool does.
func lookCommand(cfg *initConfig) string {
	pathEnv := defaultPath
	for _, kv := range cfg.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	_ = os.Setenv("PATH", pathEnv)
	argv := append([]string(nil), cfg.Argv...)
	bin, err := exec.LookPath(argv[0])
	if errors.Is(err, exec.ErrDot) {
		err = nil
	}
	if err != nil {
		if cfg.Runscript {
			fatalf("no runscript found in container: %s", strings.TrimPrefix(err.Error(), "exec: "))
		}
		var ee *exec.Error
		if errors.As(err, &ee) && errors.Is(ee.Err, exec.ErrNotFound) {
			fatalf("%q: executable file not found in $PATH", argv[0])
		}
		fatalf("%s", strings.TrimPrefix(err.Error(), "exec: "))
	}
	return bin
}
