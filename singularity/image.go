package singularity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// Kind is the kind of a base_image.
type Kind int

// Image kinds.
const (
	KindSIF     Kind = iota + 1 // a SIF file
	KindSandbox                 // a directory holding a root file system, used in place
	KindDocker                  // docker://… (pulled and converted by the tool)
	KindORAS                    // oras://… (a SIF in an OCI registry)
	KindLibrary                 // library://… (a Sylabs-style library)
)

func (k Kind) String() string {
	switch k {
	case KindSIF:
		return "sif"
	case KindSandbox:
		return "sandbox"
	case KindDocker:
		return "docker"
	case KindORAS:
		return "oras"
	case KindLibrary:
		return "library"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Remote reports whether images of this kind are pulled by the tool.
func (k Kind) Remote() bool { return k == KindDocker || k == KindORAS || k == KindLibrary }

// Image is a classified base_image.
type Image struct {
	Kind Kind
	Ref  string // as given
	Path string // absolute local path (SIF file or sandbox directory); "" for references
}

// Sentinel errors of image classification and inspection. Errors wrap one
// of them together with the image's path.
var (
	// ErrNotSIF: a file that is not a SIF image (wrong magic, too short).
	ErrNotSIF = errors.New("not a SIF image")
	// ErrCorruptSIF: a SIF whose header, descriptors or data are
	// inconsistent with the file (truncated, bad offsets, bad JSON).
	ErrCorruptSIF = errors.New("corrupt SIF image")
	// ErrNoRootFS: a SIF without a primary system partition in squashfs.
	ErrNoRootFS = errors.New("SIF image has no primary squashfs system partition")
	// ErrWrongArch: a SIF built for another CPU architecture.
	ErrWrongArch = errors.New("SIF image is for another architecture")
	// ErrNotSandbox: a directory that does not hold a root file system.
	ErrNotSandbox = errors.New("directory is not a sandbox image")
	// ErrBadRef: a base_image string that is no supported image reference.
	ErrBadRef = errors.New("unsupported image reference")
)

// ImageError is an image problem, with the image's path or reference.
type ImageError struct {
	Image string
	Err   error
}

func (e *ImageError) Error() string { return fmt.Sprintf("image %s: %v", e.Image, e.Err) }

// Unwrap returns the underlying error (one of the sentinels above, or an
// I/O error).
func (e *ImageError) Unwrap() error { return e.Err }

func imageErr(image string, sentinel error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &ImageError{Image: image, Err: fmt.Errorf("%w: %s", sentinel, msg)}
}

var schemes = map[string]Kind{"docker": KindDocker, "oras": KindORAS, "library": KindLibrary}

// ClassifyImage says what a base_image string is: a docker://, oras:// or
// library:// reference (checked by syntax only), or a local SIF file or
// sandbox directory (checked on disk: the SIF magic, or a directory with
// .singularity.d, bin or usr). "~/" at the start of a path is the user's
// home directory; relative paths are made absolute.
func ClassifyImage(image string) (Image, error) {
	if image == "" {
		return Image{}, &ImageError{Image: `""`, Err: fmt.Errorf("%w: empty base_image", ErrBadRef)}
	}
	if scheme, rest, ok := strings.Cut(image, "://"); ok {
		kind, known := schemes[scheme]
		if !known {
			return Image{}, imageErr(image, ErrBadRef, "scheme %q is not supported: use docker://, oras://, library:// or a path to a .sif file or sandbox directory", scheme+"://")
		}
		if strings.Trim(rest, "/") == "" || strings.IndexFunc(rest, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return Image{}, imageErr(image, ErrBadRef, "reference after %s:// is empty or contains spaces", scheme)
		}
		return Image{Kind: kind, Ref: image}, nil
	}
	path, err := localPath(image)
	if err != nil {
		return Image{}, &ImageError{Image: image, Err: err}
	}
	st, err := os.Stat(path)
	if err != nil {
		return Image{}, &ImageError{Image: path, Err: fmt.Errorf("%w (base_image must be a .sif file, a sandbox directory, or a docker://, oras:// or library:// reference)", err)}
	}
	if st.IsDir() {
		for _, probe := range []string{".singularity.d", "bin", "usr"} {
			if _, err := os.Lstat(filepath.Join(path, probe)); err == nil {
				return Image{Kind: KindSandbox, Ref: image, Path: path}, nil
			}
		}
		return Image{}, imageErr(path, ErrNotSandbox, "no .singularity.d, bin or usr inside: build a sandbox with \"apptainer build --sandbox\" or give a .sif file")
	}
	if !st.Mode().IsRegular() {
		return Image{}, imageErr(path, ErrNotSIF, "not a regular file (%s)", st.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return Image{}, &ImageError{Image: path, Err: err}
	}
	defer f.Close()
	if err := checkMagic(f, path); err != nil {
		return Image{}, err
	}
	return Image{Kind: KindSIF, Ref: image, Path: path}, nil
}

// localPath expands a leading "~/" and makes path absolute.
func localPath(path string) (string, error) {
	if path == "~" || strings.HasPrefix(path, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("expand ~ in %s: %w", path, err)
		}
		path = filepath.Join(home, strings.TrimPrefix(path, "~"))
	}
	return filepath.Abs(path)
}

const (
	sifHeaderSize = 128 // launch script 32, magic 10, version 3, arch 3, uuid 16, 8 int64
	magicOffset   = 32
)

var sifMagic = []byte("SIF_MAGIC\x00")

// checkMagic reads the start of a file and returns ErrNotSIF unless it
// carries the SIF magic, with a hint for the usual look-alikes.
func checkMagic(r io.ReaderAt, path string) error {
	var head [sifHeaderSize]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return &ImageError{Image: path, Err: err}
	}
	if n >= magicOffset+len(sifMagic) && bytes.Equal(head[magicOffset:magicOffset+len(sifMagic)], sifMagic) {
		if n < sifHeaderSize {
			return imageErr(path, ErrCorruptSIF, "truncated: %d bytes, a SIF header has %d", n, sifHeaderSize)
		}
		return nil
	}
	hint := ""
	switch {
	case n >= 4 && string(head[:4]) == "hsqs":
		hint = " (a bare squashfs image: wrap it in a SIF, e.g. with \"apptainer build image.sif squashfs.img\")"
	case n >= 4 && string(head[:4]) == "\x7fELF":
		hint = " (an executable)"
	}
	return imageErr(path, ErrNotSIF, "no SIF magic in the first %d bytes%s", n, hint)
}
