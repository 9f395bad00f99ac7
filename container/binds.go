package container

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// Binds is a checked, normalised bind list, as returned by Plan: every
// Source and Target absolute and clean, no two binds on one Target, no
// redundant nested binds, a parent target before its children.
type Binds []Bind

// MissingSource is one bind whose host source could not be found.
type MissingSource struct {
	Why    string // the bind's Why
	Source string // host path
	Err    error  // what os.Stat said (without the path), e.g. fs.ErrNotExist
}

// MissingError reports every bind whose source is missing at once, so a
// site operator can fix them all before any run.
type MissingError struct {
	Missing []MissingSource
}

func (e *MissingError) Error() string {
	var b strings.Builder
	if len(e.Missing) == 1 {
		b.WriteString("bind source missing: ")
	} else {
		fmt.Fprintf(&b, "%d bind sources missing:", len(e.Missing))
	}
	for _, m := range e.Missing {
		if len(e.Missing) > 1 {
			b.WriteString("\n  ")
		}
		fmt.Fprintf(&b, "%s: %s: %v", m.Why, m.Source, m.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is(err, fs.ErrNotExist) see through a MissingError.
func (e *MissingError) Unwrap() []error {
	errs := make([]error, len(e.Missing))
	for i, m := range e.Missing {
		errs[i] = m.Err
	}
	return errs
}

// label names a bind in an error message: its Why, or its index.
func label(b Bind, i int) string {
	if b.Why != "" {
		return b.Why
	}
	return fmt.Sprintf("bind[%d]", i)
}

// cleanAbs checks that p is a non-empty absolute path and returns it
// cleaned.
func cleanAbs(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	return filepath.Clean(p), nil
}

// under reports whether p lies strictly inside dir (both clean and
// absolute) and returns p relative to dir.
func under(dir, p string) (string, bool) {
	if dir == "/" {
		return p[1:], p != "/"
	}
	if strings.HasPrefix(p, dir+"/") {
		return p[len(dir)+1:], true
	}
	return "", false
}

// depth is the number of components of a clean absolute path ("/" = 0).
func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// Plan checks and normalises the binds a pilot computed for a module's
// container (work dir at /work, node-local data at /local_data_root,
// the shared data root at /cluster_data_root, module code at /app/bin,
// plus the module's volumes):
//
//   - Source and Target must be absolute; they are cleaned. Target "/"
//     is refused.
//   - Exact duplicates (same Source and Target) are merged: read-only
//     only if all were, Whys joined with "; ".
//   - Two binds on one Target from different Sources are an error.
//   - Every Source must exist; all missing ones are reported in one
//     *MissingError.
//   - A bind nested in another one's Source, mapped to the
//     corresponding path in that one's Target, with the same mode, is
//     redundant and dropped; the parent's Why gets "(covers <why>)".
//   - The result is sorted by target depth, then target, so a parent
//     target is mounted before its children.
func Plan(binds []Bind) (Binds, error) {
	type key struct{ src, dst string }
	var merged []Bind
	idx := map[key]int{}
	whys := map[int][]string{}
	for i, b := range binds {
		src, err := cleanAbs(b.Source)
		if err != nil {
			return nil, fmt.Errorf("bind %s: source: %w", label(b, i), err)
		}
		dst, err := cleanAbs(b.Target)
		if err != nil {
			return nil, fmt.Errorf("bind %s: target: %w", label(b, i), err)
		}
		if dst == "/" {
			return nil, fmt.Errorf("bind %s: target %q: cannot bind over the container's root", label(b, i), b.Target)
		}
		k := key{src, dst}
		j, dup := idx[k]
		if !dup {
			j = len(merged)
			idx[k] = j
			merged = append(merged, Bind{Source: src, Target: dst, ReadOnly: b.ReadOnly})
		} else {
			merged[j].ReadOnly = merged[j].ReadOnly && b.ReadOnly
		}
		if b.Why != "" && !slices.Contains(whys[j], b.Why) {
			whys[j] = append(whys[j], b.Why)
		}
	}
	for j := range merged {
		merged[j].Why = strings.Join(whys[j], "; ")
	}

	// One source per target.
	byTarget := map[string]int{}
	for j, b := range merged {
		if o, ok := byTarget[b.Target]; ok {
			return nil, fmt.Errorf("binds %s and %s both target %s (sources %s and %s)",
				label(merged[o], o), label(b, j), b.Target, merged[o].Source, b.Source)
		}
		byTarget[b.Target] = j
	}

	// Every source must exist; report them all.
	var missing []MissingSource
	for j, b := range merged {
		if _, err := os.Stat(b.Source); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			missing = append(missing, MissingSource{Why: label(b, j), Source: b.Source, Err: err})
		}
	}
	if len(missing) > 0 {
		return nil, &MissingError{Missing: missing}
	}

	// Collapse redundant nested binds: parents (shorter sources) first,
	// so a chain a ⊃ b ⊃ c ends with everything folded into a.
	order := make([]int, len(merged))
	for j := range order {
		order[j] = j
	}
	sort.SliceStable(order, func(x, y int) bool {
		a, b := merged[order[x]], merged[order[y]]
		if len(a.Source) != len(b.Source) {
			return len(a.Source) < len(b.Source)
		}
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		return a.Target < b.Target
	})
	var kept []Bind
	for _, j := range order {
		b := merged[j]
		parent := -1
		for p, k := range kept {
			rel, ok := under(k.Source, b.Source)
			if !ok || k.ReadOnly != b.ReadOnly || filepath.Join(k.Target, rel) != b.Target {
				continue
			}
			if parent < 0 || len(k.Source) > len(kept[parent].Source) {
				parent = p
			}
		}
		if parent < 0 {
			kept = append(kept, b)
			continue
		}
		cover := "(covers " + label(b, j) + ")"
		if kept[parent].Why == "" {
			kept[parent].Why = cover
		} else {
			kept[parent].Why += " " + cover
		}
	}

	sort.SliceStable(kept, func(x, y int) bool {
		a, b := kept[x], kept[y]
		if da, db := depth(a.Target), depth(b.Target); da != db {
			return da < db
		}
		return a.Target < b.Target
	})
	return Binds(kept), nil
}

// ToContainer translates a host path to the path it has inside the
// container: the bind with the longest Source equal to hostPath, or a
// directory containing it, wins. It reports false for a path no bind
// makes visible (or a relative one).
func (b Binds) ToContainer(hostPath string) (string, bool) {
	if !filepath.IsAbs(hostPath) {
		return "", false
	}
	p := filepath.Clean(hostPath)
	best := -1
	bestRel := ""
	for i, bd := range b {
		var rel string
		if p == bd.Source {
			rel = ""
		} else if r, ok := under(bd.Source, p); ok {
			rel = r
		} else {
			continue
		}
		if best < 0 || len(bd.Source) > len(b[best].Source) {
			best, bestRel = i, rel
		}
	}
	if best < 0 {
		return "", false
	}
	if bestRel == "" {
		return b[best].Target, true
	}
	return filepath.Join(b[best].Target, bestRel), true
}

// Explain writes the binds as an aligned table (TARGET, SOURCE, MODE,
// WHY), for "scalebox pilot explain-binds".
func (b Binds) Explain(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tSOURCE\tMODE\tWHY")
	for _, bd := range b {
		mode := "rw"
		if bd.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", bd.Target, bd.Source, mode, bd.Why)
	}
	return tw.Flush()
}

// ParseVolume parses one entry of a Scalebox module's volumes:
// "host:container", "host:container:ro", "host:container:rw", or a single
// "path" bound at the same path inside. Absoluteness is checked by Plan.
func ParseVolume(spec string, why string) (Bind, error) {
	bad := func(format string, a ...any) (Bind, error) {
		if why != "" {
			return Bind{}, fmt.Errorf("volume %q (%s): %s", spec, why, fmt.Sprintf(format, a...))
		}
		return Bind{}, fmt.Errorf("volume %q: %s", spec, fmt.Sprintf(format, a...))
	}
	if strings.TrimSpace(spec) == "" {
		return bad("empty volume")
	}
	parts := strings.Split(spec, ":")
	b := Bind{Why: why}
	switch len(parts) {
	case 1:
		b.Source, b.Target = parts[0], parts[0]
	case 2, 3:
		b.Source, b.Target = parts[0], parts[1]
		if b.Source == "" {
			return bad("empty host path")
		}
		if b.Target == "" {
			return bad("empty container path")
		}
		if len(parts) == 2 && (b.Target == "ro" || b.Target == "rw") {
			return bad("container path %q looks like a mode; write %q", b.Target, b.Source+":"+b.Source+":"+b.Target)
		}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				b.ReadOnly = true
			case "rw":
			case "":
				return bad("empty mode (want ro or rw)")
			default:
				return bad("unknown mode %q (want ro or rw)", parts[2])
			}
		}
	default:
		return bad("too many colons (want host:container[:ro|:rw] or path)")
	}
	return b, nil
}
