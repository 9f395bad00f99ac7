package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/provision"
	"github.com/scalebox-hpc/scalebox/store"
)

// Provisioner submits and cancels pilot jobs (package provision).
type Provisioner interface {
	Submit(ctx context.Context, site string, appID int64, count int) (*store.PilotJob, error)
	CancelJob(ctx context.Context, id int64) (*store.PilotJob, error)
	CancelPilot(ctx context.Context, id int64) (*store.Pilot, error)
	Status(site string) provision.SiteStatus
}

func (b *Broker) provisioner() (Provisioner, error) {
	if b.cfg.Provisioner == nil {
		return nil, errorf(api.CodeUnavailable, "", "this broker does not submit pilot jobs (it was started with --no-provision)")
	}
	return b.cfg.Provisioner, nil
}

// provisionErr maps the provisioner's errors to API errors; a scheduler
// that refused keeps its own message.
func provisionErr(err error, what string) error {
	var ce *batch.CommandError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(api.CodeNotFound, "", what+" not found")
	case errors.Is(err, provision.ErrNotBatch):
		return errorf(api.CodeBadRequest, "", err.Error())
	case errors.As(err, &ce):
		return errorf(api.CodeBadRequest, "", fmt.Sprintf("%s: %v", what, err))
	}
	return err
}

// SubmitPilots submits pilots to a batch site now.
func (b *Broker) SubmitPilots(ctx context.Context, site string, r *api.SiteSubmitRequest) (*api.PilotJob, error) {
	pv, err := b.provisioner()
	if err != nil {
		return nil, err
	}
	if r.Count < 1 || r.Count > 100000 {
		return nil, errorf(api.CodeBadRequest, "count", "count must be between 1 and 100000, not "+strconv.Itoa(r.Count))
	}
	if _, err := b.app(ctx, r.AppID); err != nil {
		return nil, err
	}
	j, err := pv.Submit(ctx, site, r.AppID, r.Count)
	if err != nil {
		return nil, provisionErr(err, "site "+site)
	}
	v := pilotJobView(j)
	return &v, nil
}

// ListPilotJobs lists pilot jobs, newest first.
func (b *Broker) ListPilotJobs(ctx context.Context, f store.PilotJobFilter) ([]api.PilotJob, error) {
	js, err := b.store.PilotJobList(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]api.PilotJob, len(js))
	for i, j := range js {
		out[i] = pilotJobView(j)
	}
	return out, nil
}

// CancelPilotJob cancels all pilots of a pilot job.
func (b *Broker) CancelPilotJob(ctx context.Context, id int64) (*api.PilotJob, error) {
	pv, err := b.provisioner()
	if err != nil {
		return nil, err
	}
	j, err := pv.CancelJob(ctx, id)
	if err != nil {
		return nil, provisionErr(err, "pilot job "+strconv.FormatInt(id, 10))
	}
	v := pilotJobView(j)
	return &v, nil
}

// CancelPilot cancels the batch job a pilot runs in; the pilot drains on
// the scheduler's signal and its unfinished tasks go back as infra.
func (b *Broker) CancelPilot(ctx context.Context, id int64) (*api.Pilot, error) {
	pv, err := b.provisioner()
	if err != nil {
		return nil, err
	}
	p, err := pv.CancelPilot(ctx, id)
	if err != nil {
		return nil, provisionErr(err, "pilot "+strconv.FormatInt(id, 10))
	}
	v := pilotView(p)
	return &v, nil
}

func pilotJobView(j *store.PilotJob) api.PilotJob {
	return api.PilotJob{ID: j.ID, Site: j.Site, AppID: j.AppID, JobID: j.JobID, Count: j.Count, State: j.State,
		Native: j.Native, Reason: j.Reason, ExitCode: j.ExitCode, Final: j.Final, SubmittedAt: j.SubmittedAt, UpdatedAt: j.UpdatedAt}
}

func provisioningView(s provision.SiteStatus) *api.SiteProvisioning {
	v := &api.SiteProvisioning{Wanted: s.Wanted, Live: s.Live, Pending: s.Pending, Failures: s.Failures, LastError: s.LastError}
	v.BackoffUntil = optTime(s.BackoffUntil)
	v.LastStatusAt = optTime(s.LastStatusAt)
	return v
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
