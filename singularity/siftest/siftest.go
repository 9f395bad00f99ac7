// Package siftest builds real SIF images for tests: Debian's mksquashfs
// packs a root file system directory into squashfs, and sif/v2 wraps it
// in a SIF with a definition file, labels and a primary system partition
// (FsSquash, PartPrimSys, the architecture), laid out as "apptainer build"
// lays it out, so real Apptainer and SingularityCE run these images.
//
// Tests that call BuildSIF need mksquashfs (Debian package squashfs-tools);
// without it they are skipped with a message naming the tool.
//
//	root := siftest.Rootfs(t, map[string]string{"bin/hello": "#!/bin/sh\necho hi\n"})
//	img := siftest.BuildSIF(t, root, siftest.WithLabels(map[string]string{"app": "primes"}))
//	bad := siftest.Corrupt(t, img, siftest.Truncated)
package siftest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
)

type options struct {
	path    string
	labels  map[string]string
	deffile string
	arch    string
	fs      sif.FSType
	part    sif.PartType
	id      string
	created time.Time
}

// Option changes how BuildSIF builds an image.
type Option func(*options)

// WithPath writes the image to path instead of a file in t.TempDir().
func WithPath(path string) Option { return func(o *options) { o.path = path } }

// WithLabels stores labels as a JSON labels object and, as Apptainer does,
// in the "inspect-metadata.json" descriptor.
func WithLabels(labels map[string]string) Option {
	return func(o *options) { o.labels = labels }
}

// WithDeffile stores a definition file.
func WithDeffile(text string) Option { return func(o *options) { o.deffile = text } }

// WithArch marks the partition as built for a GOARCH ("amd64", "arm64"…)
// other than runtime.GOARCH.
func WithArch(goarch string) Option { return func(o *options) { o.arch = goarch } }

// OtherArch is an architecture that is not runtime.GOARCH, for
// wrong-architecture images.
func OtherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// WithPartition sets the file system and partition type of the root file
// system object, e.g. (sif.FsSquash, sif.PartSystem) for an image without
// a primary partition, or (sif.FsRaw, sif.PartPrimSys) for one whose
// primary partition is not squashfs.
func WithPartition(fs sif.FSType, pt sif.PartType) Option {
	return func(o *options) { o.fs, o.part = fs, pt }
}

// WithID sets the image's UUID; the default is deterministic per call.
func WithID(uuid string) Option { return func(o *options) { o.id = uuid } }

