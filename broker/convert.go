package broker

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/store"
)

// attemptRecord converts a pilot's attempt record to the store's.
func attemptRecord(a *api.Attempt) store.Attempt {
	out := store.Attempt{
		Host: clean(a.Host), Slot: clean(a.Slot), ExitCode: a.ExitCode, Reason: clean(a.Reason),
		Stdout: clean(a.Stdout), Stderr: clean(a.Stderr), CustomText: clean(a.CustomText),
		BytesRead: a.BytesRead, BytesWritten: a.BytesWritten, InputBytes: a.InputBytes, OutputBytes: a.OutputBytes,
		CPUUser: time.Duration(a.CPUUserUS) * time.Microsecond, CPUSystem: time.Duration(a.CPUSystemUS) * time.Microsecond,
		MaxRSS:       a.MaxRSS,
		StartedAt:    deref(a.StartedAt),
		ProgramStart: deref(a.ProgramStart),
		ProgramEnd:   deref(a.ProgramEnd),
		ReportedAt:   deref(a.ReportedAt),
		Extra:        a.Extra,
	}
	for _, t := range a.UserTimes {
		out.UserTimestamps = append(out.UserTimestamps, store.LabeledTime{Time: t.Time, Label: clean(t.Label)})
	}
	return out
}

// clean makes program output storable as text in every store: invalid
// UTF-8 becomes U+FFFD and NUL bytes are dropped (PostgreSQL text rejects
// both).
func clean(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// attemptView converts a stored attempt for the API.
func attemptView(a *store.Attempt) api.Attempt {
	out := api.Attempt{
		ID: a.ID, TaskID: a.TaskID, Attempt: a.Attempt, PilotID: a.PilotID, Host: a.Host, Slot: a.Slot, Kind: a.Kind,
		ExitCode: a.ExitCode, Code: a.Code, Reason: a.Reason, Stdout: a.Stdout, Stderr: a.Stderr, CustomText: a.CustomText,
		BytesRead: a.BytesRead, BytesWritten: a.BytesWritten, InputBytes: a.InputBytes, OutputBytes: a.OutputBytes,
		CPUUserUS: a.CPUUser.Microseconds(), CPUSystemUS: a.CPUSystem.Microseconds(), MaxRSS: a.MaxRSS,
		CreatedAt: ptr(a.CreatedAt), LeasedAt: ptr(a.LeasedAt), StartedAt: ptr(a.StartedAt),
		ProgramStart: ptr(a.ProgramStart), ProgramEnd: ptr(a.ProgramEnd), ReportedAt: ptr(a.ReportedAt), RecordedAt: ptr(a.RecordedAt),
		Extra: a.Extra,
	}
	for _, t := range a.UserTimestamps {
		out.UserTimes = append(out.UserTimes, api.LabeledTime{Time: t.Time, Label: t.Label})
	}
	return out
}

// taskView converts a stored task for the API.
func (b *Broker) taskView(t *store.Task) api.Task {
	out := api.Task{
		ID: t.ID, AppID: t.AppID, ModuleID: t.ModuleID, Body: t.Body, Status: t.Status, StatusName: api.StatusName(t.Status),
		Attempts: t.Attempt, AppFailures: t.AppFailures, InfraFailures: t.InfraFailures, PilotID: t.PilotID,
		LeaseExpires: ptr(t.LeaseExpires), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
	}
	if err := json.Unmarshal([]byte(t.Headers), &out.Headers); err != nil || out.Headers == nil {
		out.Headers = map[string]string{}
	}
	b.mu.RLock()
	if m := b.modules[t.ModuleID]; m != nil {
		out.Module = m.name
	}
	b.mu.RUnlock()
	return out
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func ptr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
