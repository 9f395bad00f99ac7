package pilot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// localData is the node-local data dir of the pilot's app: it outlives
// attempts (and pilots) on this node, so a module can leave files there
// for a later module on the same node (location-aware dispatch). Every
// pilot of the app on the node holds a shared lock on it; the last one to
// leave after the app ended removes it.
type localData struct {
	once sync.Once
	dir  string
	lock *os.File
	err  error
}

// appDataDir returns (creating it once) the app's node-local data dir,
// <scratch>/scalebox/data/app-<id>, shown to tasks as LOCAL_DATA_ROOT (in
// containers: /local_data_root).
func (p *Pilot) appDataDir(appID int64) (string, error) {
	d := &p.data
	d.once.Do(func() {
		root := filepath.Join(p.cfg.Scratch, "scalebox", "data")
		if err := os.MkdirAll(root, 0o755); err != nil {
			d.err = fmt.Errorf("node-local data dir: %w", err)
			return
		}
		name := "app-" + strconv.FormatInt(appID, 10)
		f, err := os.OpenFile(filepath.Join(root, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			d.err = fmt.Errorf("node-local data dir: %w", err)
			return
		}
		// Blocks only while a departing pilot removes the dir of an ended
		// app (it holds the lock exclusively for that).
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
			f.Close()
			d.err = fmt.Errorf("node-local data dir: lock: %w", err)
			return
		}
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Close()
			d.err = fmt.Errorf("node-local data dir: %w", err)
			return
		}
		d.dir, d.lock = dir, f
	})
	return d.dir, d.err
}

// releaseData drops the pilot's hold on the app's data dir and, when the
// app has ended and no other pilot on the node holds it, removes it.
func (p *Pilot) releaseData(ctx context.Context) {
	d := &p.data
	if d.lock != nil {
		defer d.lock.Close()
	}
	a, err := p.client.AppGet(ctx, p.cfg.AppID)
	if err != nil || !appEnded(a.Status) {
		return // running, paused, or unknown: keep the data for later pilots
	}
	root := filepath.Join(p.cfg.Scratch, "scalebox", "data")
	name := "app-" + strconv.FormatInt(p.cfg.AppID, 10)
	lock := d.lock
	if lock == nil { // this pilot never used it; another may have
		if lock, err = os.OpenFile(filepath.Join(root, name+".lock"), os.O_RDWR, 0); err != nil {
			return
		}
		defer lock.Close()
	}
	// Upgrade to exclusive without blocking: another pilot of the app on
	// this node still uses the dir if this fails.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return
	}
	dir := filepath.Join(root, name)
	if err := os.RemoveAll(dir); err != nil {
		p.log.Warn("remove node-local data dir", zap.String("dir", dir), zap.Error(err))
		return
	}
	p.log.Info("app ended: removed its node-local data dir", zap.String("dir", dir))
}

func appEnded(status string) bool {
	switch strings.ToUpper(status) {
	case "FINISHED", "ERROR", "CANCELLED", "CANCELED", "DELETED":
		return true
	}
	return false
}

// spaceRule is one entry of free_space_gb or dir_quota_gb.
type spaceRule struct {
	dir string  // as the module wrote it (a container path for a boxed module)
	gb  float64 // free GB at least (free_space_gb) or used GB at most (dir_quota_gb)
}

// parseSpaceRules reads Scalebox's '{"/dir":N,…}' or the older
// "/dir~N[,/dir2~M]" form.
func parseSpaceRules(key, s string) ([]spaceRule, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []spaceRule
	if strings.HasPrefix(s, "{") {
		var m map[string]float64
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("argument %s: want a JSON object {\"/dir\": GB}: %v", key, err)
		}
		for d, n := range m {
			out = append(out, spaceRule{dir: d, gb: n})
		}
	} else {
		for _, it := range strings.Split(s, ",") {
			d, n, ok := strings.Cut(strings.TrimSpace(it), "~")
			gb, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
			if !ok || err != nil {
				return nil, fmt.Errorf("argument %s: %q: want /dir~GB or {\"/dir\": GB}", key, it)
			}
			out = append(out, spaceRule{dir: strings.TrimSpace(d), gb: gb})
		}
	}
	for _, r := range out {
		if !filepath.IsAbs(r.dir) || r.gb < 0 || math.IsNaN(r.gb) || math.IsInf(r.gb, 0) {
			return nil, fmt.Errorf("argument %s: %q~%g: want an absolute dir and a non-negative GB", key, r.dir, r.gb)
		}
	}
	return out, nil
}

// spaceCheck is a module's storage admission (Scalebox free_space_gb and
// dir_quota_gb): no lease while a dir's partition has less free space, or
// a dir holds more, than the module allows. du of a quota dir is cached
// for a poll interval.
type spaceCheck struct {
	free, quota []spaceRule
	hostPath    func(string) string // a module path on the host

	mu     sync.Mutex
	usedAt map[string]time.Time
	used   map[string]int64
}

// admit reports "" when the rules allow a lease, else why not.
func (c *spaceCheck) admit(ttl time.Duration) string {
	const gb = 1 << 30
	for _, r := range c.free {
		var st unix.Statfs_t
		h := c.hostPath(r.dir)
		if err := unix.Statfs(h, &st); err != nil {
			return fmt.Sprintf("free_space_gb: %s: %v", r.dir, err)
		}
		if free := float64(st.Bavail) * float64(st.Bsize); free < r.gb*gb {
			return fmt.Sprintf("free_space_gb: %s has %.2f GB free, the module needs %g", r.dir, free/gb, r.gb)
		}
	}
	for _, r := range c.quota {
		used, err := c.du(c.hostPath(r.dir), ttl)
		if err != nil {
			return fmt.Sprintf("dir_quota_gb: %s: %v", r.dir, err)
		}
		if float64(used) > r.gb*gb {
			return fmt.Sprintf("dir_quota_gb: %s holds %.2f GB, the module allows %g", r.dir, float64(used)/gb, r.gb)
		}
	}
	return ""
}

func (c *spaceCheck) du(dir string, ttl time.Duration) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.usedAt[dir]; ok && time.Since(t) < ttl {
		return c.used[dir], nil
	}
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if info, err := e.Info(); err == nil && !e.IsDir() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if c.usedAt == nil {
		c.usedAt, c.used = map[string]time.Time{}, map[string]int64{}
	}
	c.usedAt[dir], c.used[dir] = time.Now(), n
	return n, nil
}
