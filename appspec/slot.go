package appspec

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// maxSlotsPerHost bounds the per-host slot count of a slots entry.
const maxSlotsPerHost = 100_000

// SlotSpec is one parsed entry of a module's slots list (old key hosts):
// "<host regex>[:<slots per host>[:<group prefix>]]", e.g. "h0", "n-[01][01]:4",
// "d0[0-3]:2:d00".
type SlotSpec struct {
	HostRegex   string // regular expression over host names
	Count       int    // slots per matched host; 1 when not given
	GroupPrefix string // GROUP-BOUND group prefix; "" when not given
}

// ParseSlot parses one slots entry. The host expression must be a valid
// regular expression (RE2 syntax); how it is matched against host names is
// the scheduler's business.
func ParseSlot(s string) (SlotSpec, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) > 3 {
		return SlotSpec{}, fmt.Errorf("bad slot %q: want <host regex>[:<count>[:<group prefix>]]", s)
	}
	spec := SlotSpec{HostRegex: strings.TrimSpace(parts[0]), Count: 1}
	if spec.HostRegex == "" {
		return SlotSpec{}, fmt.Errorf("bad slot %q: empty host expression", s)
	}
	if _, err := regexp.Compile(spec.HostRegex); err != nil {
		return SlotSpec{}, fmt.Errorf("bad slot %q: host expression is not a valid regular expression: %w", s, err)
	}
	if len(parts) > 1 {
		n, err := strconv.Atoi(strings.TrimSpace(parts[1]))
		if err != nil || n < 0 || n > maxSlotsPerHost {
			return SlotSpec{}, fmt.Errorf("bad slot %q: slot count must be an integer in [0, %d]", s, maxSlotsPerHost)
		}
		spec.Count = n
	}
	if len(parts) > 2 {
		spec.GroupPrefix = strings.TrimSpace(parts[2])
		if spec.GroupPrefix == "" {
			return SlotSpec{}, fmt.Errorf("bad slot %q: empty group prefix", s)
		}
	}
	return spec, nil
}
