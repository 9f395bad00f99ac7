package singularity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

const testUUID = "3b1a8f4e-6c2d-4e8f-9a0b-1c2d3e4f5a6b"

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func buildTestSIF(t *testing.T, opts ...siftest.Option) string {
	t.Helper()
	root := siftest.Rootfs(t, map[string]string{"bin/hello": "#!/bin/sh\necho hi\n"})
	return siftest.BuildSIF(t, root, opts...)
}

func TestInspectValid(t *testing.T) {
	labels := map[string]string{"app": "primes", "version": "1.0"}
	def := "Bootstrap: docker\nFrom: alpine\n"
	path := buildTestSIF(t, siftest.WithLabels(labels), siftest.WithDeffile(def), siftest.WithID(testUUID))

	img, err := Inspect(path)
	require.NoError(t, err)
	require.Equal(t, path, img.Path)
	require.Equal(t, testUUID, img.ID)
	require.Equal(t, runtime.GOARCH, img.Arch)
	require.Equal(t, labels, img.Labels)
	require.Equal(t, def, img.Deffile)
	require.Regexp(t, digestRE, img.Digest)

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), img.Digest)
	require.Equal(t, int64(len(b)), img.Size)
	require.Equal(t, int64(1700000000), img.Created.Unix())

	// The root file system is where sif/v2 says, and starts with squashfs.
	fi, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	require.NoError(t, err)
	d, err := fi.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
	require.NoError(t, err)
	require.NoError(t, fi.UnloadContainer())
	require.Equal(t, Partition{Offset: d.Offset(), Size: d.Size(), FS: "squashfs"}, img.RootFS)
	require.Greater(t, img.RootFS.Offset, int64(0))
	require.Greater(t, img.RootFS.Size, int64(96))
	require.Equal(t, "hsqs", string(b[img.RootFS.Offset:img.RootFS.Offset+4]))
}

func TestInspectDefaults(t *testing.T) {
	img, err := Inspect(buildTestSIF(t))
	require.NoError(t, err)
	require.Nil(t, img.Labels)
	require.Equal(t, "Bootstrap: scratch\n", img.Deffile)
	require.NotEmpty(t, img.ID)
}

func TestInspectNoDeffileNoLabels(t *testing.T) {
	img, err := Inspect(buildTestSIF(t, siftest.WithDeffile("")))
	require.NoError(t, err)
	require.Nil(t, img.Labels)
	require.Empty(t, img.Deffile)
}

