package singularity

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		name    string
		output  string
		flavour Flavour
		version Version
		line    string
		wantErr bool
	}{
		{name: "apptainer", output: "apptainer version 1.3.4\n", flavour: Apptainer, version: V(1, 3, 4), line: "apptainer version 1.3.4"},
		{name: "apptainer rc", output: "apptainer version 1.1.0-rc.2\n", flavour: Apptainer, version: Version{Major: 1, Minor: 1, Patch: 0, Pre: "rc.2", Suffix: "-rc.2"}, line: "apptainer version 1.1.0-rc.2"},
		{name: "singularity-ce", output: "singularity-ce version 4.1.0\n", flavour: SingularityCE, version: V(4, 1, 0), line: "singularity-ce version 4.1.0"},
		{name: "singularity-ce distro", output: "singularity-ce version 3.11.4-jammy\n", flavour: SingularityCE, version: Version{Major: 3, Minor: 11, Patch: 4, Suffix: "-jammy"}, line: "singularity-ce version 3.11.4-jammy"},
		{name: "legacy singularity", output: "singularity version 3.8.7\n", flavour: Singularity, version: V(3, 8, 7), line: "singularity version 3.8.7"},
		{name: "legacy no patch el6", output: "singularity version 3.1-1.el6\n", flavour: Singularity, version: Version{Major: 3, Minor: 1, Patch: 0, Suffix: "-1.el6"}, line: "singularity version 3.1-1.el6"},
		{name: "singularity 2 bare", output: "2.6.1-dist\n", flavour: Singularity, version: Version{Major: 2, Minor: 6, Patch: 1, Suffix: "-dist"}, line: "2.6.1-dist"},
		{name: "warning before version", output: "WARNING: Could not lookup the current user's information: user: unknown userid 1234\napptainer version 1.2.5\n", flavour: Apptainer, version: V(1, 2, 5), line: "apptainer version 1.2.5"},
		{name: "no trailing newline", output: "apptainer version 1.3.4", flavour: Apptainer, version: V(1, 3, 4), line: "apptainer version 1.3.4"},
		{name: "CRLF and spaces", output: "  singularity-ce version 4.1.0  \r\n", flavour: SingularityCE, version: V(4, 1, 0), line: "singularity-ce version 4.1.0"},
		{name: "commit build", output: "singularity version 47b018f-dirty\n", wantErr: true},
		{name: "empty", output: "", wantErr: true},
		{name: "only warnings", output: "WARNING: something\nINFO: else\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := ParseVersion(tt.output)
			if tt.wantErr {
				require.Error(t, err)
				require.Equal(t, Info{}, info)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.flavour, info.Flavour)
			require.Equal(t, tt.version, info.Version)
			require.Equal(t, tt.line, info.Line)
		})
	}
}

func TestVersionString(t *testing.T) {
	info, err := ParseVersion("singularity-ce version 4.1.0-jammy")
	require.NoError(t, err)
	require.Equal(t, "singularity-ce 4.1.0-jammy", info.String())
	info, err = ParseVersion("singularity version 3.1-1.el6")
	require.NoError(t, err)
	require.Equal(t, "3.1.0-1.el6", info.Version.String())
}

func TestInfoSupported(t *testing.T) {
	parse := func(s string) Info {
		t.Helper()
		info, err := ParseVersion(s)
		require.NoError(t, err)
		return info
	}
	for _, s := range []string{
		"apptainer version 1.3.4",
		"apptainer version 1.0.0",
		"singularity-ce version 4.1.0",
		"singularity-ce version 3.9.0",
		"singularity version 3.8.7",
		"singularity version 3.0.0",
	} {
		require.NoError(t, parse(s).Supported(), s)
	}
	for _, s := range []string{
		"2.6.1-dist",
		"singularity version 2.6.1",
		"apptainer version 0.1.1",
		"apptainer version 1.0.0-rc.1", // a pre-release of 1.0 is not 1.0
	} {
		require.Error(t, parse(s).Supported(), s)
	}
}

func TestVersionCompare(t *testing.T) {
	rc1 := Version{Major: 1, Minor: 1, Patch: 0, Pre: "rc.1", Suffix: "-rc.1"}
	el8 := Version{Major: 1, Minor: 1, Patch: 0, Suffix: "-1.el8"}
	tests := []struct {
		a, b Version
		want int
	}{
		{V(1, 3, 4), V(1, 3, 4), 0},
		{V(1, 3, 4), V(1, 3, 5), -1},
		{V(1, 4, 0), V(1, 3, 9), 1},
		{V(2, 0, 0), V(1, 99, 99), 1},
		{V(3, 9, 0), V(3, 10, 0), -1}, // numeric, not lexical
		{rc1, V(1, 1, 0), -1},
		{V(1, 1, 0), rc1, 1},
		{rc1, V(1, 0, 9), 1},
		{el8, V(1, 1, 0), 0}, // distribution suffixes are ignored
		{el8, rc1, 1},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.a.Compare(tt.b), "%v vs %v", tt.a, tt.b)
		require.Equal(t, -tt.want, tt.b.Compare(tt.a), "%v vs %v", tt.b, tt.a)
		require.Equal(t, tt.want >= 0, tt.a.AtLeast(tt.b), "%v AtLeast %v", tt.a, tt.b)
	}
	require.False(t, rc1.AtLeast(V(1, 1, 0)), "a pre-release is not at least its release")
	require.True(t, V(1, 1, 0).AtLeast(rc1))
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{
		"apptainer version 1.3.4",
		"apptainer version 1.1.0-rc.2",
		"singularity-ce version 4.1.0",
		"singularity-ce version 3.11.4-jammy",
		"singularity version 3.8.7",
		"singularity version 3.1-1.el6",
		"2.6.1-dist",
		"WARNING: x\napptainer version 1.2.5\n",
		"singularity version 47b018f-dirty",
		"",
		"apptainer version 99999999999999999999.1.1",
		"v1.2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		info, err := ParseVersion(s)
		if err != nil {
			return
		}
		v := info.Version
		if v.Major < 0 || v.Minor < 0 || v.Patch < 0 {
			t.Fatalf("ParseVersion(%q) = %+v: negative number", s, v)
		}
		switch info.Flavour {
		case Apptainer, SingularityCE, Singularity:
		default:
			t.Fatalf("ParseVersion(%q): flavour %q", s, info.Flavour)
		}
		_ = info.String()
		_ = info.Supported()
		if v.Compare(v) != 0 {
			t.Fatalf("%v.Compare(itself) != 0", v)
		}
	})
}
