package singularity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Puller fetches a docker://, oras:// or library:// reference into the SIF
// file dest, which does not exist yet. *Tool is a Puller.
type Puller interface {
	Pull(ctx context.Context, dest, ref string) error
}

var _ Puller = (*Tool)(nil)

// Cache is a node-local, size-bounded directory of SIF images keyed by
// digest. Several processes (pilots) on a node may use the same directory
// at once; they coordinate with flock(2) on files in it:
//
//   - sha256-<hex>.sif: a cached image, named by the sha256 of its bytes.
//     Its mtime is set on every Stage and orders eviction (least recently
//     staged first).
//   - sha256-<hex>.sif.inuse: every Staged image holds a shared lock
//     (LOCK_SH) on its own descriptor of this file until Release. Eviction
//     takes LOCK_EX|LOCK_NB and skips images it cannot lock, so an image
//     staged by this or any other process is never evicted.
//   - .lock-<key>: serializes the copy or pull of one source (key = sha256
//     of the source's absolute path or reference): one process copies or
//     pulls, the others wait and reuse its result.
//   - .ref-<key>: the index entry of one source (JSON: the digest name, the
//     image's ID and size, and for a SIF file the source's size and mtime),
//     written atomically. A reference is pulled once; later Stages of the
//     same reference reuse the image while it is cached (remove the entry,
//     or let the image be evicted, to pull a moved tag again). A SIF file
//     whose size and mtime are unchanged is not read again.
//   - .lock-evict: serializes eviction.
//   - .tmp-*: files being written; renamed into place when complete.
//
// Locks are taken on separate open file descriptions, so two Caches on the
// same directory in one process exclude each other as two processes do.
type Cache struct {
	dir      string
	maxBytes int64
	pull     Puller

	// onFill, if set, is called after each copy or pull (tests count them).
	onFill func()
	// now stamps an image's last use (its mtime); nil is time.Now.
	now func() time.Time
}

// Staged is an image ready to run. Release it when the container is done.
type Staged struct {
	Image  string // as given to Stage
	Path   string // the cached SIF file, or the sandbox directory in place
	Digest string // "sha256:<hex>"; "" for a sandbox
	ID     string // the SIF's UUID; "" for a sandbox
	Kind   Kind   // of the image as given (KindSIF, KindSandbox, KindDocker…)
	Size   int64  // bytes of the SIF; 0 for a sandbox
	// Oversize is set when the image alone is larger than the cache's
	// bound: it is staged anyway (every other unused image is evicted),
	// and will be evicted by a later Stage once it is released.
	Oversize bool

	once  sync.Once
	inuse *os.File
	err   error
}

// Release drops the in-use lock so that the image may be evicted. It is
// safe to call more than once; a sandbox's Release does nothing.
func (s *Staged) Release() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		if s.inuse == nil {
			return
		}
		err := unix.Flock(int(s.inuse.Fd()), unix.LOCK_UN)
		if cerr := s.inuse.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			s.err = &ImageError{Image: s.Image, Err: fmt.Errorf("release cached image %s: %w", s.Path, err)}
		}
		s.inuse = nil
	})
	return s.err
}

// NewCache makes (if needed) and opens the cache directory dir. maxBytes
// bounds the total size of cached images; maxBytes <= 0 means unbounded.
// pull fetches references; it may be nil when only local images are
// staged.
func NewCache(dir string, maxBytes int64, pull Puller) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("image cache: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", abs, err)
	}
	return &Cache{dir: abs, maxBytes: maxBytes, pull: pull}, nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// indexEntry is the content of a .ref-<key> file.
type indexEntry struct {
	Source   string `json:"source"`
	Name     string `json:"name"` // sha256-<hex>.sif
	Digest   string `json:"digest"`
	ID       string `json:"id"`
	Size     int64  `json:"size"`
	SrcSize  int64  `json:"src_size,omitempty"`
	SrcMtime int64  `json:"src_mtime_ns,omitempty"`
}

// Stage makes image available on this node: a sandbox directory is used in
// place; a SIF file is inspected and copied into the cache (unless an
// image with its digest is there already); a docker://, oras:// or
// library:// reference is pulled with the Puller, inspected and cached.
// The returned image is held in use until Release. After staging, least
// recently staged unused images are evicted until the cache fits its
// bound. Errors name the image.
func (c *Cache) Stage(ctx context.Context, image string) (*Staged, error) {
	img, err := ClassifyImage(image)
	if err != nil {
		return nil, err
	}
	if img.Kind == KindSandbox {
		return &Staged{Image: image, Path: img.Path, Kind: KindSandbox}, nil
	}
	if img.Kind.Remote() && c.pull == nil {
		return nil, &ImageError{Image: image, Err: errors.New("image cache: no puller configured for references")}
	}
	source := img.Ref
	if img.Kind == KindSIF {
		source = img.Path
	}
	key := sourceKey(source)

	st, err := c.stageLocked(ctx, image, img, source, key)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	if err := os.Chtimes(st.Path, now, now); err != nil {
		_ = st.Release()
		return nil, &ImageError{Image: image, Err: fmt.Errorf("image cache: touch %s: %w", st.Path, err)}
	}
	if c.maxBytes > 0 {
		st.Oversize = st.Size > c.maxBytes
		if err := c.evict(ctx); err != nil {
			_ = st.Release()
			return nil, &ImageError{Image: image, Err: err}
		}
	}
	return st, nil
}

