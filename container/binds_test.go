package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// tree makes dirs under a temp root and returns the root.
func tree(t *testing.T, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range dirs {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	return root
}

func TestPlan(t *testing.T) {
	root := tree(t, "work", "local", "cluster", "cluster/sub", "cluster/sub/deep", "app", "data")
	p := func(s string) string { return filepath.Join(root, s) }

	tests := []struct {
		name    string
		in      []Bind
		want    Binds
		wantErr []string // substrings of the error
	}{
		{
			name: "scalebox layout sorted by depth then target",
			in: []Bind{
				{Source: p("app"), Target: "/app/bin", ReadOnly: true, Why: "module code"},
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("local"), Target: "/local_data_root", Why: "local data"},
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
			},
			want: Binds{
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
				{Source: p("local"), Target: "/local_data_root", Why: "local data"},
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("app"), Target: "/app/bin", ReadOnly: true, Why: "module code"},
			},
		},
		{
			name: "unclean paths are cleaned",
			in:   []Bind{{Source: p("work") + "/./x/..//", Target: "/work/", Why: "work dir"}},
			want: Binds{{Source: p("work"), Target: "/work", Why: "work dir"}},
		},
		{
			name:    "relative source",
			in:      []Bind{{Source: "work", Target: "/work", Why: "work dir"}},
			wantErr: []string{"work dir", "source", "not absolute"},
		},
		{
			name:    "relative target",
			in:      []Bind{{Source: p("work"), Target: "work", Why: "module volumes[1]"}},
			wantErr: []string{"module volumes[1]", "target", "not absolute"},
		},
		{
			name:    "empty source without why uses index",
			in:      []Bind{{Source: p("work"), Target: "/work", Why: "w"}, {Target: "/x"}},
			wantErr: []string{"bind[1]", "empty path"},
		},
		{
			name:    "target root refused",
			in:      []Bind{{Source: p("data"), Target: "/", Why: "module volumes[0]"}},
			wantErr: []string{"module volumes[0]", "root"},
		},
		{
			name:    "target root refused even unclean",
			in:      []Bind{{Source: p("data"), Target: "//.", Why: "v"}},
			wantErr: []string{"root"},
		},
		{
			name: "exact duplicates merged, rw wins, whys joined",
			in: []Bind{
				{Source: p("data"), Target: "/data", ReadOnly: true, Why: "module volumes[0]"},
				{Source: p("data") + "/", Target: "/data", ReadOnly: false, Why: "module volumes[3]"},
				{Source: p("data"), Target: "/data", ReadOnly: true, Why: "module volumes[0]"},
			},
			want: Binds{{Source: p("data"), Target: "/data", Why: "module volumes[0]; module volumes[3]"}},
		},
		{
			name: "exact duplicates all read-only stay read-only",
			in: []Bind{
				{Source: p("data"), Target: "/data", ReadOnly: true, Why: "a"},
				{Source: p("data"), Target: "/data", ReadOnly: true, Why: "b"},
			},
			want: Binds{{Source: p("data"), Target: "/data", ReadOnly: true, Why: "a; b"}},
		},
		{
			name: "same source to two targets is fine",
			in: []Bind{
				{Source: p("data"), Target: "/b", Why: "b"},
				{Source: p("data"), Target: "/a", Why: "a"},
			},
			want: Binds{
				{Source: p("data"), Target: "/a", Why: "a"},
				{Source: p("data"), Target: "/b", Why: "b"},
			},
		},
		{
			name: "same target different sources",
			in: []Bind{
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("data"), Target: "/work", Why: "module volumes[2]"},
			},
			wantErr: []string{"work dir", "module volumes[2]", "/work"},
		},
		{
			name: "redundant nested bind collapsed",
			in: []Bind{
				{Source: p("cluster/sub"), Target: "/cluster_data_root/sub", Why: "module volumes[0]"},
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
			},
			want: Binds{{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data (covers module volumes[0])"}},
		},
		{
			name: "chain collapsed into the outermost",
			in: []Bind{
				{Source: p("cluster/sub/deep"), Target: "/c/sub/deep", Why: "deep"},
				{Source: p("cluster/sub"), Target: "/c/sub", Why: "sub"},
				{Source: p("cluster"), Target: "/c", Why: "cluster"},
			},
			want: Binds{{Source: p("cluster"), Target: "/c", Why: "cluster (covers sub) (covers deep)"}},
		},
		{
			name: "nested with different mode kept, parent first",
			in: []Bind{
				{Source: p("cluster/sub"), Target: "/cluster_data_root/sub", ReadOnly: true, Why: "ro sub"},
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
			},
			want: Binds{
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
				{Source: p("cluster/sub"), Target: "/cluster_data_root/sub", ReadOnly: true, Why: "ro sub"},
			},
		},
		{
			name: "nested source at a different target kept",
			in: []Bind{
				{Source: p("cluster/sub"), Target: "/sub", Why: "sub"},
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
			},
			want: Binds{
				{Source: p("cluster"), Target: "/cluster_data_root", Why: "cluster data"},
				{Source: p("cluster/sub"), Target: "/sub", Why: "sub"},
			},
		},
		{
			name: "nested target from unrelated source kept after parent",
			in: []Bind{
				{Source: p("data"), Target: "/work/data", Why: "module volumes[0]"},
				{Source: p("work"), Target: "/work", Why: "work dir"},
			},
			want: Binds{
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("data"), Target: "/work/data", Why: "module volumes[0]"},
			},
		},
		{
			name: "sibling prefix is not nesting",
			in: []Bind{
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("work") + "dir", Target: "/workdir", Why: "other"},
			},
			wantErr: []string{"other: " + p("workdir") + ": no such file or directory"},
		},
		{
			name: "missing sources all reported",
			in: []Bind{
				{Source: p("nope1"), Target: "/a", Why: "module volumes[0]"},
				{Source: p("work"), Target: "/work", Why: "work dir"},
				{Source: p("nope2"), Target: "/b", Why: "module volumes[1]"},
			},
			wantErr: []string{
				"2 bind sources missing",
				"module volumes[0]: " + p("nope1") + ": no such file or directory",
				"module volumes[1]: " + p("nope2") + ": no such file or directory",
			},
		},
		{
			name:    "empty list",
			in:      nil,
			want:    nil,
			wantErr: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.in)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					require.Contains(t, err.Error(), s)
				}
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestPlanMissingError(t *testing.T) {
	root := t.TempDir()
	_, err := Plan([]Bind{
		{Source: filepath.Join(root, "x"), Target: "/x", Why: "x"},
		{Source: filepath.Join(root, "y"), Target: "/y", Why: "y"},
	})
	var me *MissingError
	require.ErrorAs(t, err, &me)
	require.Len(t, me.Missing, 2)
	require.Equal(t, "x", me.Missing[0].Why)
	require.Equal(t, filepath.Join(root, "y"), me.Missing[1].Source)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Equal(t, "2 bind sources missing:\n  x: "+filepath.Join(root, "x")+": no such file or directory\n  y: "+filepath.Join(root, "y")+": no such file or directory", err.Error())

	_, err = Plan([]Bind{{Source: filepath.Join(root, "x"), Target: "/x", Why: "x"}})
	require.EqualError(t, err, "bind source missing: x: "+filepath.Join(root, "x")+": no such file or directory")
}

