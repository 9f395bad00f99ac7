package appspec

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSlot(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]SlotSpec{
		"h0":               {HostRegex: "h0", Count: 1},
		"h0:4":             {HostRegex: "h0", Count: 4},
		" n-[01][01] : 2 ": {HostRegex: "n-[01][01]", Count: 2},
		"d0[0-3]:2:d00":    {HostRegex: "d0[0-3]", Count: 2, GroupPrefix: "d00"},
		"(n[0-3])|(h0)":    {HostRegex: "(n[0-3])|(h0)", Count: 1},
		"h0:0":             {HostRegex: "h0", Count: 0},
	} {
		got, err := ParseSlot(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", ":2", "h0:", "h0:x", "h0:-1", "h0:1:", "a:1:b:c", "(h0", "h0:1000000"} {
		_, err := ParseSlot(bad)
		require.Error(t, err, bad)
	}
}

func TestParseMemoryMB(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"512": 512, "512M": 512, "512MB": 512, "512Mi": 512, "4G": 4096, "4g": 4096, "4GB": 4096,
		"1.5GiB": 1536, "1T": 1 << 20, "1024K": 1, "1K": 1, "0": 0, " 2 G ": 2048, "1P": 1 << 30,
	} {
		got, err := ParseMemoryMB(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "G", "4X", "-1G", "4 GB extra", "1.G", "512B", "99999999P"} {
		_, err := ParseMemoryMB(bad)
		require.Error(t, err, bad)
	}
}

func TestParseDurationSeconds(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		"30": 30, "30s": 30, "5m": 300, "1h30m": 5400, "1.5s": 2, "100ms": 1, "0": 0,
		"01:30:00": 5400, "10:00": 600, "1-00:00:00": 86400, "2-01:00:05": 176405,
	} {
		got, err := ParseDurationSeconds(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "five", "-5", "-1s", "1-10:00", "1:2:3:4", "99999999999", "1000000h"} {
		_, err := ParseDurationSeconds(bad)
		require.Error(t, err, bad)
	}
}
