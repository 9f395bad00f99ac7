package pilot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/scalebox-hpc/scalebox/api"
)

// A spool keeps results the broker could not take on the node's disk, so
// that they outlive an outage of the broker and the pilot itself. Each
// pilot owns one directory under <scratch>/scalebox/spool, holding an
// exclusive flock on its "lock" file for as long as it lives; every batch
// that failed to go out is one file there, written to a temporary name,
// fsynced and renamed, and removed once the broker took it. A pilot that
// starts on the node takes over the directories whose owners are gone
// (their flock is free) and delivers their batches under the pilot id they
// were leased to: if those leases are still current the results are
// applied, otherwise the broker records them as fenced. A batch delivered
// twice (the pilot died between delivery and removal) is fenced the second
// time, so nothing is emitted twice.

// spoolBatch is one spooled file.
type spoolBatch struct {
	Broker  string       `json:"broker"`
	PilotID int64        `json:"pilot_id"`
	Results []api.Result `json:"results"`

	path string // where it is on disk ("" when it could not be written)
}

// spool is this pilot's spool directory.
type spool struct {
	root   string // <scratch>/scalebox/spool
	dir    string // this pilot's directory under root
	broker string
	lock   *os.File

	mu  sync.Mutex
	seq int
}

// openSpool creates this pilot's spool directory under root and locks it.
func openSpool(root, broker string) (*spool, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	dir, err := os.MkdirTemp(root, fmt.Sprintf("pid%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = lock.Close()
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("lock spool dir %s: %w", dir, err)
	}
	return &spool{root: root, dir: dir, broker: broker, lock: lock}, nil
}

// put writes a batch durably and returns it with its path. The batch is
// returned even when the disk fails (with the error): it is then kept in
// memory only.
func (s *spool) put(pilotID int64, results []api.Result) (*spoolBatch, error) {
	b := &spoolBatch{Broker: s.broker, PilotID: pilotID, Results: slices.Clone(results)}
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("batch-%09d.json", s.seq)
	s.mu.Unlock()
	data, err := json.Marshal(b)
	if err != nil {
		return b, fmt.Errorf("encode spooled results: %w", err)
	}
	path := filepath.Join(s.dir, name)
	if err := writeDurably(path, data); err != nil {
		return b, err
	}
	b.path = path
	return b, nil
}

// done removes a delivered batch.
func (s *spool) done(b *spoolBatch) {
	if b.path != "" {
		_ = os.Remove(b.path)
		b.path = ""
	}
}

// close releases this pilot's directory: removed when empty, else left
// (unlocked) for the next pilot on the node.
func (s *spool) close() (left int) {
	left = len(spoolFiles(s.dir))
	if left == 0 {
		_ = os.RemoveAll(s.dir)
	}
	_ = s.lock.Close()
	return left
}

// writeDurably writes data to path through a temporary file: fsync, rename,
// fsync of the directory.
func writeDurably(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool results: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool results to %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// spoolFiles lists a spool directory's batch files, oldest first.
func spoolFiles(dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "batch-*.json"))
	slices.Sort(names)
	return names
}

// orphan is the spool directory of a pilot that is gone, locked by us.
type orphan struct {
	dir     string
	lock    *os.File
	batches []*spoolBatch
}

// orphans takes over the spool directories under root whose owners are
// gone, with the batches meant for broker. A file that cannot be read is
// renamed to *.bad and reported, never retried or deleted.
func (s *spool) orphans(log *zap.Logger) []*orphan {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil
	}
	var out []*orphan
	for _, e := range entries {
		dir := filepath.Join(s.root, e.Name())
		if !e.IsDir() || dir == s.dir {
			continue
		}
		lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
		if err != nil {
			continue // not a spool dir, or being created
		}
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			_ = lock.Close() // its pilot lives
			continue
		}
		o := &orphan{dir: dir, lock: lock}
		for _, path := range spoolFiles(dir) {
			b, err := readSpoolBatch(path)
			if err != nil {
				log.Error("unreadable spooled results: kept as .bad for inspection", zap.String("file", path), zap.Error(err))
				_ = os.Rename(path, path+".bad")
				continue
			}
			if b.Broker != s.broker {
				continue // another broker's: left for a pilot of that broker
			}
			o.batches = append(o.batches, b)
		}
		if len(o.batches) == 0 {
			o.release()
			continue
		}
		out = append(out, o)
	}
	return out
}

// release removes the orphan's directory if nothing is left in it, and
// unlocks it.
func (o *orphan) release() {
	if len(spoolFiles(o.dir)) == 0 {
		if bad, _ := filepath.Glob(filepath.Join(o.dir, "*.bad")); len(bad) == 0 {
			_ = os.RemoveAll(o.dir)
		}
	}
	_ = o.lock.Close()
}

func readSpoolBatch(path string) (*spoolBatch, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b spoolBatch
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b.PilotID <= 0 || len(b.Results) == 0 {
		return nil, fmt.Errorf("%s: no pilot id or no results", path)
	}
	b.path = path
	return &b, nil
}

// deliverOrphans sends the results that pilots gone from this node left in
// their spools, each batch under the pilot id it was leased to, until
// they are delivered or ctx ends (they stay on disk for the next pilot).
func (p *Pilot) deliverOrphans(ctx context.Context) {
	for _, o := range p.spool.orphans(p.log) {
		for _, b := range o.batches {
			err := p.deliver(ctx, b.PilotID, b.Results, true)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Warn("spooled results of a gone pilot not delivered; left on disk", zap.String("file", b.path), zap.Error(err))
				}
				continue
			}
			p.log.Info("delivered results a gone pilot left on this node", zap.String("file", b.path),
				zap.Int64("pilot", b.PilotID), zap.Int("results", len(b.Results)))
			p.spool.done(b)
		}
		o.release()
	}
}

// errRefused is a broker's 4xx answer to results: retrying cannot help.
var errRefused = errors.New("broker refused the results")
