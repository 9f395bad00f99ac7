package workdir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/scalebox-hpc/scalebox/pilot/textcap"
)

// problems collects what was wrong, up to maxProblems lines.
type problems struct {
	list []string
	more int
}

// addf records a problem in file at line (0: the file as a whole).
func (p *problems) addf(file string, line int, format string, args ...any) {
	if len(p.list) >= maxProblems {
		p.more++
		return
	}
	where := file
	if line > 0 {
		where += ":" + strconv.Itoa(line)
	}
	p.list = append(p.list, where+": "+fmt.Sprintf(format, args...))
}

func (p *problems) result() []string {
	if p.more > 0 {
		return append(p.list, fmt.Sprintf("… and %d more problems", p.more))
	}
	return p.list
}

// maxListed is how many entries of a work dir are listed to skip opening
// interface files that are not there; a larger dir is not listed.
const maxListed = 256

// wdir is a work dir being collected.
type wdir struct {
	path  string
	names []string // its entries (non-nil), or nil if not listed
}

// openWorkDir lists small work dirs: most tasks leave few files, and one
// getdents beats a score of failed opens.
func openWorkDir(path string) *wdir {
	w := &wdir{path: path}
	f, err := os.Open(path)
	if err != nil {
		return w
	}
	defer f.Close()
	names, err := f.Readdirnames(maxListed + 1)
	if (err != nil && err != io.EOF) || len(names) > maxListed {
		return w
	}
	if names == nil {
		names = []string{} // listed, empty
	}
	w.names = names
	return w
}

// has says whether name may be in the dir (a few names: a scan beats a map).
func (w *wdir) has(name string) bool { return w.names == nil || slices.Contains(w.names, name) }

// openRegular opens name without blocking (a FIFO would) and only if it
// is a regular file. ok is false when the file is absent or refused (the
// refusal is a problem).
func openRegular(w *wdir, name string, p *problems) (*os.File, int64, bool) {
	if !w.has(name) {
		return nil, 0, false
	}
	f, err := os.OpenFile(filepath.Join(w.path, name), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			p.addf(name, 0, "%v", unwrapPath(err))
		}
		return nil, 0, false
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		p.addf(name, 0, "%v", unwrapPath(err))
		return nil, 0, false
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		p.addf(name, 0, "not a regular file (%s), ignored", st.Mode().Type())
		return nil, 0, false
	}
	return f, st.Size(), true
}

// readFile reads at most limit bytes of dir/name. A longer file is cut at
// its last complete line within the limit, which is a problem.
func readFile(w *wdir, name string, limit int, p *problems) ([]byte, bool) {
	f, _, ok := openRegular(w, name, p)
	if !ok {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		p.addf(name, 0, "%v", unwrapPath(err))
		return nil, false
	}
	if len(data) > limit {
		data = data[:limit]
		if i := strings.LastIndexByte(string(data), '\n'); i >= 0 {
			data = data[:i+1]
		}
		p.addf(name, 0, "larger than %d bytes: only the first %d bytes read", limit, len(data))
	}
	return data, true
}

// readCapped reads the head or the tail of dir/name, at most limit bytes,
// and the file's size.
func readCapped(w *wdir, name string, limit int, keepHead bool, p *problems) ([]byte, int64, bool) {
	f, size, ok := openRegular(w, name, p)
	if !ok {
		return nil, 0, false
	}
	defer f.Close()
	var r io.Reader = f
	if !keepHead && size > int64(limit) {
		r = io.NewSectionReader(f, size-int64(limit), int64(limit))
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)))
	if err != nil {
		p.addf(name, 0, "%v", unwrapPath(err))
		return nil, 0, false
	}
	// A file that grew or has no size (procfs) still reads within limit.
	size = max(size, int64(len(data)))
	return data, size, true
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// customText is the module's free text: the first text file present, then
// task-exec userText/messageText, capped as Scalebox caps stdout.
func customText(w *wdir, opt Options, extra []string, p *problems) string {
	var file []byte
	var size int64
	for _, name := range textFiles {
		var ok bool
		if file, size, ok = readCapped(w, name, opt.OutputCap, opt.KeepHead, p); ok {
			break
		}
	}
	tail := strings.Join(extra, "\n")
	sep := ""
	if size > 0 && tail != "" && (len(file) == 0 || file[len(file)-1] != '\n') {
		sep = "\n"
	}
	total := size + int64(len(sep)+len(tail))
	if total == 0 {
		return ""
	}
	kept := file
	if !opt.KeepHead || int64(len(file)) == size {
		// file+sep+tail is a suffix of the whole (tail mode) or all of it.
		kept = append(append(kept[:len(kept):len(kept)], sep...), tail...)
	}
	return textcap.Truncate(kept, total, opt.OutputCap, opt.KeepHead)
}
