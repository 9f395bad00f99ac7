package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/store"
)

// Scalebox's node progress sync (spec §4.5.3): with node_progress_gap, a
// module's hosts advance together. Each host's finished tasks of the
// module are counted in the app semaphore "node_progress:<module>:<host>";
// a host may lease the module's next task only while its count minus the
// smallest count among the hosts of its group is below the gap. Groups
// and gaps come from host-name regexes: '{"n-[01]": 2, "n": 3}' puts hosts
// matching ^n-[01] in one group with gap 2 and the other hosts matching ^n
// in another with gap 3 (the longest matching pattern wins); a host no
// pattern matches is not held back.

// progressGap is a parsed node_progress_gap.
type progressGap struct {
	pattern string
	re      *regexp.Regexp
	gap     int64
}

// parseProgressGap reads node_progress_gap: a JSON map of host-prefix
// regexes to gaps, or a bare number (one group of every host).
func parseProgressGap(s string) ([]progressGap, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && !strings.HasPrefix(s, "{") {
		if n < 1 {
			return nil, fmt.Errorf("node_progress_gap: gap %d: want at least 1", n)
		}
		return []progressGap{{pattern: "", re: regexp.MustCompile(""), gap: n}}, nil
	}
	var m map[string]int64
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("node_progress_gap: want a number or a JSON map {\"host-regex\": gap}: %v", err)
	}
	var out []progressGap
	for p, g := range m {
		re, err := regexp.Compile("^(?:" + p + ")")
		if err != nil {
			return nil, fmt.Errorf("node_progress_gap: pattern %q: %v", p, err)
		}
		if g < 1 {
			return nil, fmt.Errorf("node_progress_gap: pattern %q: gap %d: want at least 1", p, g)
		}
		out = append(out, progressGap{pattern: p, re: re, gap: g})
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i].pattern) > len(out[j].pattern) })
	return out, nil
}

// group returns the pattern that holds host (the longest match), or nil.
func group(gaps []progressGap, host string) *progressGap {
	for i := range gaps {
		if gaps[i].re.MatchString(host) {
			return &gaps[i]
		}
	}
	return nil
}

func progressSemaphore(module, host string) string { return "node_progress:" + module + ":" + host }

// gateProgress drops the modules whose node_progress_gap holds this
// pilot's host back. It also makes sure the host has a counter, so that a
// host that has finished nothing yet holds the others back.
func (b *Broker) gateProgress(ctx context.Context, ps *pilotState, reqs []store.ModuleLease) ([]store.ModuleLease, error) {
	out := reqs[:0:0]
	for _, r := range reqs {
		b.mu.RLock()
		m := b.modules[r.ModuleID]
		b.mu.RUnlock()
		if m == nil || m.progress == nil || ps.host == "" {
			out = append(out, r)
			continue
		}
		gaps := m.progress
		g := group(gaps, ps.host)
		if g == nil {
			out = append(out, r)
			continue
		}
		mine := progressSemaphore(m.name, ps.host)
		if err := b.store.SemaphoreCreate(ctx, m.app.id, mine, 0, ""); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		all, err := b.store.SemaphoreList(ctx, m.app.id, "node_progress:"+m.name+":")
		if err != nil {
			return nil, err
		}
		var own int64
		lowest := int64(-1)
		for _, nv := range all {
			host := strings.TrimPrefix(nv.Name, "node_progress:"+m.name+":")
			if host == ps.host {
				own = nv.Value
			}
			if group(gaps, host) != g {
				continue
			}
			if lowest < 0 || nv.Value < lowest {
				lowest = nv.Value
			}
		}
		if own-lowest >= g.gap {
			continue // this host is ahead of its group
		}
		out = append(out, r)
	}
	return out, nil
}

// progressOf counts the successful results of modules with a
// node_progress_gap, by module. The caller holds b.mu.
func (b *Broker) progressOf(comps []store.Completion, results []store.CompleteResult) map[int64]int64 {
	var out map[int64]int64
	for i, res := range results {
		if !res.Applied || comps[i].Code != 0 || comps[i].Kind != store.KindApp {
			continue
		}
		li, ok := b.leases[comps[i].TaskID]
		if !ok {
			continue
		}
		if m := b.modules[li.moduleID]; m != nil && m.progress != nil {
			if out == nil {
				out = map[int64]int64{}
			}
			out[li.moduleID]++
		}
	}
	return out
}

// countProgress adds a pilot's finished tasks to its host's counters and
// wakes the module's waiting pilots (a slower host catching up may let
// the others go on).
func (b *Broker) countProgress(ctx context.Context, ps *pilotState, done map[int64]int64) {
	for id, n := range done {
		b.mu.RLock()
		m := b.modules[id]
		b.mu.RUnlock()
		if m == nil {
			continue
		}
		if _, err := b.store.SemaphoreAdd(ctx, m.app.id, progressSemaphore(m.name, ps.host), n, true); err != nil {
			b.log.Error("count node progress", zap.String("module", m.name), zap.Error(err))
			continue
		}
		b.waiters.wake(id)
	}
}
