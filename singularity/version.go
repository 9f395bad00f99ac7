package singularity

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Flavour is the family of the container tool.
type Flavour string

// Flavours.
const (
	// Apptainer is Apptainer 1.x and later (Linux Foundation), whose binary
	// is apptainer (with a singularity symlink).
	Apptainer Flavour = "apptainer"
	// SingularityCE is Sylabs' SingularityCE 3.8 and later (and
	// SingularityPRO, which follows SingularityCE's versions).
	SingularityCE Flavour = "singularity-ce"
	// Singularity is the legacy Singularity (hpcng/apptainer 3.x up to
	// 3.8.7, and 2.x, which is not supported).
	Singularity Flavour = "singularity"
)

// Version is a tool's release number. Pre is the pre-release part without
// the dash ("rc.1"); Suffix is whatever followed the numbers ("-1.el8",
// "-jammy", "-rc.1", "+47-g1a2b3c4").
type Version struct {
	Major, Minor, Patch int
	Pre                 string
	Suffix              string
}

// V is a shorthand for a release version.
func V(major, minor, patch int) Version { return Version{Major: major, Minor: minor, Patch: patch} }

// String returns major.minor.patch followed by the original suffix.
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d%s", v.Major, v.Minor, v.Patch, v.Suffix)
}

// Compare returns -1, 0 or +1. A pre-release sorts before its release
// (1.1.0-rc.1 < 1.1.0); distribution suffixes ("-1.el8") are ignored.
func (v Version) Compare(w Version) int {
	for _, d := range [3]int{v.Major - w.Major, v.Minor - w.Minor, v.Patch - w.Patch} {
		if d < 0 {
			return -1
		}
		if d > 0 {
			return 1
		}
	}
	switch {
	case v.Pre != "" && w.Pre == "":
		return -1
	case v.Pre == "" && w.Pre != "":
		return 1
	}
	return 0
}

// AtLeast reports whether v >= w. A pre-release of w is not at least w:
// features are only assumed from the release on.
func (v Version) AtLeast(w Version) bool { return v.Compare(w) >= 0 }

// Info is what "<bin> --version" says.
type Info struct {
	Flavour Flavour
	Version Version
	Line    string // the version line as printed, for messages
}

// String returns "apptainer 1.3.4", "singularity-ce 4.1.0-jammy".
func (i Info) String() string { return fmt.Sprintf("%s %s", i.Flavour, i.Version) }

var (
	versionLineRE = regexp.MustCompile(`(?i)^(apptainer|singularity-ce|singularityce|singularity-pro|singularitypro|singularity)\s+version\s+(\S+)$`)
	versionRE     = regexp.MustCompile(`^v?(\d+)\.(\d+)(?:\.(\d+))?([-+~._].*)?$`)
	preReleaseRE  = regexp.MustCompile(`(?i)^[-~.]?((?:rc|alpha|beta|pre)[.-]?\d*)`)
)

// ParseVersion parses the output of "apptainer --version" or
// "singularity --version":
//
//	apptainer version 1.3.4
//	singularity-ce version 4.1.0
//	singularity-ce version 3.11.4-jammy
//	singularity version 3.8.7
//	singularity version 3.1-1.el6
//	2.6.1-dist                      (Singularity 2.x)
//
// Lines that do not look like a version line (warnings) are skipped; the
// last version line wins. A build that reports a commit instead of a
// version ("singularity version 47b018f-dirty") is an error.
func ParseVersion(output string) (Info, error) {
	var flavour, token, line string
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimSpace(l)
		if m := versionLineRE.FindStringSubmatch(l); m != nil {
			flavour, token, line = strings.ToLower(m[1]), m[2], l
			continue
		}
		if flavour == "" && versionRE.MatchString(l) && !strings.ContainsAny(l, " \t") {
			// A bare version: Singularity 2.x prints only the number.
			flavour, token, line = "singularity", l, l
		}
	}
	if flavour == "" {
		return Info{}, fmt.Errorf("no version line in %q: expected \"apptainer version X.Y.Z\" or \"singularity[-ce] version X.Y.Z\"", clip(output, 200))
	}
	m := versionRE.FindStringSubmatch(token)
	if m == nil {
		return Info{}, fmt.Errorf("version line %q has no X.Y[.Z] release number (a development build?): set an explicit tool path to a released Apptainer or SingularityCE", line)
	}
	var v Version
	var err error
	if v.Major, err = strconv.Atoi(m[1]); err != nil {
		return Info{}, fmt.Errorf("version line %q: major number: %w", line, err)
	}
	if v.Minor, err = strconv.Atoi(m[2]); err != nil {
		return Info{}, fmt.Errorf("version line %q: minor number: %w", line, err)
	}
	if m[3] != "" {
		if v.Patch, err = strconv.Atoi(m[3]); err != nil {
			return Info{}, fmt.Errorf("version line %q: patch number: %w", line, err)
		}
	}
	v.Suffix = m[4]
	if p := preReleaseRE.FindStringSubmatch(v.Suffix); p != nil {
		v.Pre = strings.ToLower(p[1])
	}
	info := Info{Version: v, Line: line}
	switch flavour {
	case "apptainer":
		info.Flavour = Apptainer
	case "singularity-ce", "singularityce", "singularity-pro", "singularitypro":
		info.Flavour = SingularityCE
	default:
		info.Flavour = Singularity
	}
	return info, nil
}

// Supported returns an error when Scalebox cannot drive this version:
// Singularity 2.x (no SIF, a different command line) and Apptainer 0.x.
func (i Info) Supported() error {
	switch i.Flavour {
	case Apptainer:
		if !i.Version.AtLeast(V(1, 0, 0)) {
			return fmt.Errorf("%s is not supported: Apptainer 1.0 or later is needed", i)
		}
	default:
		if i.Version.Major < 3 {
			return fmt.Errorf("%s is not supported: Singularity 3.0 or later (SIF images) is needed; install Apptainer or SingularityCE", i)
		}
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
