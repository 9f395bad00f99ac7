package singularity

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

// fakePuller copies a prepared SIF to dest and counts its calls.
type fakePuller struct {
	src   string
	calls atomic.Int32
	delay time.Duration
}

func (p *fakePuller) Pull(ctx context.Context, dest, ref string) error {
	p.calls.Add(1)
	time.Sleep(p.delay)
	if _, err := os.Stat(dest); err == nil {
		return errors.New("dest exists")
	}
	in, err := os.Open(p.src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// sifsIn lists the cached images in dir.
func sifsIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if validName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func buildNamedSIF(t *testing.T, content string) string {
	t.Helper()
	root := siftest.Rootfs(t, map[string]string{"bin/hello": "#!/bin/sh\necho " + content + "\n"})
	return siftest.BuildSIF(t, root)
}

func TestCacheStageSIFTwice(t *testing.T) {
	src := buildTestSIF(t)
	info, err := Inspect(src)
	require.NoError(t, err)

	dir := t.TempDir()
	c, err := NewCache(dir, 0, nil)
	require.NoError(t, err)
	var fills atomic.Int32
	c.onFill = func() { fills.Add(1) }

	ctx := context.Background()
	a, err := c.Stage(ctx, src)
	require.NoError(t, err)
	b, err := c.Stage(ctx, src)
	require.NoError(t, err)
	require.Equal(t, int32(1), fills.Load())
	require.Equal(t, a.Path, b.Path)
	require.Equal(t, filepath.Join(dir, digestName(info.Digest)), a.Path)
	require.Equal(t, info.Digest, a.Digest)
	require.Equal(t, info.ID, a.ID)
	require.Equal(t, info.Size, a.Size)
	require.Equal(t, KindSIF, a.Kind)
	require.Equal(t, []string{digestName(info.Digest)}, sifsIn(t, dir))

	cached, err := Inspect(a.Path)
	require.NoError(t, err)
	require.Equal(t, info.Digest, cached.Digest)
	require.NoError(t, a.Release())
	require.NoError(t, a.Release())
	require.NoError(t, b.Release())

	// A new Cache on the same directory (another pilot) reuses the copy,
	// also when the index is gone.
	require.NoError(t, os.Remove(filepath.Join(dir, ".ref-"+sourceKey(src))))
	c2, err := NewCache(dir, 0, nil)
	require.NoError(t, err)
	c2.onFill = func() { fills.Add(1) }
	s, err := c2.Stage(ctx, src)
	require.NoError(t, err)
	require.Equal(t, a.Path, s.Path)
	require.Equal(t, int32(1), fills.Load())
	require.NoError(t, s.Release())
}

func TestCacheCorruptSIF(t *testing.T) {
	good := buildTestSIF(t)
	for _, how := range []siftest.Corruption{siftest.Truncated, siftest.BadDescriptorCount, siftest.BadPartitionOffset, siftest.HeaderOnly} {
		bad := siftest.Corrupt(t, good, how)
		dir := t.TempDir()
		c, err := NewCache(dir, 0, nil)
		require.NoError(t, err)
		_, err = c.Stage(context.Background(), bad)
		require.ErrorIs(t, err, ErrCorruptSIF)
		require.Contains(t, err.Error(), bad)
		assertOnlyBookkeeping(t, dir)
	}
}

func TestCacheCorruptPull(t *testing.T) {
	bad := siftest.Corrupt(t, buildTestSIF(t), siftest.Truncated)
	dir := t.TempDir()
	c, err := NewCache(dir, 0, &fakePuller{src: bad})
	require.NoError(t, err)
	_, err = c.Stage(context.Background(), "docker://alpine:3")
	require.ErrorIs(t, err, ErrCorruptSIF)
	require.Contains(t, err.Error(), "docker://alpine:3")
	assertOnlyBookkeeping(t, dir)
}

func assertOnlyBookkeeping(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.True(t, strings.HasPrefix(e.Name(), ".lock-") || strings.HasPrefix(e.Name(), ".ref-"),
			"unexpected %s left in the cache", e.Name())
	}
}

func TestCacheStageReference(t *testing.T) {
	src := buildTestSIF(t)
	info, err := Inspect(src)
	require.NoError(t, err)
	p := &fakePuller{src: src}
	dir := t.TempDir()
	c, err := NewCache(dir, 0, p)
	require.NoError(t, err)

	ctx := context.Background()
	a, err := c.Stage(ctx, "oras://example.org/img:1")
	require.NoError(t, err)
	b, err := c.Stage(ctx, "oras://example.org/img:1")
	require.NoError(t, err)
	require.Equal(t, int32(1), p.calls.Load())
	require.Equal(t, a.Path, b.Path)
	require.Equal(t, info.Digest, a.Digest)
	require.Equal(t, KindORAS, a.Kind)
	require.Equal(t, []string{digestName(info.Digest)}, sifsIn(t, dir))
	require.NoError(t, a.Release())
	require.NoError(t, b.Release())

	// No puller: a clear error naming the reference.
	c2, err := NewCache(t.TempDir(), 0, nil)
	require.NoError(t, err)
	_, err = c2.Stage(ctx, "docker://alpine")
	require.ErrorContains(t, err, "docker://alpine")

	// A failing pull names the reference.
	c3, err := NewCache(t.TempDir(), 0, &fakePuller{src: filepath.Join(t.TempDir(), "missing")})
	require.NoError(t, err)
	_, err = c3.Stage(ctx, "library://x/y/z:1")
	require.ErrorContains(t, err, "library://x/y/z:1")
}

func TestCacheConcurrentStage(t *testing.T) {
	src := buildTestSIF(t)
	for name, image := range map[string]string{"sif": src, "ref": "docker://example/img:1"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := &fakePuller{src: src, delay: 20 * time.Millisecond}
			var fills atomic.Int32
			var wg sync.WaitGroup
			paths := make([]string, 8)
			errs := make([]error, 8)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Own Cache: own file descriptors, as separate processes.
					c, err := NewCache(dir, 0, p)
					if err != nil {
						errs[i] = err
						return
					}
					c.onFill = func() { fills.Add(1) }
					s, err := c.Stage(context.Background(), image)
					if err != nil {
						errs[i] = err
						return
					}
					paths[i] = s.Path
					errs[i] = s.Release()
				}()
			}
			wg.Wait()
			for i := range 8 {
				require.NoError(t, errs[i])
				require.Equal(t, paths[0], paths[i])
			}
			require.Equal(t, int32(1), fills.Load())
			if image != src {
				require.Equal(t, int32(1), p.calls.Load())
			}
			require.Len(t, sifsIn(t, dir), 1)
		})
	}
}