// Rootfs makes a root file system directory in t.TempDir() holding files
// (path relative to the root → content; paths under bin/ are executable)
// plus the empty directories Apptainer binds onto (dev, proc, sys, tmp,
// etc). It returns the directory.
func Rootfs(t testing.TB, files map[string]string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "root", "home", "work", "local_data_root", "cluster_data_root", "app/bin", ".singularity.d/env", ".singularity.d/actions", ".singularity.d/libs"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatalf("siftest: rootfs: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatalf("siftest: rootfs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		t.Fatalf("siftest: rootfs: %v", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("siftest: rootfs: %v", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") || strings.HasPrefix(name, "app/bin/") || strings.HasPrefix(name, "usr/bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(files[name]), mode); err != nil {
			t.Fatalf("siftest: rootfs: %v", err)
		}
	}
	return root
}

// Mksquashfs returns the path of Debian's mksquashfs, or skips the test.
func Mksquashfs(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("mksquashfs")
	if err != nil {
		t.Skip("siftest: mksquashfs not found: apt-get install squashfs-tools")
	}
	return p
}

// Squashfs packs rootfsDir into a squashfs file (gzip, root-owned files,
// reproducible timestamps) and returns its path.
func Squashfs(t testing.TB, rootfsDir string) string {
	t.Helper()
	bin := Mksquashfs(t)
	out := filepath.Join(t.TempDir(), "rootfs.squashfs")
	cmd := exec.Command(bin, rootfsDir, out, "-noappend", "-all-root", "-comp", "gzip",
		"-no-progress", "-quiet", "-mkfs-time", "0", "-all-time", "0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("siftest: mksquashfs %s: %v\n%s", rootfsDir, err, b)
	}
	return out
}

// BuildSIF packs rootfsDir into a SIF image and returns the image's path.
// By default the image has a definition file, no labels, and a primary
// squashfs system partition for runtime.GOARCH.
func BuildSIF(t testing.TB, rootfsDir string, opts ...Option) string {
	t.Helper()
	o := newOptions(opts)
	if o.path == "" {
		o.path = filepath.Join(t.TempDir(), "image.sif")
	}
	squash := Squashfs(t, rootfsDir)
	if err := write(o.path, squash, o); err != nil {
		t.Fatalf("siftest: %v", err)
	}
	return o.path
}

func newOptions(opts []Option) options {
	o := options{
		deffile: "Bootstrap: scratch\n",
		arch:    runtime.GOARCH,
		fs:      sif.FsSquash,
		part:    sif.PartPrimSys,
		created: time.Unix(1700000000, 0),
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// idFor derives a stable UUID from a path, so that images are reproducible.
func idFor(path string) string {
	var h [16]byte
	for i, c := range []byte(path) {
		h[i%16] ^= c + byte(i)
	}
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Write builds a SIF at path from an existing squashfs file (see
// Squashfs), with the same defaults and options as BuildSIF (WithPath is
// ignored). It is for callers that make many images from one squashfs.
func Write(path, squashfsFile string, opts ...Option) error {
	return write(path, squashfsFile, newOptions(opts))
}

func write(path, squashfsFile string, o options) error {
	if o.id == "" {
		o.id = idFor(path)
	}
	var dis []sif.DescriptorInput
	add := func(t sif.DataType, data []byte, opts ...sif.DescriptorInputOpt) error {
		di, err := sif.NewDescriptorInput(t, bytes.NewReader(data), opts...)
		if err != nil {
			return fmt.Errorf("descriptor %s: %w", t, err)
		}
		dis = append(dis, di)
		return nil
	}
	if o.deffile != "" {
		if err := add(sif.DataDeffile, []byte(o.deffile)); err != nil {
			return err
		}
	}
	if o.labels != nil {
		b, err := json.Marshal(o.labels)
		if err != nil {
			return err
		}
		if err := add(sif.DataLabels, b); err != nil {
			return err
		}
	}
	if o.labels != nil || o.deffile != "" {
		md := map[string]any{
			"type": "container",
			"data": map[string]any{"attributes": map[string]any{"labels": o.labels, "deffile": o.deffile}},
		}
		b, err := json.Marshal(md)
		if err != nil {
			return err
		}
		if err := add(sif.DataGenericJSON, b, sif.OptObjectName("inspect-metadata.json")); err != nil {
			return err
		}
	}
	squash, err := os.ReadFile(squashfsFile)
	if err != nil {
		return err
	}
	if err := add(sif.DataPartition, squash, sif.OptPartitionMetadata(o.fs, o.part, o.arch)); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path)
	fi, err := sif.CreateContainerAtPath(path,
		sif.OptCreateWithDescriptors(dis...),
		sif.OptCreateWithID(o.id),
		sif.OptCreateWithTime(o.created),
		sif.OptCreateWithLaunchScript("#!/usr/bin/env run-singularity\n"),
	)
	if err != nil {
		return fmt.Errorf("create SIF %s: %w", path, err)
	}
	if err := fi.UnloadContainer(); err != nil {
		return fmt.Errorf("close SIF %s: %w", path, err)
	}
	return nil
}

// Corruption is a way to damage a SIF image.
type Corruption int

// Corruptions.
const (
	// Truncated cuts the file in the middle of its root file system.
	Truncated Corruption = iota + 1
	// BadMagic overwrites the SIF magic: the file is no longer a SIF.
	BadMagic
	// BadDescriptorCount makes the header claim a huge number of descriptors.
	BadDescriptorCount
	// BadPartitionOffset points the root file system object past the end
	// of the file.
	BadPartitionOffset
	// BadSquashfs overwrites the squashfs magic of the root file system.
	BadSquashfs
	// HeaderOnly keeps only the first 100 bytes.
	HeaderOnly
)

// Corrupt copies the SIF at src into t.TempDir(), damages the copy as how
// says, and returns the copy's path.
func Corrupt(t testing.TB, src string, how Corruption) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("siftest: corrupt: %v", err)
	}
	fi, err := sif.LoadContainer(sif.NewBuffer(append([]byte(nil), b...)))
	if err != nil {
		t.Fatalf("siftest: corrupt: %s is not a SIF: %v", src, err)
	}
	part, err := fi.GetDescriptor(sif.WithDataType(sif.DataPartition))
	if err != nil {
		t.Fatalf("siftest: corrupt: %s has no partition: %v", src, err)
	}
	le := binary.LittleEndian
	switch how {
	case Truncated:
		b = b[:part.Offset()+part.Size()/2]
	case BadMagic:
		copy(b[32:42], "NOT_A_SIF\x00")
	case BadDescriptorCount:
		le.PutUint64(b[88:96], 1<<40)
	case BadPartitionOffset:
		// Descriptors start at DescriptorsOffset (header bytes 96..104);
		// each is 585 bytes with Offset at byte 17 (after DataType 4,
		// Used 1, ID 4, GroupID 4, LinkedID 4).
		descOff := int64(le.Uint64(b[96:104]))
		idx := int64(part.ID() - 1)
		at := descOff + idx*585 + 17
		le.PutUint64(b[at:at+8], uint64(len(b))+4096)
	case BadSquashfs:
		copy(b[part.Offset():part.Offset()+4], "xxxx")
	case HeaderOnly:
		b = b[:100]
	default:
		t.Fatalf("siftest: corrupt: unknown corruption %d", how)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatalf("siftest: corrupt: %v", err)
	}
	return out
}
