package singularity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// SIF is what Inspect found in a SIF image.
type SIF struct {
	Path    string
	ID      string    // the image's UUID
	Created time.Time // from the header
	Size    int64     // bytes
	Digest  string    // "sha256:<hex>" of the whole file
	Arch    string    // GOARCH of the primary partition ("amd64", "arm64", …)
	RootFS  Partition // the primary system partition
	// Labels are the image's labels: a JSON labels object (a JSON.Labels
	// descriptor) or, as Apptainer writes them, the labels of the
	// "inspect-metadata.json" descriptor. nil when the image has none.
	Labels map[string]string
	// Deffile is the definition file the image was built from, "" if none.
	Deffile string
}

// Partition is a SIF data object holding a file system.
type Partition struct {
	Offset int64  // from the start of the file
	Size   int64  // bytes
	FS     string // "squashfs"
}

const (
	descriptorSize = 585     // on-disk size of one SIF descriptor
	maxDescriptors = 1 << 16 // far above sif/v2's default capacity of 48
	maxMetadata    = 16 << 20
	squashfsMagic  = "hsqs"
	// inspectMetadataName is the JSON descriptor Apptainer (and Singularity
	// since 3.7) writes with the image's labels, scripts and definition file.
	inspectMetadataName = "inspect-metadata.json"
)

// Inspect opens and checks a SIF file before use: the header and the
// descriptors must be consistent with the file's size, the primary system
// partition must be squashfs and built for this machine (runtime.GOARCH).
// It returns the image's ID, partition, labels, definition file and the
// sha256 of the whole file. A file that is not a SIF fails with ErrNotSIF,
// a damaged one with ErrCorruptSIF, one without a squashfs root file
// system with ErrNoRootFS, one for another CPU with ErrWrongArch; errors
// are *ImageError values naming the path.
func Inspect(path string) (*SIF, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ImageError{Image: path, Err: err}
	}
	defer f.Close()
	img, err := inspectFile(f, path)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, img.Size)); err != nil {
		return nil, &ImageError{Image: path, Err: fmt.Errorf("read for digest: %w", err)}
	}
	img.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return img, nil
}

// header is the fixed part of a SIF global header, read by hand so that
// absurd values are refused before sif/v2 allocates anything.
type header struct {
	version                              string
	descTotal, descOff, descSize         int64
	dataOff, dataSize, created, modified int64
}

func readHeader(r io.ReaderAt, size int64, path string) (header, error) {
	if err := checkMagic(r, path); err != nil {
		return header{}, err
	}
	var b [sifHeaderSize]byte
	if _, err := r.ReadAt(b[:], 0); err != nil {
		return header{}, &ImageError{Image: path, Err: err}
	}
	le := binary.LittleEndian
	i64 := func(off int) int64 { return int64(le.Uint64(b[off : off+8])) }
	h := header{
		version:   string(bytes.TrimRight(b[42:45], "\x00")),
		created:   i64(64),
		modified:  i64(72),
		descTotal: i64(88),
		descOff:   i64(96),
		descSize:  i64(104),
		dataOff:   i64(112),
		dataSize:  i64(120),
	}
	if h.version != sif.CurrentVersion.String() {
		return h, imageErr(path, ErrCorruptSIF, "SIF format version %q is not supported (this build reads version %s)", h.version, sif.CurrentVersion)
	}
	if h.descTotal <= 0 || h.descTotal > maxDescriptors {
		return h, imageErr(path, ErrCorruptSIF, "header says %d descriptors", h.descTotal)
	}
	if h.descSize != h.descTotal*descriptorSize {
		return h, imageErr(path, ErrCorruptSIF, "header says %d descriptors in %d bytes, expected %d bytes", h.descTotal, h.descSize, h.descTotal*descriptorSize)
	}
	if !within(h.descOff, h.descSize, size) || h.descOff < sifHeaderSize {
		return h, imageErr(path, ErrCorruptSIF, "descriptors at bytes %d+%d lie outside the file (%d bytes): truncated?", h.descOff, h.descSize, size)
	}
	if !within(h.dataOff, h.dataSize, size) {
		return h, imageErr(path, ErrCorruptSIF, "data at bytes %d+%d lies outside the file (%d bytes): truncated?", h.dataOff, h.dataSize, size)
	}
	return h, nil
}

// within reports whether [off, off+n) lies inside a file of size bytes.
func within(off, n, size int64) bool {
	return off >= 0 && n >= 0 && off <= size && n <= size-off
}

