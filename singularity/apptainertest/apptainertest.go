// Package apptainertest puts a faithful test double of the apptainer (or
// SingularityCE singularity) executable on PATH, for tests on machines
// where Apptainer is not installed (it is not in Debian).
//
// The double (package double below this one; see its documentation for
// what it emulates and how) parses its command line as the real tool,
// fails with the real tool's messages and exit codes, and really runs the
// command in the image's root file system: it extracts the SIF's squashfs
// partition once with unsquashfs into a cache, then runs the command in a
// private mount namespace on a read-only overlay of it, with the binds,
// /proc, /dev, /sys, $HOME, /tmp and the current directory mounted as
// Apptainer mounts them. It needs Linux, root and unsquashfs
// (squashfs-tools); Install skips the test otherwise.
//
//	bin := apptainertest.Install(t, "apptainer")
//	tool, err := singularity.Detect(ctx, singularity.Config{})   // finds the double
//	apptainertest.Registry(t, "docker://alpine:3.19", sifPath)   // for pull
//
// It is test-only: nothing in the product imports it.
package apptainertest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Flavours accepted by Install.
const (
	// Apptainer installs "apptainer" (Apptainer 1.3.4) and a "singularity"
	// symbolic link to it, as the Apptainer package does; both report
	// Apptainer.
	Apptainer = "apptainer"
	// SingularityCE installs "singularity" only, reporting SingularityCE
	// 4.1.0.
	SingularityCE = "singularity-ce"
)

// Environment variables the double reads. Install sets EnvCache to a
// directory of the test; Registry sets EnvRegistry.
const (
	EnvCache    = "APPTAINERTEST_CACHE"
	EnvRegistry = "APPTAINERTEST_REGISTRY"
)

// ExtractLog is the file in the cache directory to which the double
// appends one line per root file system extraction.
const ExtractLog = "extract.log"

const doublePkg = "github.com/scalebox-hpc/scalebox/singularity/apptainertest/double"

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// Install builds the double (once per test binary; the binary is kept in
// $TMPDIR keyed by a hash of its sources, so later runs reuse it), puts it
// on PATH under the flavour's names in a directory of the test, points
// the double's extraction cache at a directory of the test, and returns
// the bin directory. It skips the test when the double cannot work here:
// not Linux, not root, no unsquashfs, no overlay file system.
func Install(tb testing.TB, flavor string) string {
	tb.Helper()
	if err := Usable(); err != nil {
		tb.Skipf("apptainertest: %v", err)
	}
	if flavor != Apptainer && flavor != SingularityCE {
		tb.Fatalf("apptainertest: flavour %q is not %q or %q", flavor, Apptainer, SingularityCE)
	}
	buildOnce.Do(func() { builtPath, buildErr = build() })
	if buildErr != nil {
		tb.Fatalf("apptainertest: build the double: %v", buildErr)
	}
	dir := filepath.Join(tb.TempDir(), "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatalf("apptainertest: %v", err)
	}
	var err error
	switch flavor {
	case Apptainer:
		err = os.Symlink(builtPath, filepath.Join(dir, "apptainer"))
		if err == nil {
			err = os.Symlink("apptainer", filepath.Join(dir, "singularity"))
		}
	case SingularityCE:
		err = os.Symlink(builtPath, filepath.Join(dir, "singularity"))
	}
	if err != nil {
		tb.Fatalf("apptainertest: %v", err)
	}
	tb.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	tb.Setenv(EnvCache, filepath.Join(tb.TempDir(), "cache"))
	return dir
}

// Usable returns why the double cannot run on this machine, or nil.
func Usable() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("the apptainer double needs Linux, this is %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("the apptainer double needs root (mount namespaces, bind mounts, chroot)")
	}
	p, err := exec.LookPath("unsquashfs")
	if err != nil {
		return errors.New("unsquashfs not found: apt-get install squashfs-tools")
	}
	out, _ := exec.Command(p, "-help").CombinedOutput()
	if !strings.Contains(string(out), "-o[ffset]") && !strings.Contains(string(out), "-offset") {
		return fmt.Errorf("%s has no -offset option (squashfs-tools 4.4 or later is needed)", p)
	}
	fsys, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fsys), "\toverlay\n") {
		return errors.New("the kernel has no overlay file system")
	}
	return nil
}

// build compiles the double into $TMPDIR/apptainertest-double-<hash>/ and
// returns the binary's path.
func build() (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the apptainertest sources")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("the go command is not found on PATH")
	}
	src := filepath.Join(filepath.Dir(self), "double")
	if _, err := os.Stat(filepath.Join(src, "main.go")); err != nil {
		// Built with -trimpath: ask the go command.
		out, err := exec.Command(goBin, "list", "-f", "{{.Dir}}", doublePkg).Output()
		if err != nil {
			return "", fmt.Errorf("go list %s: %v", doublePkg, err)
		}
		src = strings.TrimSpace(string(out))
	}
	modRoot := filepath.Dir(filepath.Dir(filepath.Dir(src)))
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	files, _ := filepath.Glob(filepath.Join(src, "*.go"))
	sort.Strings(files)
	files = append(files, filepath.Join(modRoot, "go.mod"), filepath.Join(modRoot, "go.sum"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	dir := filepath.Join(os.TempDir(), "apptainertest-double-"+hex.EncodeToString(h.Sum(nil))[:16])
	out := filepath.Join(dir, "apptainertest-double")
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".build-*")
	if err != nil {
		return "", err
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(goBin, "build", "-o", tmp.Name(), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", src, err, b)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return out, nil
}

// RegistryName is the file name under $APPTAINERTEST_REGISTRY that the
// double's pull (and exec of a reference) reads for ref: "://", "/" and
// ":" replaced by "_", plus ".sif".
func RegistryName(ref string) string {
	return strings.NewReplacer("://", "_", "/", "_", ":", "_").Replace(ref) + ".sif"
}

// Registry places a copy of the SIF file sifPath in the double's registry
// directory (made in the test's temporary directory and exported as
// $APPTAINERTEST_REGISTRY on first use) under ref, so that "pull … ref"
// and "exec ref …" find it. It returns the registry file's path.
func Registry(tb testing.TB, ref, sifPath string) string {
	tb.Helper()
	dir := os.Getenv(EnvRegistry)
	if dir == "" {
		dir = filepath.Join(tb.TempDir(), "registry")
		if err := os.Mkdir(dir, 0o755); err != nil {
			tb.Fatalf("apptainertest: %v", err)
		}
		tb.Setenv(EnvRegistry, dir)
	}
	dest := filepath.Join(dir, RegistryName(ref))
	if err := copyFile(sifPath, dest); err != nil {
		tb.Fatalf("apptainertest: registry %s: %v", ref, err)
	}
	return dest
}

// Extractions returns the lines of the double's extraction log in the
// cache directory of the test ($APPTAINERTEST_CACHE): one per root file
// system extracted, "<key> <image path>".
func Extractions(tb testing.TB) []string {
	tb.Helper()
	dir := os.Getenv(EnvCache)
	if dir == "" {
		tb.Fatalf("apptainertest: %s is not set: call Install first", EnvCache)
	}
	f, err := os.Open(filepath.Join(dir, ExtractLog))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatalf("apptainertest: %v", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("apptainertest: %v", err)
	}
	return lines
}

func copyFile(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