func TestPlanDeterministic(t *testing.T) {
	root := tree(t, "a", "b", "c", "a/n")
	p := func(s string) string { return filepath.Join(root, s) }
	in := []Bind{
		{Source: p("c"), Target: "/z/c", Why: "c"},
		{Source: p("a"), Target: "/z", Why: "a"},
		{Source: p("b"), Target: "/y", Why: "b"},
		{Source: p("a/n"), Target: "/z/n", ReadOnly: true, Why: "n"},
	}
	first, err := Plan(in)
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		rev := make([]Bind, len(in))
		for j := range in {
			rev[j] = in[(j+i)%len(in)]
		}
		got, err := Plan(rev)
		require.NoError(t, err)
		require.Equal(t, first, got)
	}
	targets := []string{}
	for _, b := range first {
		targets = append(targets, b.Target)
	}
	require.Equal(t, []string{"/y", "/z", "/z/c", "/z/n"}, targets)
}

func TestToContainer(t *testing.T) {
	b := Binds{
		{Source: "/", Target: "/host"},
		{Source: "/scratch/job/work", Target: "/work"},
		{Source: "/scratch/job/work/in", Target: "/input"},
		{Source: "/site/data", Target: "/cluster_data_root"},
	}
	tests := []struct {
		host string
		want string
		ok   bool
	}{
		{"/scratch/job/work", "/work", true},
		{"/scratch/job/work/", "/work", true},
		{"/scratch/job/work/out/a.txt", "/work/out/a.txt", true},
		{"/scratch/job/work/in", "/input", true},                    // longest source wins
		{"/scratch/job/work/in/x", "/input/x", true},                // longest source wins
		{"/scratch/job/work/input", "/work/input", true},            // "in" is not a prefix of "input"
		{"/scratch/job/workdir", "/host/scratch/job/workdir", true}, // not /work: falls to "/"
		{"/site/data/../data/f", "/cluster_data_root/f", true},
		{"/etc/passwd", "/host/etc/passwd", true},
		{"/", "/host", true},
		{"relative/path", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			got, ok := b.ToContainer(tc.host)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}

	noRoot := Binds{{Source: "/work", Target: "/w"}}
	for _, host := range []string{"/workdir", "/wor", "/other/work", "/"} {
		got, ok := noRoot.ToContainer(host)
		require.False(t, ok, host)
		require.Empty(t, got, host)
	}
	got, ok := noRoot.ToContainer("/work/x")
	require.True(t, ok)
	require.Equal(t, "/w/x", got)

	var empty Binds
	_, ok = empty.ToContainer("/work")
	require.False(t, ok)
}

func TestExplain(t *testing.T) {
	b := Binds{
		{Source: "/site/data", Target: "/cluster_data_root", Why: "cluster data (covers module volumes[0])"},
		{Source: "/scratch/job/1/work", Target: "/work", Why: "work dir"},
		{Source: "/opt/mod", Target: "/app/bin", ReadOnly: true, Why: "module code"},
		{Source: "/x", Target: "/y"},
	}
	var sb strings.Builder
	require.NoError(t, b.Explain(&sb))
	want := "" +
		"TARGET              SOURCE               MODE  WHY\n" +
		"/cluster_data_root  /site/data           rw    cluster data (covers module volumes[0])\n" +
		"/work               /scratch/job/1/work  rw    work dir\n" +
		"/app/bin            /opt/mod             ro    module code\n" +
		"/y                  /x                   rw    \n"
	require.Equal(t, want, sb.String())

	sb.Reset()
	require.NoError(t, Binds(nil).Explain(&sb))
	require.Equal(t, "TARGET  SOURCE  MODE  WHY\n", sb.String())
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestExplainWriteError(t *testing.T) {
	err := Binds{{Source: "/a", Target: "/b"}}.Explain(failWriter{})
	require.ErrorContains(t, err, "disk full")
}

func TestParseVolume(t *testing.T) {
	tests := []struct {
		spec    string
		want    Bind
		wantErr string
	}{
		{spec: "/data", want: Bind{Source: "/data", Target: "/data", Why: "w"}},
		{spec: "/host/d:/d", want: Bind{Source: "/host/d", Target: "/d", Why: "w"}},
		{spec: "/host/d:/d:ro", want: Bind{Source: "/host/d", Target: "/d", ReadOnly: true, Why: "w"}},
		{spec: "/host/d:/d:rw", want: Bind{Source: "/host/d", Target: "/d", Why: "w"}},
		{spec: "", wantErr: "empty volume"},
		{spec: "  ", wantErr: "empty volume"},
		{spec: ":/d", wantErr: "empty host path"},
		{spec: "/h:", wantErr: "empty container path"},
		{spec: ":", wantErr: "empty host path"},
		{spec: "/h::ro", wantErr: "empty container path"},
		{spec: "/h:/d:", wantErr: "empty mode"},
		{spec: "/h:/d:rx", wantErr: `unknown mode "rx"`},
		{spec: "/h:/d:RO", wantErr: `unknown mode "RO"`},
		{spec: "/h:/d:ro:x", wantErr: "too many colons"},
		{spec: "/data:ro", wantErr: `looks like a mode; write "/data:/data:ro"`},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseVolume(tc.spec, "w")
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.ErrorContains(t, err, `volume "`+tc.spec+`" (w)`)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	_, err := ParseVolume("a:b:c:d", "")
	require.EqualError(t, err, `volume "a:b:c:d": too many colons (want host:container[:ro|:rw] or path)`)
}

func TestParseVolumeThenPlan(t *testing.T) {
	root := tree(t, "d")
	b, err := ParseVolume(filepath.Join(root, "d")+":/data:ro", "module volumes[0]")
	require.NoError(t, err)
	got, err := Plan([]Bind{b})
	require.NoError(t, err)
	require.Equal(t, Binds{{Source: filepath.Join(root, "d"), Target: "/data", ReadOnly: true, Why: "module volumes[0]"}}, got)

	b, err = ParseVolume("rel:/data", "module volumes[1]")
	require.NoError(t, err)
	_, err = Plan([]Bind{b})
	require.ErrorContains(t, err, "module volumes[1]")
}