// stageLocked does the per-source work under .lock-<key>.
func (c *Cache) stageLocked(ctx context.Context, image string, img Image, source, key string) (*Staged, error) {
	fail := func(format string, args ...any) error {
		return &ImageError{Image: image, Err: fmt.Errorf("image cache: "+format, args...)}
	}
	unlock, err := c.lockFile(ctx, filepath.Join(c.dir, ".lock-"+key))
	if err != nil {
		return nil, fail("lock: %w", err)
	}
	defer unlock()

	var srcInfo os.FileInfo
	if img.Kind == KindSIF {
		if srcInfo, err = os.Stat(source); err != nil {
			return nil, &ImageError{Image: image, Err: err}
		}
	}

	// A hit in the index: the image is cached already.
	refPath := filepath.Join(c.dir, ".ref-"+key)
	if e, ok := readIndex(refPath); ok && e.Source == source && validName(e.Name) &&
		(srcInfo == nil || (e.SrcSize == srcInfo.Size() && e.SrcMtime == srcInfo.ModTime().UnixNano())) {
		st, found, err := c.holdExisting(ctx, image, img.Kind, e)
		if err != nil {
			return nil, err
		}
		if found {
			return st, nil
		}
	}

	var e indexEntry
	var inuse *os.File
	switch {
	case img.Kind == KindSIF:
		info, err := Inspect(source)
		if err != nil {
			return nil, wrapImage(image, source, err)
		}
		e = entryFor(source, info)
		e.SrcSize, e.SrcMtime = srcInfo.Size(), srcInfo.ModTime().UnixNano()
		if inuse, err = c.lockInuse(ctx, e.Name); err != nil {
			return nil, fail("%w", err)
		}
		dest := filepath.Join(c.dir, e.Name)
		if _, err := os.Stat(dest); errors.Is(err, os.ErrNotExist) {
			if err := c.copyIn(ctx, source, dest, info.Digest); err != nil {
				closeLock(inuse)
				return nil, fail("copy %s: %w", source, err)
			}
			if c.onFill != nil {
				c.onFill()
			}
		} else if err != nil {
			closeLock(inuse)
			return nil, fail("%w", err)
		}
	default:
		tmpDir, err := os.MkdirTemp(c.dir, ".tmp-pull-")
		if err != nil {
			return nil, fail("%w", err)
		}
		defer os.RemoveAll(tmpDir)
		tmp := filepath.Join(tmpDir, "image.sif")
		if err := c.pull.Pull(ctx, tmp, img.Ref); err != nil {
			return nil, fail("pull: %w", err)
		}
		if c.onFill != nil {
			c.onFill()
		}
		info, err := Inspect(tmp)
		if err != nil {
			return nil, wrapImage(image, tmp, err)
		}
		e = entryFor(source, info)
		if inuse, err = c.lockInuse(ctx, e.Name); err != nil {
			return nil, fail("%w", err)
		}
		dest := filepath.Join(c.dir, e.Name)
		if _, err := os.Stat(dest); errors.Is(err, os.ErrNotExist) {
			err := syncFile(tmp)
			if err == nil {
				err = os.Rename(tmp, dest)
			}
			if err == nil {
				err = syncDir(c.dir)
			}
			if err != nil {
				closeLock(inuse)
				return nil, fail("store pulled image: %w", err)
			}
		} else if err != nil {
			closeLock(inuse)
			return nil, fail("%w", err)
		}
	}
	if err := c.writeIndex(refPath, e); err != nil {
		closeLock(inuse)
		return nil, fail("write index: %w", err)
	}
	return c.staged(image, img.Kind, e, inuse), nil
}

// holdExisting takes the in-use lock of a cached image named by an index
// entry; found is false when the image has been evicted meanwhile.
func (c *Cache) holdExisting(ctx context.Context, image string, kind Kind, e indexEntry) (*Staged, bool, error) {
	inuse, err := c.lockInuse(ctx, e.Name)
	if err != nil {
		return nil, false, &ImageError{Image: image, Err: fmt.Errorf("image cache: %w", err)}
	}
	fi, err := os.Stat(filepath.Join(c.dir, e.Name))
	if err != nil || fi.Size() != e.Size {
		closeLock(inuse)
		return nil, false, nil
	}
	return c.staged(image, kind, e, inuse), true, nil
}

