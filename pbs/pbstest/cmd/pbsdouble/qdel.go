package main

import (
	"fmt"
	"os"
	"os/user"
	"strings"
	"syscall"
)

// qdel deletes jobs: queued/held ones end at once (F, substate 91, no
// Exit_status); running ones are SIGTERMed by their supervisor. Finished
// jobs are left alone (rc 0), unknown ids print "qdel: Unknown Job Id X"
// (rc 153).
func qdel(st *state, args []string) int {
	rc := 0
	who := "root@" + serverName()
	if u, err := user.Current(); err == nil {
		who = u.Username + "@" + serverName()
	}
	for _, id := range args {
		if strings.HasPrefix(id, "-") {
			continue // -W force, -x: accepted
		}
		if r := deleteOne(st, id, who); r != 0 {
			rc = r
		}
	}
	return rc
}

func deleteOne(st *state, id, who string) int {
	unlock := st.lock()
	j := st.find(id)
	if j == nil {
		unlock()
		fmt.Fprintf(os.Stderr, "qdel: Unknown Job Id %s\n", id)
		return 153
	}
	var signal []int
	del := func(j *Job) {
		switch j.State {
		case "F", "X":
		case "Q", "H", "W", "T":
			j.State, j.Substate = "F", 91
			if j.ArrayIndex != nil {
				j.State = "X"
			}
			if j.Comment != "" {
				j.Comment += " and terminated"
			}
		default:
			j.DeleteReq, j.Deleter = true, who
			if j.Supervisor > 0 {
				signal = append(signal, j.Supervisor)
			}
		}
		st.save(j)
	}
	if j.Array {
		for _, s := range st.subjobs(j) {
			del(s)
		}
		if j.State == "Q" || j.State == "H" {
			del(j) // its supervisor, if any, sees F and runs nothing
		}
	} else {
		del(j)
	}
	unlock()
	for _, pid := range signal {
		syscall.Kill(pid, syscall.SIGUSR1)
	}
	return 0
}
