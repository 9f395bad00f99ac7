package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

func TestZZScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ZZN"))
	if n == 0 {
		t.Skip()
	}
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Modules: []store.ModuleParams{{Name: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	mod := app.Modules[0].ID
	p, _ := s.PilotRegister(ctx, &store.Pilot{Host: "h"})
	t0 := time.Now()
	for i := 0; i < n; i += 10000 {
		in := make([]store.TaskInput, 10000)
		for j := range in {
			in[j] = store.TaskInput{ModuleID: mod, Body: fmt.Sprintf("in/file-%09d.dat", i+j), Headers: `{"a":"b"}`, Status: -1}
		}
		if _, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("add %d: %v", n, time.Since(t0))
	var tl, tc time.Duration
	done := 0
	for round := 0; done < n; round++ {
		a := time.Now()
		ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: p.ID, Modules: []store.ModuleLease{{ModuleID: mod, Max: 500}}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		b := time.Now()
		cs := make([]store.Completion, len(ls))
		for i, l := range ls {
			cs[i] = store.Completion{TaskID: l.TaskID, Attempt: l.Attempt, PilotID: p.ID, Record: store.Attempt{Stdout: "x", Extra: map[string]any{"a": 1}}}
		}
		if _, err := s.TaskComplete(ctx, store.TaskCompleteParams{Completions: cs}); err != nil {
			t.Fatal(err)
		}
		c := time.Now()
		tl += b.Sub(a)
		tc += c.Sub(b)
		done += len(ls)
		if round%200 == 199 {
			t.Logf("done %d: lease %v complete %v (per 500: %v / %v)", done, tl, tc, tl/200, tc/200)
			tl, tc = 0, 0
		}
	}
}
