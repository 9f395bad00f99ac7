package pilot

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// memoryMB reads the node's memory from /proc/meminfo (0 if unknown).
func memoryMB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb / 1024
		}
	}
	return 0
}

// sweepOrphans removes scratch dirs of earlier pilots on this node whose
// process is gone (named pilot-<id>-pid<pid>-…).
func sweepOrphans(root string, log *zap.Logger) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "pilot-") {
			continue
		}
		_, rest, ok := strings.Cut(name, "-pid")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		dir := filepath.Join(root, name)
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("sweep orphan scratch dir", zap.String("dir", dir), zap.Error(err))
			continue
		}
		log.Info("swept scratch dir of a dead pilot", zap.String("dir", dir))
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