func TestCacheLRUEviction(t *testing.T) {
	a := buildNamedSIF(t, "aaaa")
	b := buildNamedSIF(t, "bbbb")
	cc := buildNamedSIF(t, "cccc")
	d := buildNamedSIF(t, "dddd")
	ia, err := Inspect(a)
	require.NoError(t, err)
	dir := t.TempDir()
	c, err := NewCache(dir, ia.Size*5/2, nil) // room for two
	require.NoError(t, err)
	// A clock a second apart per stage: last-use order without sleeping.
	clock := time.Now().Add(-time.Hour)
	c.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	ctx := context.Background()
	stage := func(img string) *Staged {
		t.Helper()
		s, err := c.Stage(ctx, img)
		require.NoError(t, err)
		return s
	}

	sa := stage(a) // oldest, kept in use
	sb := stage(b)
	require.NoError(t, sb.Release())
	sc := stage(cc) // over the bound: b (unused) goes, a (in use) stays
	require.ElementsMatch(t, []string{filepath.Base(sa.Path), filepath.Base(sc.Path)}, sifsIn(t, dir))
	_, err = os.Stat(sa.Path)
	require.NoError(t, err)

	// Another Cache holding c in use (another process): d evicts nothing
	// in use, leaving the cache over its bound.
	c2, err := NewCache(dir, ia.Size*5/2, nil)
	require.NoError(t, err)
	c2.now = c.now
	sc2, err := c2.Stage(ctx, cc)
	require.NoError(t, err)
	require.NoError(t, sc.Release())
	sd := stage(d)
	require.Len(t, sifsIn(t, dir), 3)

	// Released: a is the least recently staged.
	require.NoError(t, sa.Release())
	require.NoError(t, sc2.Release())
	sb = stage(b)
	require.ElementsMatch(t, []string{filepath.Base(sd.Path), filepath.Base(sb.Path)}, sifsIn(t, dir))
	require.NoError(t, sd.Release())
	require.NoError(t, sb.Release())

	// a was evicted: staging it again copies it back.
	sa = stage(a)
	_, err = Inspect(sa.Path)
	require.NoError(t, err)
	require.NoError(t, sa.Release())
}

func TestCacheOversize(t *testing.T) {
	a := buildNamedSIF(t, "aaaa")
	b := buildNamedSIF(t, "bbbb")
	dir := t.TempDir()
	c, err := NewCache(dir, 10, nil)
	require.NoError(t, err)
	sa, err := c.Stage(context.Background(), a)
	require.NoError(t, err)
	require.True(t, sa.Oversize)
	require.NoError(t, sa.Release())
	sb, err := c.Stage(context.Background(), b)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Base(sb.Path)}, sifsIn(t, dir))
	require.NoError(t, sb.Release())
}

func TestCacheSandboxInPlace(t *testing.T) {
	root := siftest.Rootfs(t, map[string]string{"bin/hello": "x"})
	dir := t.TempDir()
	c, err := NewCache(dir, 1, nil)
	require.NoError(t, err)
	s, err := c.Stage(context.Background(), root)
	require.NoError(t, err)
	require.Equal(t, root, s.Path)
	require.Equal(t, KindSandbox, s.Kind)
	require.NoError(t, s.Release())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents)
}

func TestCacheBadImage(t *testing.T) {
	c, err := NewCache(t.TempDir(), 0, nil)
	require.NoError(t, err)
	missing := filepath.Join(t.TempDir(), "nope.sif")
	_, err = c.Stage(context.Background(), missing)
	require.ErrorContains(t, err, missing)
	_, err = c.Stage(context.Background(), "http://x/y")
	require.ErrorIs(t, err, ErrBadRef)
}