func (c *Cache) staged(image string, kind Kind, e indexEntry, inuse *os.File) *Staged {
	return &Staged{Image: image, Path: filepath.Join(c.dir, e.Name), Digest: e.Digest, ID: e.ID,
		Kind: kind, Size: e.Size, inuse: inuse}
}

func entryFor(source string, info *SIF) indexEntry {
	return indexEntry{Source: source, Name: digestName(info.Digest), Digest: info.Digest, ID: info.ID, Size: info.Size}
}

// wrapImage names the image as given when Inspect ran on another path.
func wrapImage(image, path string, err error) error {
	if image == path {
		return err
	}
	var ie *ImageError
	if errors.As(err, &ie) && ie.Image == image {
		return err
	}
	return &ImageError{Image: image, Err: err}
}

// sourceKey names the lock and index files of a source path or reference.
func sourceKey(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:])
}

func digestName(digest string) string {
	return "sha256-" + strings.TrimPrefix(digest, "sha256:") + ".sif"
}

func validName(name string) bool {
	hexPart, ok := strings.CutPrefix(name, "sha256-")
	if !ok {
		return false
	}
	hexPart, ok = strings.CutSuffix(hexPart, ".sif")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

func readIndex(path string) (indexEntry, bool) {
	var e indexEntry
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &e) != nil {
		return e, false
	}
	return e, true
}

func (c *Cache) writeIndex(path string, e indexEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.atomicWrite(path, func(f *os.File) error {
		_, err := f.Write(append(b, '\n'))
		return err
	})
}

// copyIn copies src to dest through a temporary file in the cache
// directory (written, fsynced, renamed), checking that the bytes copied
// have the digest that Inspect found.
func (c *Cache) copyIn(ctx context.Context, src, dest, digest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return c.atomicWrite(dest, func(f *os.File) error {
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, in}); err != nil {
			return err
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
			return fmt.Errorf("the file changed while it was copied (digest %s, inspected %s)", got, digest)
		}
		return nil
	})
}

// atomicWrite writes path through a temporary file in the cache directory.
func (c *Cache) atomicWrite(path string, write func(*os.File) error) (err error) {
	f, err := os.CreateTemp(c.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(c.dir)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// flock takes a lock, polling while ctx allows when it is held elsewhere.
func flock(ctx context.Context, f *os.File, how int) error {
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for lock %s: %w", f.Name(), ctx.Err())
		case <-t.C:
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// lockFile takes an exclusive lock on path (created if needed) and returns
// its unlock function. Lock files are never removed.
func (c *Cache) lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flock(ctx, f, unix.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { closeLock(f) }, nil
}

func closeLock(f *os.File) {
	if f != nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}
}

// lockInuse takes a shared lock on the .inuse file of the image name. The
// evictor removes .inuse files while holding them exclusively, so after
// locking the descriptor must still be the file at the path; else retry.
func (c *Cache) lockInuse(ctx context.Context, name string) (*os.File, error) {
	path := filepath.Join(c.dir, name+".inuse")
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := flock(ctx, f, unix.LOCK_SH); err != nil {
			_ = f.Close()
			return nil, err
		}
		if sameFile(f, path) {
			return f, nil
		}
		closeLock(f)
	}
}

func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

type cached struct {
	name  string
	size  int64
	mtime time.Time
}

// evict removes least recently staged images that nobody holds until the
// cache fits maxBytes (or only images in use are left).
func (c *Cache) evict(ctx context.Context) error {
	unlock, err := c.lockFile(ctx, filepath.Join(c.dir, ".lock-evict"))
	if err != nil {
		return fmt.Errorf("image cache: eviction lock: %w", err)
	}
	defer unlock()
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	var all []cached
	var total int64
	for _, de := range ents {
		if !validName(de.Name()) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		all = append(all, cached{de.Name(), fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	if total <= c.maxBytes {
		return nil
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].mtime.Equal(all[j].mtime) {
			return all[i].mtime.Before(all[j].mtime)
		}
		return all[i].name < all[j].name
	})
	for _, im := range all {
		if total <= c.maxBytes {
			break
		}
		ok, err := c.evictOne(im.name)
		if err != nil {
			return err
		}
		if ok {
			total -= im.size
		}
	}
	return nil
}

// evictOne removes an image unless it is in use.
func (c *Cache) evictOne(name string) (bool, error) {
	path := filepath.Join(c.dir, name+".inuse")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, fmt.Errorf("image cache: evict %s: %w", name, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil // in use
		}
		return false, fmt.Errorf("image cache: evict %s: flock: %w", name, err)
	}
	defer func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }()
	if !sameFile(f, path) {
		return false, nil // another evictor got there first
	}
	if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("image cache: evict %s: %w", name, err)
	}
	_ = os.Remove(path)
	return true, nil
}
