package workdir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// fileEntry is one "<path>[,<bytes>]" entry.
type fileEntry struct {
	path     string
	bytes    int64
	hasBytes bool
	line     int // in its list file; 0 for task-exec entries
}

// parseFileEntry splits "<path>[,<bytes>]": a trailing ",<digits>" is the
// byte count, anything else belongs to the path (which may hold commas).
func parseFileEntry(s string) (fileEntry, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return fileEntry{}, false
	}
	if i := strings.LastIndexByte(s, ','); i >= 0 {
		num := strings.TrimSpace(s[i+1:])
		if num != "" && allDigits(num) {
			if n, err := strconv.ParseInt(num, 10, 64); err == nil {
				if path := strings.TrimSpace(s[:i]); path != "" {
					return fileEntry{path: path, bytes: n, hasBytes: true}, true
				}
			}
		}
	}
	return fileEntry{path: s}, true
}

// maxEntries bounds the entries read from one file list.
const maxEntries = 100_000

// parseFileList parses input-files.txt, output-files.txt and
// removed-files.txt: one entry per line, blank lines and "#" comments
// skipped.
func parseFileList(data []byte, name string, p *problems) []fileEntry {
	var out []fileEntry
	skipped := 0
	eachLine(data, func(n int, line string) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			return
		}
		if len(out) >= maxEntries {
			skipped++
			return
		}
		if e, ok := parseFileEntry(line); ok {
			e.line = n
			out = append(out, e)
		}
	})
	if skipped > 0 {
		p.addf(name, 0, "more than %d entries: %d ignored", maxEntries, skipped)
	}
	return out
}

// I/O classes of Scalebox's extras.iobytes.
const (
	ioGlobal = "global"
	ioTmpfs  = "tmpfs"
	ioLocal  = "local"
	shmDir   = "/dev/shm"

	maxWalk = 1_000_000 // directory entries walked per Collect, for listed directories
)

// ioAccount sums the bytes of listed files by direction and class.
type ioAccount struct {
	dir               string
	global            []string
	inBytes, outBytes int64
	inFiles, outFiles []string
	seen              map[string]bool // "in:"/"out:" + clean path
	class             map[string]int64
	reported          bool
	walkLeft          int // directory entries the walks may still visit
}

func newIOAccount(dir string, opt Options) *ioAccount {
	a := &ioAccount{dir: dir, walkLeft: maxWalk}
	for _, g := range append([]string{opt.ClusterDataRoot}, opt.GlobalDirs...) {
		if g = strings.TrimSpace(g); g != "" {
			a.global = append(a.global, filepath.Clean(g))
		}
	}
	return a
}

func (a *ioAccount) abs(path string) string {
	if !filepath.IsAbs(path) {
		path = filepath.Join(a.dir, path)
	}
	return filepath.Clean(path)
}

func (a *ioAccount) classOf(abs string) string {
	for _, g := range a.global {
		if under(abs, g) {
			return ioGlobal
		}
	}
	if under(abs, shmDir) {
		return ioTmpfs
	}
	return ioLocal
}

func under(path, root string) bool {
	return root == "/" || path == root || strings.HasPrefix(path, root+"/")
}

// add accounts one file; count says whether its bytes go into the total.
func (a *ioAccount) add(e fileEntry, input, count bool, name string, p *problems) {
	a.reported = true
	abs := a.abs(e.path)
	dirn, key := "output", "out:"+abs
	if input {
		dirn, key = "input", "in:"+abs
	}
	if a.seen[key] {
		return
	}
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	a.seen[key] = true
	if input {
		a.inFiles = append(a.inFiles, e.path)
	} else {
		a.outFiles = append(a.outFiles, e.path)
	}
	if !count {
		return
	}
	n := e.bytes
	if !e.hasBytes {
		var err error
		if n, err = sizeOf(abs, &a.walkLeft); err != nil {
			p.addf(name, e.line, "%s file %s: %v", dirn, e.path, err)
			return
		}
	}
	if a.class == nil {
		a.class = map[string]int64{}
	}
	a.class[a.classOf(abs)+"_"+dirn] += n
	if input {
		a.inBytes += n
	} else {
		a.outBytes += n
	}
}

func (a *ioAccount) addList(es []fileEntry, input bool, p *problems) {
	name := OutputFilesTxt
	if input {
		name = InputFilesTxt
	}
	for _, e := range es {
		a.add(e, input, true, name, p)
	}
}

// addTaskExec adds task-exec's counts and files. Its inputBytes (or
// outputBytes), when given, is the count for its own file list, whose
// files are then listed but not measured.
func (a *ioAccount) addTaskExec(te *taskExec, p *problems) {
	name := TaskExecJSON
	for _, d := range []struct {
		input bool
		n     *int64
		files []fileEntry
	}{{true, te.inputBytes, te.inputFiles}, {false, te.outputBytes, te.outputFiles}} {
		for _, e := range d.files {
			a.add(e, d.input, d.n == nil, name, p)
		}
		if d.n != nil {
			a.reported = true
			if d.input {
				a.inBytes += *d.n
			} else {
				a.outBytes += *d.n
			}
		}
	}
}

// result is extras.iobytes, nil when nothing was reported.
func (a *ioAccount) result() map[string]int64 {
	if !a.reported {
		return nil
	}
	m := map[string]int64{"input_bytes": a.inBytes, "output_bytes": a.outBytes}
	for _, c := range []string{ioGlobal, ioTmpfs, ioLocal} {
		m[c+"_input"] = a.class[c+"_input"]
		m[c+"_output"] = a.class[c+"_output"]
	}
	return m
}

// sizeOf is a file's size, or the sum of the regular files under a
// directory, walking at most *budget entries.
func sizeOf(path string, budget *int) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, unwrapPath(err)
	}
	if !st.IsDir() {
		return st.Size(), nil
	}
	var total int64
	err = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts count 0
		}
		if *budget--; *budget < 0 {
			return errTooMany
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, errors.New("directory too large to measure (give its bytes as <path>,<bytes>)")
	}
	return total, nil
}

var errTooMany = errors.New("too many entries")
