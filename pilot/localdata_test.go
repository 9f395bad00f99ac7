package pilot

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSpaceRules(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []spaceRule // compared without order (JSON maps have none)
		err      string      // substring besides the key
	}{
		{name: "json", in: `{"/a": 1.5, "/b": 0}`, want: []spaceRule{{"/a", 1.5}, {"/b", 0}}},
		{name: "old form", in: " /dir~2, /d2~0.5 ", want: []spaceRule{{"/dir", 2}, {"/d2", 0.5}}},
		{name: "empty", in: ""},
		{name: "blank", in: "  "},
		{name: "relative dir", in: "rel~1", err: `"rel"`},
		{name: "relative dir json", in: `{"rel": 1}`, err: `"rel"`},
		{name: "negative", in: "/a~-1", err: "non-negative"},
		{name: "negative json", in: `{"/a": -2}`, err: "non-negative"},
		{name: "garbage", in: "xyz", err: `"xyz"`},
		{name: "no number", in: "/a~", err: "want /dir~GB"},
		{name: "bad json", in: `{"/a": "x"}`, err: "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSpaceRules("free_space_gb", tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, "argument free_space_gb")
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.ElementsMatch(t, tc.want, got)
		})
	}
}

func TestSpaceCheckFree(t *testing.T) {
	dir := t.TempDir()
	toDir := func(string) string { return dir } // the module's /work is dir
	for _, tc := range []struct {
		gb   float64
		want string // substring of the refusal, "" = admitted
	}{
		{0, ""},
		{1e9, "free_space_gb: /work has"},
	} {
		c := &spaceCheck{free: []spaceRule{{"/work", tc.gb}}, hostPath: toDir}
		got := c.admit(0)
		if tc.want == "" {
			require.Empty(t, got)
		} else {
			require.Contains(t, got, tc.want)
		}
	}

	c := &spaceCheck{free: []spaceRule{{"/gone", 0}}, hostPath: func(string) string { return filepath.Join(dir, "gone") }}
	require.Contains(t, c.admit(0), "free_space_gb: /gone:")
}

func TestSpaceCheckQuota(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(f, randBytes(t, 2<<20), 0o644)) // random: no sparse or compressed blocks
	same := func(s string) string { return s }
	quota := func(gb float64) *spaceCheck { return &spaceCheck{quota: []spaceRule{{dir, gb}}, hostPath: same} }

	require.Contains(t, quota(0.001).admit(0), "dir_quota_gb: "+dir+" holds")
	require.Empty(t, quota(1).admit(0))

	// du is cached for ttl.
	c := quota(0.001)
	require.NotEmpty(t, c.admit(time.Hour))
	require.NoError(t, os.Remove(f))
	require.NotEmpty(t, c.admit(time.Hour), "cached size")
	require.Empty(t, c.admit(0), "ttl 0 measures again")

	// A quota dir that does not exist holds nothing.
	c = &spaceCheck{quota: []spaceRule{{"/none", 0}}, hostPath: func(string) string { return filepath.Join(dir, "none") }}
	require.Empty(t, c.admit(0))
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestAppEnded(t *testing.T) {
	for status, want := range map[string]bool{
		"FINISHED": true, "finished": true, "ERROR": true, "CANCELLED": true, "CANCELED": true, "DELETED": true,
		"RUNNING": false, "PAUSED": false, "INITIAL": false, "": false,
	} {
		require.Equal(t, want, appEnded(status), status)
	}
}
