// Package containertest builds small container images for tests of the
// container engines, the pilot and the end-to-end suite: a minimal root
// file system made of the host's bash (with its shared libraries) and
// Debian's static busybox, and a podman image imported from it offline.
//
//	root := containertest.Rootfs(t, "/path/to/scalebox") // bash, busybox applets, /usr/local/bin/scalebox
//	containertest.Podman(t)                                // skips without podman/root; sets CONTAINERS_CONF
//	ref := containertest.PodmanImage(t, root)              // localhost/scalebox-test:<content hash>
//
// Built root file systems and the podman configuration live under
// $TMPDIR/scalebox-containertest, named by a hash of their content, so
// they are shared by all test binaries and runs and never rebuilt for the
// same inputs; images are kept in podman's store for the same reason (they
// are a few MB: "podman rmi localhost/scalebox-test:<hash>" or "podman
// image prune -a" removes them). The returned directories are shared:
// callers must not modify them.
//
// Tests are skipped, with a message naming the missing package, when
// busybox-static, ldd (libc-bin), podman or runc are missing, or when
// podman tests do not run as root.
package containertest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BusyboxPath is where Debian's busybox-static installs busybox.
const BusyboxPath = "/bin/busybox"

// layoutVersion is part of every content hash: bump it when the layout of
// Rootfs changes so that cached root file systems are rebuilt.
const layoutVersion = "scalebox-containertest rootfs v1"

// Applets are the busybox applets Rootfs links in /bin (those the host's
// busybox has): what the app-primes example and typical module scripts
// use.
var Applets = []string{
	"[", "awk", "basename", "cat", "chmod", "cp", "cut", "date", "df", "dirname", "du",
	"echo", "env", "expr", "false", "find", "grep", "gzip", "head", "hostname", "id",
	"kill", "ln", "ls", "md5sum", "mkdir", "mktemp", "mv", "nproc", "printf", "ps",
	"pwd", "readlink", "rm", "rmdir", "sed", "seq", "sh", "sha256sum", "sleep", "sort",
	"stat", "sync", "tail", "tar", "tee", "test", "timeout", "touch", "tr", "true",
	"uname", "uniq", "wc", "which", "xargs",
}

// ContainersConf is the containers.conf Podman writes: podman 4.3 as root
// on a machine like the project's CI VM needs runc (crun refuses its
// cgroup layout) and ulimits below the VM's hard limits.
const ContainersConf = `# written by scalebox container/containertest
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
`

// CacheDir is the directory holding the cached root file systems, the
// podman configuration and the import lock.
func CacheDir() string {
	return filepath.Join(os.TempDir(), "scalebox-containertest")
}

// entry is one thing in a root file system.
type entry struct {
	path    string      // absolute, inside the root file system
	mode    fs.FileMode // permission bits (and ModeSticky) for dirs and files
	dir     bool
	src     string // host file to copy
	content []byte // generated file content (when src == "")
	link    string // symlink target
	sum     string // sha256 of the file's content
}

type onceDir struct {
	once sync.Once
	dir  string
	err  error
}

var (
	rootfsMu    sync.Mutex
	rootfsCache = map[string]*onceDir{}
)

// Rootfs returns a minimal root file system directory holding
//
//   - /bin/bash, copied from the host, and /bin/busybox from Debian's
//     busybox-static, with /bin links for the Applets it has and
//     /usr/bin/env;
//   - each of extraBinaries (a path, or a name looked up on PATH) as
//     /usr/local/bin/<base name>;
//   - every shared library ldd lists for bash and the extra binaries
//     (and the dynamic loader), at the same absolute paths;
//   - /etc/passwd and /etc/group with root, /tmp and /var/tmp (1777),
//     /root, and the empty directories /work, /app/bin, /local_data_root,
//     /cluster_data_root, /proc, /dev and /sys.
//
// It is built once per set of inputs (see the package documentation);
// the directory is shared and must not be modified. The test is skipped
// when busybox-static or ldd is missing.
func Rootfs(tb testing.TB, extraBinaries ...string) string {
	tb.Helper()
	if _, err := exec.LookPath("ldd"); err != nil {
		tb.Skip("containertest: ldd not found: apt-get install libc-bin")
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		tb.Skipf("containertest: %s not found: apt-get install busybox-static", BusyboxPath)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		tb.Skip("containertest: bash not found on PATH: apt-get install bash")
	}
	extras := make([]string, 0, len(extraBinaries))
	for _, x := range extraBinaries {
		p, err := resolveBinary(x)
		if err != nil {
			tb.Fatalf("containertest: extra binary %q: %v", x, err)
		}
		extras = append(extras, p)
	}
	sort.Strings(extras)
	extras = slices.Compact(extras)

	key := strings.Join(append([]string{bash}, extras...), "\x00")
	rootfsMu.Lock()
	o := rootfsCache[key]
	if o == nil {
		o = &onceDir{}
		rootfsCache[key] = o
	}
	rootfsMu.Unlock()
	var built bool
	start := time.Now()
	o.once.Do(func() { o.dir, built, o.err = buildRootfs(bash, extras) })
	if built {
		tb.Logf("containertest: built root file system %s in %v", o.dir, time.Since(start).Round(time.Millisecond))
	}
	if o.err != nil {
		tb.Fatalf("containertest: %v", o.err)
	}
	return o.dir
}

