package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
	"golang.org/x/sys/unix"
)

// image is an opened, checked image.
type image struct {
	path   string // absolute, symlinks resolved
	kind   string // "sif", "squashfs", "sandbox"
	offset int64  // of the squashfs root file system
	size   int64
	id     string // SIF UUID
	mtime  time.Time
}

// errUnknownFormat is the real tool's ErrUnknownFormat.
var errUnknownFormat = errors.New("image format not recognized")

const headerSize = 2048 // bytes the real tool reads to recognise a format

// openImage resolves ref (a path or a registry reference) and checks it as
// Apptainer's image.Init does. Errors are printed by the caller after
// "could not open image REF: ".
func openImage(fl *flavor, ref string) (*image, error) {
	if t, _, ok := strings.Cut(ref, "://"); ok {
		p, err := registryLookup(fl, t, ref)
		if err != nil {
			return nil, err
		}
		ref = p
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return nil, fmt.Errorf("failed to get absolute path: %s", err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("failed to retrieve path for %s: %s", ref, err)
	}
	if unix.Access(resolved, unix.R_OK) != nil {
		return nil, fmt.Errorf("%s is not readable by the current user, check permissions", resolved)
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return nil, err
	}
	img := &image{path: resolved, mtime: st.ModTime(), size: st.Size()}
	if st.IsDir() {
		img.kind = "sandbox"
		return img, nil
	}
	f, err := os.Open(resolved)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, headerSize)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case bytes.Contains(head, []byte("SIF_MAGIC")):
		return img, img.checkSIF(f)
	case n >= 4 && string(head[:4]) == "hsqs":
		img.kind = "squashfs"
		return img, checkSquashfsHeader(head)
	case n >= 0x438+2 && binary.LittleEndian.Uint16(head[0x438:]) == 0xEF53:
		return nil, errors.New("apptainertest double: ext3 images are not emulated")
	}
	return nil, errUnknownFormat
}

func (img *image) checkSIF(f *os.File) (err error) {
	// sif/v2 allocates the descriptor table the header announces: refuse
	// a table that cannot fit in the file before it does.
	var h [128]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("reading global header: %w", io.ErrUnexpectedEOF)
	}
	total := int64(binary.LittleEndian.Uint64(h[88:96]))
	if total < 0 || total > img.size/585 {
		return fmt.Errorf("reading descriptors: %w", io.ErrUnexpectedEOF)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	fi, err := sif.LoadContainer(f, sif.OptLoadWithFlag(os.O_RDONLY), sif.OptLoadWithCloseOnUnload(false))
	if err != nil {
		return err
	}
	defer func() { _ = fi.UnloadContainer() }()
	img.kind = "sif"
	img.id = fi.ID()
	d, err := fi.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
	if err != nil {
		return fmt.Errorf("no root filesystem found in %s", img.path)
	}
	fsType, _, arch, err := d.PartitionMetadata()
	if err != nil {
		return err
	}
	if fsType != sif.FsSquash {
		if fsType == sif.FsExt3 || fsType == sif.FsEncryptedSquashfs || fsType == sif.FsGocryptfsSquashfs {
			return fmt.Errorf("apptainertest double: %s root file systems are not emulated", fsType)
		}
		return fmt.Errorf("while checking system partition header: unknown filesystem type %v", fsType)
	}
	head := make([]byte, headerSize)
	if _, err := f.ReadAt(head, d.Offset()); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("while checking system partition header: failed to read SIF partition at offset %d: %s", d.Offset(), err)
	}
	if err := checkSquashfsHeader(head); err != nil {
		return fmt.Errorf("while checking system partition header: error while checking squashfs header: %s", err)
	}
	if arch != "unknown" && arch != runtime.GOARCH {
		return fmt.Errorf("the image's architecture (%s) could not run on the host's (%s)", arch, runtime.GOARCH)
	}
	img.offset = d.Offset()
	return nil
}

func checkSquashfsHeader(b []byte) error {
	if len(b) < 30 || string(b[:4]) != "hsqs" {
		return errors.New("not a valid squashfs image")
	}
	if major := binary.LittleEndian.Uint16(b[28:30]); major != 4 {
		return fmt.Errorf("squashfs major version %d is not supported", major)
	}
	return nil
}

// cacheDir returns (and makes) the extraction cache directory.
func cacheDir() (string, error) {
	dir := os.Getenv("APPTAINERTEST_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "apptainertest-cache")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// rootfs returns a directory holding the image's root file system: the
// sandbox itself, or the cached extraction of the squashfs partition.
func (img *image) rootfs(cacheRoot string) (string, error) {
	if img.kind == "sandbox" {
		return img.path, nil
	}
	id := img.id
	if id == "" {
		id = img.path
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d|%d", id, img.size, img.mtime.UnixNano(), img.offset)))
	key := hex.EncodeToString(sum[:12])
	dest := filepath.Join(cacheRoot, "rootfs-"+key)
	if isDir(dest) {
		return dest, nil
	}
	lock, err := os.OpenFile(dest+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	for {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if isDir(dest) {
		return dest, nil // another run extracted it while we waited
	}
	// Leftovers of an interrupted extraction of this image.
	if old, _ := filepath.Glob(filepath.Join(cacheRoot, ".tmp-"+key+"-*")); len(old) > 0 {
		for _, o := range old {
			_ = os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(cacheRoot, ".tmp-"+key+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "rootfs")
	bin, err := findUnsquashfs()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "-o", strconv.FormatInt(img.offset, 10), "-d", out, "-no-progress", img.path)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s -o %d %s: %v: %s", bin, img.offset, img.path, err, strings.TrimSpace(lastLines(string(b), 5)))
	}
	if err := os.Rename(out, dest); err != nil {
		return "", err
	}
	log, err := os.OpenFile(filepath.Join(cacheRoot, "extract.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		fmt.Fprintf(log, "%s %s\n", key, img.path)
		_ = log.Close()
	}
	return dest, nil
}

func findUnsquashfs() (string, error) {
	if p, err := exec.LookPath("unsquashfs"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/unsquashfs", "/usr/sbin/unsquashfs", "/sbin/unsquashfs", "/bin/unsquashfs"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("apptainertest double: unsquashfs not found (apt-get install squashfs-tools)")
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func goarch() string { return runtime.GOARCH }