// inspectFile checks the structure of an open SIF file; it leaves Digest
// empty.
func inspectFile(f *os.File, path string) (img *SIF, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, &ImageError{Image: path, Err: err}
	}
	if !st.Mode().IsRegular() {
		return nil, imageErr(path, ErrNotSIF, "not a regular file (%s)", st.Mode().Type())
	}
	size := st.Size()
	h, err := readHeader(f, size, path)
	if err != nil {
		return nil, err
	}
	// sif/v2 trusts the file; the checks above and below keep it in
	// bounds, and this keeps a bug or an unforeseen corruption from
	// crashing a pilot.
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, imageErr(path, ErrCorruptSIF, "unreadable: %v", r)
		}
	}()
	fi, err := sif.LoadContainer(readOnly{f}, sif.OptLoadWithCloseOnUnload(false))
	if err != nil {
		return nil, imageErr(path, ErrCorruptSIF, "load: %v", err)
	}
	defer func() { _ = fi.UnloadContainer() }()

	img = &SIF{Path: path, ID: fi.ID(), Size: size, Created: time.Unix(h.created, 0).UTC()}
	ds, err := fi.GetDescriptors()
	if errors.Is(err, sif.ErrNoObjects) {
		return nil, imageErr(path, ErrNoRootFS, "the image holds no data objects")
	}
	if err != nil {
		return nil, imageErr(path, ErrCorruptSIF, "descriptors: %v", err)
	}
	var prim []sif.Descriptor
	var labels, deffile, metadata *sif.Descriptor
	for i, d := range ds {
		if !within(d.Offset(), d.Size(), size) {
			return nil, imageErr(path, ErrCorruptSIF, "object %d (%s) at bytes %d+%d lies outside the file (%d bytes): truncated?", d.ID(), d.DataType(), d.Offset(), d.Size(), size)
		}
		switch d.DataType() {
		case sif.DataPartition:
			_, pt, _, err := d.PartitionMetadata()
			if err != nil {
				return nil, imageErr(path, ErrCorruptSIF, "partition object %d: %v", d.ID(), err)
			}
			if pt == sif.PartPrimSys {
				prim = append(prim, d)
			}
		case sif.DataLabels:
			labels = &ds[i]
		case sif.DataDeffile:
			deffile = &ds[i]
		case sif.DataGenericJSON:
			if d.Name() == inspectMetadataName {
				metadata = &ds[i]
			}
		}
	}
	switch len(prim) {
	case 0:
		return nil, imageErr(path, ErrNoRootFS, "no object is the primary system partition: rebuild the image with apptainer build")
	case 1:
	default:
		return nil, imageErr(path, ErrCorruptSIF, "%d objects claim to be the primary system partition", len(prim))
	}
	p := prim[0]
	fs, _, arch, _ := p.PartitionMetadata()
	if fs != sif.FsSquash {
		return nil, imageErr(path, ErrNoRootFS, "the primary partition is %s, not squashfs (encrypted and ext3 images are not supported)", fs)
	}
	if err := checkSquashfs(f, p); err != nil {
		return nil, imageErr(path, ErrCorruptSIF, "primary partition at bytes %d+%d: %v", p.Offset(), p.Size(), err)
	}
	img.RootFS = Partition{Offset: p.Offset(), Size: p.Size(), FS: "squashfs"}
	img.Arch = arch
	if arch != runtime.GOARCH {
		return nil, imageErr(path, ErrWrongArch, "built for %s, this machine is %s: use an image built for %s", arch, runtime.GOARCH, runtime.GOARCH)
	}

	if labels != nil {
		b, err := readObject(*labels)
		if err == nil {
			err = json.Unmarshal(b, &img.Labels)
		}
		if err != nil {
			return nil, imageErr(path, ErrCorruptSIF, "labels object %d is not a JSON object of strings: %v", labels.ID(), err)
		}
	}
	if deffile != nil {
		b, err := readObject(*deffile)
		if err != nil {
			return nil, imageErr(path, ErrCorruptSIF, "definition file object %d: %v", deffile.ID(), err)
		}
		img.Deffile = string(b)
	}
	if metadata != nil && (img.Labels == nil || img.Deffile == "") {
		b, err := readObject(*metadata)
		var md struct {
			Data struct {
				Attributes struct {
					Labels  map[string]string `json:"labels"`
					Deffile string            `json:"deffile"`
				} `json:"attributes"`
			} `json:"data"`
		}
		if err == nil {
			err = json.Unmarshal(b, &md)
		}
		if err != nil {
			return nil, imageErr(path, ErrCorruptSIF, "%s object %d: %v", inspectMetadataName, metadata.ID(), err)
		}
		if img.Labels == nil && len(md.Data.Attributes.Labels) > 0 {
			img.Labels = md.Data.Attributes.Labels
		}
		if img.Deffile == "" {
			img.Deffile = md.Data.Attributes.Deffile
		}
	}
	return img, nil
}

// readObject reads a small data object.
func readObject(d sif.Descriptor) ([]byte, error) {
	if d.Size() > maxMetadata {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed for metadata", d.Size(), maxMetadata)
	}
	return d.GetData()
}

// checkSquashfs checks the squashfs superblock at the start of a partition:
// magic, major version 4, and a size that fits the partition.
func checkSquashfs(r io.ReaderAt, p sif.Descriptor) error {
	var sb [96]byte
	if p.Size() < int64(len(sb)) {
		return fmt.Errorf("%d bytes, too small for a squashfs superblock", p.Size())
	}
	if _, err := r.ReadAt(sb[:], p.Offset()); err != nil {
		return fmt.Errorf("read squashfs superblock: %w", err)
	}
	if string(sb[:4]) != squashfsMagic {
		return fmt.Errorf("no squashfs magic (found %q)", sb[:4])
	}
	le := binary.LittleEndian
	if major := le.Uint16(sb[28:30]); major != 4 {
		return fmt.Errorf("squashfs version %d, want 4", major)
	}
	if used := le.Uint64(sb[40:48]); used > uint64(p.Size()) {
		return fmt.Errorf("squashfs says it uses %d bytes, the partition has %d", used, p.Size())
	}
	return nil
}

// readOnly gives an *os.File opened for reading the sif.ReadWriter shape;
// the writing methods fail.
type readOnly struct{ f *os.File }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r readOnly) Write([]byte) (int, error)               { return 0, errReadOnly }
func (r readOnly) Seek(off int64, whence int) (int64, error) {
	return r.f.Seek(off, whence)
}
func (r readOnly) Truncate(int64) error { return errReadOnly }

var errReadOnly = errors.New("SIF opened read-only")