// resolveBinary turns a name or path into an absolute path of a regular
// executable file.
func resolveBinary(x string) (string, error) {
	p := x
	if !strings.Contains(x, "/") {
		lp, err := exec.LookPath(x)
		if err != nil {
			return "", err
		}
		p = lp
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", p)
	}
	return p, nil
}

// buildRootfs builds (or finds) the root file system; built says whether
// this call made it.
func buildRootfs(bash string, extras []string) (dir string, built bool, err error) {
	entries, err := manifest(bash, extras)
	if err != nil {
		return "", false, err
	}
	h := sha256.New()
	io.WriteString(h, layoutVersion+"\n")
	for _, e := range entries {
		fmt.Fprintf(h, "%q %v %v %q %s\n", e.path, e.dir, e.mode, e.link, e.sum)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]

	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", false, err
	}
	final := filepath.Join(cache, "rootfs-"+sum)
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, false, nil
	}
	tmp, err := os.MkdirTemp(cache, "tmp-rootfs-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", false, err
	}
	for _, e := range entries {
		if err := e.write(tmp); err != nil {
			return "", false, fmt.Errorf("build root file system: %s: %w", e.path, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another test binary may have built the same content meanwhile.
		if fi, serr := os.Stat(final); serr == nil && fi.IsDir() {
			return final, false, nil
		}
		return "", false, err
	}
	return final, true, nil
}

// write creates e under root. Parents are created by earlier entries or
// here with mode 0755.
func (e entry) write(root string) error {
	p := filepath.Join(root, e.path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	switch {
	case e.dir:
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return os.Chmod(p, e.mode) // Mkdir applies the umask and drops the sticky bit
	case e.link != "":
		return os.Symlink(e.link, p)
	case e.src != "":
		in, err := os.Open(e.src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, e.mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		return os.Chmod(p, e.mode)
	default:
		if err := os.WriteFile(p, e.content, e.mode); err != nil {
			return err
		}
		return os.Chmod(p, e.mode)
	}
}

// manifest lists the root file system's entries, sorted by path (a
// directory before its content).
func manifest(bash string, extras []string) ([]entry, error) {
	byPath := map[string]entry{}
	add := func(e entry) error {
		if o, ok := byPath[e.path]; ok {
			if o.src == e.src && o.link == e.link && o.dir == e.dir && bytes.Equal(o.content, e.content) {
				return nil
			}
			return fmt.Errorf("two different files for %s in the root file system (%s and %s)", e.path, o.src, e.src)
		}
		byPath[e.path] = e
		return nil
	}
	for _, d := range []struct {
		path string
		mode fs.FileMode
	}{
		{"/bin", 0o755}, {"/usr", 0o755}, {"/usr/bin", 0o755}, {"/usr/local", 0o755}, {"/usr/local/bin", 0o755},
		{"/etc", 0o755}, {"/tmp", 0o777 | fs.ModeSticky}, {"/var", 0o755}, {"/var/tmp", 0o777 | fs.ModeSticky},
		{"/root", 0o700}, {"/work", 0o755}, {"/app", 0o755}, {"/app/bin", 0o755},
		{"/local_data_root", 0o755}, {"/cluster_data_root", 0o755},
		{"/proc", 0o555}, {"/dev", 0o755}, {"/sys", 0o555},
	} {
		if err := add(entry{path: d.path, mode: d.mode, dir: true}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ path, content string }{
		{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"/etc/group", "root:x:0:\nnogroup:x:65534:\n"},
	} {
		if err := add(entry{path: f.path, mode: 0o644, content: []byte(f.content)}); err != nil {
			return nil, err
		}
	}

	// Binaries and their libraries.
	type bin struct{ src, dst string }
	bins := []bin{{bash, "/bin/bash"}, {BusyboxPath, "/bin/busybox"}}
	bases := map[string]string{}
	for _, x := range extras {
		base := filepath.Base(x)
		if o, ok := bases[base]; ok {
			return nil, fmt.Errorf("extra binaries %s and %s have the same name", o, x)
		}
		bases[base] = x
		bins = append(bins, bin{x, "/usr/local/bin/" + base})
	}
	for _, b := range bins {
		if err := add(entry{path: b.dst, src: b.src}); err != nil {
			return nil, err
		}
		libs, err := sharedLibs(b.src)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			if err := add(entry{path: l, src: l}); err != nil {
				return nil, err
			}
		}
	}

	// Busybox applets.
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", BusyboxPath, err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	for _, a := range Applets {
		if !have[a] {
			continue
		}
		if _, ok := byPath["/bin/"+a]; ok { // bash
			continue
		}
		if err := add(entry{path: "/bin/" + a, link: "busybox"}); err != nil {
			return nil, err
		}
	}
	if have["env"] {
		if err := add(entry{path: "/usr/bin/env", link: "../../bin/busybox"}); err != nil {
			return nil, err
		}
	}

	entries := make([]entry, 0, len(byPath))
	for _, e := range byPath {
		if e.src != "" {
			fi, err := os.Stat(e.src)
			if err != nil {
				return nil, err
			}
			e.mode = fi.Mode().Perm()
			if e.sum, err = fileSum(e.src); err != nil {
				return nil, err
			}
		} else if e.content != nil {
			s := sha256.Sum256(e.content)
			e.sum = hex.EncodeToString(s[:])
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	return entries, nil
}

// sharedLibs returns the absolute paths ldd lists for a dynamically
// linked ELF binary (the loader included), or nil for a static one.
func sharedLibs(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	dynamic := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			dynamic = true
		}
	}
	f.Close()
	if !dynamic {
		return nil, nil
	}
	var stderr bytes.Buffer
	cmd := exec.Command("ldd", bin)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	return parseLdd(bin, out)
}

// parseLdd reads ldd's output:
//
//	linux-vdso.so.1 (0x…)
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)
//	/lib64/ld-linux-x86-64.so.2 (0x…)
//	libfoo.so.1 => not found
func parseLdd(bin string, out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, p, arrow := strings.Cut(line, "=>")
		if !arrow {
			p = name
		}
		p = strings.TrimSpace(p)
		if strings.HasPrefix(p, "not found") {
			return nil, fmt.Errorf("ldd %s: %s is not found", bin, strings.TrimSpace(name))
		}
		if i := strings.Index(p, " ("); i >= 0 {
			p = p[:i]
		}
		if strings.HasPrefix(p, "/") {
			libs = append(libs, filepath.Clean(p))
		}
	}
	return libs, sc.Err()
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// TreeHash is a hash of a directory tree's content: paths, types,
// permissions, symlink targets and file contents (not times or owners).
func TreeHash(root string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%q %v", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, " -> %q", t)
		case fi.Mode().IsRegular():
			s, err := fileSum(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, " %s", s)
		}
		io.WriteString(h, "\n")
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// podman checks for podman, runc and root, and writes ContainersConf
// once; it returns podman's path and the environment additions.
func podman(tb testing.TB) (bin string, env []string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("containertest: podman tests run as root only (rootless podman is not set up here)")
	}
	bin, err := exec.LookPath("podman")
	if err != nil {
		tb.Skip("containertest: podman not found: apt-get install podman")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		tb.Skip("containertest: runc not found: apt-get install runc")
	}
	confOnce.Do(func() { confPath, confErr = writeConf() })
	if confErr != nil {
		tb.Fatalf("containertest: write containers.conf: %v", confErr)
	}
	return bin, []string{"CONTAINERS_CONF=" + confPath}
}

