package agent

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// reapOrphans runs while the agent is process 1 of its container (podman
// and docker start it so): processes of a task that outlive it are killed
// with the task's process group and re-parented to the agent, and nobody
// else would reap them; their zombies would fill the container's pid
// limit over a long run. On every SIGCHLD it reaps the zombie children of
// the agent that are not process group leaders. A task's own program leads
// its group and is reaped by executor.Host, which needs its exit status.
func reapOrphans(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			reapOnce()
		}
	}
}

// reapOnce reaps the agent's zombie children outside executor's care.
func reapOnce() {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 > len(b) {
			continue
		}
		f := strings.Fields(string(b[i+2:]))
		if len(f) < 3 || f[0] != "Z" || f[1] != self || f[2] == e.Name() {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}