func TestClassifyImage(t *testing.T) {
	sifPath := buildTestSIF(t)
	img, err := ClassifyImage(sifPath)
	require.NoError(t, err)
	require.Equal(t, Image{Kind: KindSIF, Ref: sifPath, Path: sifPath}, img)

	sandbox := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(sandbox, "bin"), 0o755))
	img, err = ClassifyImage(sandbox)
	require.NoError(t, err)
	require.Equal(t, Image{Kind: KindSandbox, Ref: sandbox, Path: sandbox}, img)

	for ref, kind := range map[string]Kind{
		"docker://alpine":                 KindDocker,
		"docker://ghcr.io/x/y:1.0":        KindDocker,
		"oras://ghcr.io/x/y:1.0":          KindORAS,
		"library://sylabs/default/alpine": KindLibrary,
	} {
		img, err := ClassifyImage(ref)
		require.NoError(t, err, ref)
		require.Equal(t, Image{Kind: kind, Ref: ref}, img)
		require.True(t, img.Kind.Remote())
	}
	require.False(t, KindSIF.Remote())
	require.False(t, KindSandbox.Remote())

	for _, ref := range []string{"", "foo://x", "docker://", "docker:///", "docker://a b"} {
		_, err := ClassifyImage(ref)
		require.ErrorIs(t, err, ErrBadRef, "%q", ref)
		var ie *ImageError
		require.True(t, errors.As(err, &ie), "%q", ref)
	}

	text := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(text, []byte("just some text, long enough to cover a SIF header? no.\n"), 0o644))
	_, err = ClassifyImage(text)
	require.ErrorIs(t, err, ErrNotSIF)

	squash := filepath.Join(t.TempDir(), "rootfs.sqfs")
	require.NoError(t, os.WriteFile(squash, []byte("hsqs and then some bytes"), 0o644))
	_, err = ClassifyImage(squash)
	require.ErrorIs(t, err, ErrNotSIF)
	require.ErrorContains(t, err, "bare squashfs")

	_, err = ClassifyImage(t.TempDir()) // empty directory
	require.ErrorIs(t, err, ErrNotSandbox)

	_, err = ClassifyImage(filepath.Join(t.TempDir(), "missing.sif"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = ClassifyImage(siftest.Corrupt(t, sifPath, siftest.HeaderOnly))
	require.ErrorIs(t, err, ErrCorruptSIF)
}

func TestKindString(t *testing.T) {
	require.Equal(t, "sif", KindSIF.String())
	require.Equal(t, "sandbox", KindSandbox.String())
	require.Equal(t, "docker", KindDocker.String())
	require.Equal(t, "oras", KindORAS.String())
	require.Equal(t, "library", KindLibrary.String())
	require.Equal(t, "Kind(0)", Kind(0).String())
}

func TestInspectCorrupt(t *testing.T) {
	good := buildTestSIF(t, siftest.WithLabels(map[string]string{"a": "b"}))
	tests := []struct {
		how  siftest.Corruption
		name string
		want error
	}{
		{siftest.Truncated, "Truncated", ErrCorruptSIF},
		{siftest.BadMagic, "BadMagic", ErrNotSIF}, // no magic: not a SIF at all
		{siftest.BadDescriptorCount, "BadDescriptorCount", ErrCorruptSIF},
		{siftest.BadPartitionOffset, "BadPartitionOffset", ErrCorruptSIF},
		{siftest.BadSquashfs, "BadSquashfs", ErrCorruptSIF},
		{siftest.HeaderOnly, "HeaderOnly", ErrCorruptSIF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := siftest.Corrupt(t, good, tt.how)
			var img *SIF
			var err error
			require.NotPanics(t, func() { img, err = Inspect(bad) })
			require.Nil(t, img)
			require.ErrorIs(t, err, tt.want)
			var ie *ImageError
			require.True(t, errors.As(err, &ie))
			require.Equal(t, bad, ie.Image)
		})
	}
}

func TestInspectWrongArch(t *testing.T) {
	_, err := Inspect(buildTestSIF(t, siftest.WithArch(siftest.OtherArch())))
	require.ErrorIs(t, err, ErrWrongArch)
	require.ErrorContains(t, err, siftest.OtherArch())
}

func TestInspectNoRootFS(t *testing.T) {
	_, err := Inspect(buildTestSIF(t, siftest.WithPartition(sif.FsRaw, sif.PartPrimSys)))
	require.ErrorIs(t, err, ErrNoRootFS)

	_, err = Inspect(buildTestSIF(t, siftest.WithPartition(sif.FsSquash, sif.PartSystem)))
	require.ErrorIs(t, err, ErrNoRootFS)
}

func TestInspectNotSIF(t *testing.T) {
	text := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(text, []byte("hello\n"), 0o644))
	_, err := Inspect(text)
	require.ErrorIs(t, err, ErrNotSIF)

	_, err = Inspect(t.TempDir())
	require.ErrorIs(t, err, ErrNotSIF)

	_, err = Inspect(filepath.Join(t.TempDir(), "missing.sif"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func FuzzInspect(f *testing.F) {
	root := siftest.Rootfs(f, map[string]string{"bin/hello": "#!/bin/sh\necho hi\n"})
	valid, err := os.ReadFile(siftest.BuildSIF(f, root, siftest.WithLabels(map[string]string{"a": "b"})))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:100])
	f.Add(valid[:len(valid)/2])
	f.Add([]byte("hello"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.sif")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := Inspect(path)
		if err != nil {
			if img != nil {
				t.Fatalf("Inspect returned an image and an error: %v", err)
			}
			var ie *ImageError
			if !errors.As(err, &ie) {
				t.Fatalf("error is not an *ImageError: %v", err)
			}
			return
		}
		if !digestRE.MatchString(img.Digest) {
			t.Fatalf("bad digest %q", img.Digest)
		}
		if img.RootFS.Offset < 0 || img.RootFS.Size <= 0 || img.RootFS.Offset+img.RootFS.Size > int64(len(data)) {
			t.Fatalf("root fs %+v outside a %d-byte file", img.RootFS, len(data))
		}
	})
}