var (
	confOnce sync.Once
	confPath string
	confErr  error
)

// writeConf writes ContainersConf to a content-named file in CacheDir.
func writeConf() (string, error) {
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	s := sha256.Sum256([]byte(ContainersConf))
	p := filepath.Join(dir, "containers-"+hex.EncodeToString(s[:])[:16]+".conf")
	if b, err := os.ReadFile(p); err == nil && string(b) == ContainersConf {
		return p, nil
	}
	f, err := os.CreateTemp(dir, "tmp-containers-")
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(ContainersConf); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return p, nil
}

// Podman skips the test unless podman and runc are installed and the test
// runs as root, then points podman at ContainersConf: it sets
// CONTAINERS_CONF for the rest of the test with tb.Setenv (so processes
// the test starts, such as a pilot, inherit it) and returns the same
// addition ("CONTAINERS_CONF=…") for callers that build an environment
// themselves. Like tb.Setenv, it must not be called from a parallel test
// (or after t.Parallel).
func Podman(tb testing.TB) []string {
	tb.Helper()
	_, env := podman(tb)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		tb.Setenv(k, v)
	}
	return env
}

var (
	imageMu    sync.Mutex
	imageCache = map[string]*onceDir{} // rootfs dir → reference
)

// PodmanImageRepo is the repository of the images PodmanImage imports.
const PodmanImageRepo = "localhost/scalebox-test"

// PodmanImage imports rootfs (e.g. from Rootfs) into podman's store,
// offline, as PodmanImageRepo:<hash of its content>, and returns that
// reference. It imports at most once per test binary and directory, and
// not at all when podman already has the reference (from an earlier run
// or another test binary: imports are serialised by a lock file in
// CacheDir). Images are kept, not removed at the end of the test: they
// are named by content, so a later run reuses them. It skips like
// Podman, but does not change the test's environment, so it may be
// called from parallel tests.
func PodmanImage(tb testing.TB, rootfs string) string {
	tb.Helper()
	bin, env := podman(tb)
	abs, err := filepath.Abs(rootfs)
	if err != nil {
		tb.Fatalf("containertest: %v", err)
	}
	imageMu.Lock()
	o := imageCache[abs]
	if o == nil {
		o = &onceDir{}
		imageCache[abs] = o
	}
	imageMu.Unlock()
	var imported bool
	start := time.Now()
	o.once.Do(func() { o.dir, imported, o.err = importImage(bin, append(os.Environ(), env...), abs) })
	if imported {
		tb.Logf("containertest: imported %s as %s in %v", abs, o.dir, time.Since(start).Round(time.Millisecond))
	}
	if o.err != nil {
		tb.Fatalf("containertest: %v", o.err)
	}
	return o.dir
}

func importImage(bin string, env []string, rootfs string) (ref string, imported bool, err error) {
	sum, err := TreeHash(rootfs)
	if err != nil {
		return "", false, fmt.Errorf("hash %s: %w", rootfs, err)
	}
	ref = PodmanImageRepo + ":" + sum[:16]

	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		return "", false, err
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir(), "podman-import.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	exists := exec.Command(bin, "image", "exists", ref)
	exists.Env = env
	var stderr bytes.Buffer
	exists.Stderr = &stderr
	err = exists.Run()
	if err == nil {
		return ref, false, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		return "", false, fmt.Errorf("podman image exists %s: %w: %s", ref, err, strings.TrimSpace(stderr.String()))
	}

	tarCmd := exec.Command("tar", "--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-c", ".")
	var tarErr bytes.Buffer
	tarCmd.Stderr = &tarErr
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		return "", false, err
	}
	imp := exec.Command(bin, "import", "-q", "--message", "scalebox containertest", "-", ref)
	imp.Env = env
	imp.Stdin = pipe
	var impOut bytes.Buffer
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := tarCmd.Start(); err != nil {
		return "", false, fmt.Errorf("tar: %w", err)
	}
	impErr := imp.Run()
	if impErr != nil {
		tarCmd.Process.Kill()
	}
	tarWaitErr := tarCmd.Wait()
	if impErr != nil {
		return "", false, fmt.Errorf("podman import %s: %w: %s", ref, impErr, strings.TrimSpace(impOut.String()))
	}
	if tarWaitErr != nil {
		// podman imported a truncated archive: do not leave it under ref.
		rmi := exec.Command(bin, "rmi", "-f", ref)
		rmi.Env = env
		_ = rmi.Run()
		return "", false, fmt.Errorf("tar -C %s: %w: %s", rootfs, tarWaitErr, strings.TrimSpace(tarErr.String()))
	}
	return ref, true, nil
}
