package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/store"
)

// CodeMessageRejected is the status a task gets when the messages it
// emitted cannot be accepted (Scalebox's ExMessageSendException).
const CodeMessageRejected = 245

// RegisterPilot records a new pilot.
func (b *Broker) RegisterPilot(ctx context.Context, p Principal, r *api.PilotRegistration) (*api.PilotRegistered, error) {
	if r.Host == "" {
		return nil, errorf(api.CodeBadRequest, "host", "host is required")
	}
	if r.Site == "" {
		r.Site = "local"
	}
	if p.Role == store.RolePilot && p.Site != "" && p.Site != r.Site {
		return nil, errorf(api.CodeForbidden, "site", fmt.Sprintf("this token may register pilots for site %q only", p.Site))
	}
	slots := []byte("{}")
	if len(r.Slots) > 0 {
		slots, _ = json.Marshal(r.Slots)
	}
	sp := &store.Pilot{
		Site: r.Site, Host: r.Host, IP: r.IP, Cores: r.Cores, MemoryMB: r.MemoryMB, GPUs: r.GPUs,
		Slots: string(slots), JobID: r.JobID, Version: r.Version, RegisteredAt: b.now(), LastSeen: b.now(),
		Status: store.PilotActive,
	}
	if r.Deadline != nil {
		sp.Deadline = *r.Deadline
	}
	// A quarantined host takes no new pilots until released: a scheduler
	// that cannot exclude hosts (PBS) may start one there.
	quarantined, err := b.store.PilotList(ctx, store.PilotFilter{Site: r.Site, Status: store.PilotQuarantined})
	if err != nil {
		return nil, err
	}
	for _, q := range quarantined {
		if q.Host == r.Host {
			b.log.Warn("pilot refused: its host is quarantined", zap.String("host", r.Host), zap.String("site", r.Site), zap.Int64("quarantined_pilot", q.ID))
			return nil, errorf(api.CodeConflict, "host", fmt.Sprintf("host %s of site %s is quarantined (pilot %d: its tasks failed fast again and again); "+
				"once the node is repaired, lift it with `scalebox pilot release %d`", r.Host, r.Site, q.ID, q.ID))
		}
	}
	got, err := b.store.PilotRegister(ctx, sp)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.pilots[got.ID] = &pilotState{id: got.ID, site: got.Site, host: got.Host, status: got.Status}
	b.mu.Unlock()
	b.log.Info("pilot registered", zap.Int64("pilot", got.ID), zap.String("host", got.Host), zap.String("site", got.Site))
	return &api.PilotRegistered{
		Pilot:            pilotView(got),
		LeaseTTLSeconds:  b.cfg.LeaseTTL.Seconds(),
		HeartbeatSeconds: (b.cfg.LeaseTTL / 3).Seconds(),
	}, nil
}

// pilot returns the cached state of a pilot, checking the caller may act
// for it.
func (b *Broker) pilot(ctx context.Context, p Principal, id int64) (*pilotState, error) {
	b.mu.RLock()
	ps := b.pilots[id]
	b.mu.RUnlock()
	if ps == nil {
		sp, err := b.store.PilotGet(ctx, id)
		if err != nil {
			return nil, storeErr(err, fmt.Sprintf("pilot %d", id))
		}
		ps = &pilotState{id: sp.ID, site: sp.Site, host: sp.Host, status: sp.Status}
		b.mu.Lock()
		b.pilots[id] = ps
		b.mu.Unlock()
	}
	if p.Role == store.RolePilot && p.Site != "" && p.Site != ps.site {
		return nil, errorf(api.CodeForbidden, "", fmt.Sprintf("this token may act for site %q only", p.Site))
	}
	return ps, nil
}

func (b *Broker) pilotStatus(ps *pilotState) string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return ps.status
}

// Lease hands tasks to a pilot, waiting up to r.WaitSeconds for work.
func (b *Broker) Lease(ctx context.Context, p Principal, pilotID int64, r *api.LeaseRequest) (*api.LeaseResponse, error) {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return nil, err
	}
	switch b.pilotStatus(ps) {
	case store.PilotActive:
	case store.PilotDraining, store.PilotQuarantined:
		return &api.LeaseResponse{Tasks: []api.LeasedTask{}}, nil
	default:
		return nil, errorf(api.CodeConflict, "", fmt.Sprintf("pilot %d is %s; register again", pilotID, b.pilotStatus(ps)))
	}
	wait := time.Duration(r.WaitSeconds * float64(time.Second))
	if wait > b.cfg.MaxWait {
		wait = b.cfg.MaxWait
	}
	deadline := time.Now().Add(wait)
	var ch chan struct{}
	var registered []int64
	defer func() {
		if ch != nil {
			b.waiters.remove(ch, registered)
		}
	}()
	for {
		reqs, modIDs, err := b.slotRequests(ctx, ps, r)
		if err != nil {
			return nil, err
		}
		reqs, unreserve := b.reserveInflight(ps, b.siteLimit(ctx, ps.site), reqs)
		reqs, counted, err := b.gateVtasks(ctx, reqs)
		if err != nil {
			unreserve()
			return nil, err
		}
		if reqs, err = b.gateProgress(ctx, ps, reqs); err != nil {
			counted(nil)
			unreserve()
			return nil, err
		}
		var leased []*store.Lease
		if len(reqs) > 0 {
			leased, err = b.store.TaskLease(ctx, store.TaskLeaseParams{
				PilotID: pilotID, Modules: reqs, Hosts: r.Hosts, TTL: b.cfg.LeaseTTL, Now: b.now(),
			})
		}
		counted(leased)
		if err != nil {
			unreserve()
			return nil, err
		}
		if len(leased) > 0 || wait <= 0 {
			resp := b.leaseResponse(pilotID, leased)
			unreserve()
			return resp, nil
		}
		unreserve()
		// Register before the next look so that a wake-up between the
		// look and the wait is not lost.
		if ch == nil || !sameIDs(registered, modIDs) {
			if ch != nil {
				b.waiters.remove(ch, registered)
			}
			ch = make(chan struct{}, 1)
			registered = modIDs
			b.waiters.add(ch, registered)
			continue
		}
		left := time.Until(deadline)
		if left <= 0 {
			return b.leaseResponse(pilotID, nil), nil
		}
		if left > b.cfg.PollFallback {
			left = b.cfg.PollFallback
		}
		timer := time.NewTimer(left)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-b.stop:
			timer.Stop()
			return b.leaseResponse(pilotID, nil), nil
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func sameIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// slotRequests resolves a lease request to the modules of running apps the
// pilot may take work from.
func (b *Broker) slotRequests(ctx context.Context, ps *pilotState, r *api.LeaseRequest) ([]store.ModuleLease, []int64, error) {
	var out []store.ModuleLease
	var ids []int64
	if len(r.Slots) == 0 {
		max := r.Max
		if max <= 0 {
			max = 1
		}
		b.mu.RLock()
		for _, m := range b.modules {
			if m.app.status == store.AppRunning && (m.site == "" || m.site == ps.site) {
				out = append(out, store.ModuleLease{ModuleID: m.id, Max: max})
				ids = append(ids, m.id)
			}
		}
		b.mu.RUnlock()
		return capTotal(out, max), ids, nil
	}
	for i, s := range r.Slots {
		if s.Max <= 0 {
			continue
		}
		m, err := b.resolveSlot(ctx, s)
		if err != nil {
			if ae, ok := err.(*api.Error); ok {
				ae.Field = fmt.Sprintf("slots[%d]", i)
			}
			return nil, nil, err
		}
		if m.site != "" && m.site != ps.site {
			return nil, nil, errorf(api.CodeForbidden, fmt.Sprintf("slots[%d]", i),
				fmt.Sprintf("module %s runs on site %q, this pilot is on %q", m.name, m.site, ps.site))
		}
		ids = append(ids, m.id)
		b.mu.RLock()
		running := m.app.status == store.AppRunning
		b.mu.RUnlock()
		if running {
			out = append(out, store.ModuleLease{ModuleID: m.id, Max: s.Max})
		}
	}
	return out, ids, nil
}

// capTotal spreads a pilot's total budget over the modules it may take
// work from (a request without slots), so that it never gets more than max
// tasks in all: an equal share each, at least one (with more modules than
// max, each may still yield one).
func capTotal(reqs []store.ModuleLease, max int) []store.ModuleLease {
	if len(reqs) <= 1 {
		return reqs
	}
	share := max / len(reqs)
	if share < 1 {
		share = 1
	}
	for i := range reqs {
		reqs[i].Max = share
	}
	return reqs
}

func (b *Broker) resolveSlot(ctx context.Context, s api.SlotRequest) (*moduleState, error) {
	if s.ModuleID != 0 {
		b.mu.RLock()
		m := b.modules[s.ModuleID]
		b.mu.RUnlock()
		if m == nil {
			return nil, errorf(api.CodeNotFound, "", fmt.Sprintf("module %d not found", s.ModuleID))
		}
		return m, nil
	}
	if s.AppID == 0 || s.Module == "" {
		return nil, errorf(api.CodeBadRequest, "", "a slot names module_id, or app_id and module")
	}
	a, err := b.app(ctx, s.AppID)
	if err != nil {
		return nil, err
	}
	m := a.modules[s.Module]
	if m == nil {
		return nil, errorf(api.CodeNotFound, "", fmt.Sprintf("app %d has no module %q", s.AppID, s.Module))
	}
	return m, nil
}

func (b *Broker) leaseResponse(pilotID int64, leased []*store.Lease) *api.LeaseResponse {
	out := &api.LeaseResponse{Tasks: make([]api.LeasedTask, len(leased))}
	if len(leased) == 0 {
		return out
	}
	b.metrics.leased.Add(float64(len(leased)))
	b.mu.Lock()
	for i, l := range leased {
		b.leases[l.TaskID] = leaseInfo{moduleID: l.ModuleID, attempt: l.Attempt, pilotID: pilotID}
		name := ""
		if m := b.modules[l.ModuleID]; m != nil {
			name = m.name
		}
		out.Tasks[i] = api.LeasedTask{
			TaskID: l.TaskID, Attempt: l.Attempt, AppID: l.AppID, ModuleID: l.ModuleID, Module: name,
			Body: l.Body, Headers: json.RawMessage(l.Headers), CreatedAt: l.CreatedAt, LeasedAt: l.LeasedAt, Expires: l.Expires,
		}
	}
	b.mu.Unlock()
	return out
}

// Heartbeat renews a pilot's leases and marks started attempts RUNNING.
func (b *Broker) Heartbeat(ctx context.Context, p Principal, pilotID int64, r *api.HeartbeatRequest) (*api.HeartbeatResponse, error) {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return nil, err
	}
	status := b.pilotStatus(ps)
	if status == store.PilotLost || status == store.PilotGone {
		// Its leases are gone or going: everything it runs is stale.
		return &api.HeartbeatResponse{Stale: append(r.Running, r.Held...), Status: status}, nil
	}
	stale, err := b.store.TaskHeartbeat(ctx, store.TaskHeartbeatParams{PilotID: pilotID, Running: storeAttempts(r.Running),
		Held: storeAttempts(r.Held), Reconcile: r.Reconcile, TTL: b.cfg.LeaseTTL, Now: b.now()})
	if err != nil {
		return nil, err
	}
	out := &api.HeartbeatResponse{Status: status}
	for _, s := range stale {
		out.Stale = append(out.Stale, api.TaskAttempt{TaskID: s.TaskID, Attempt: s.Attempt})
	}
	return out, nil
}

// Complete applies a batch of results: fenced by lease, with the emitted
// messages stored in the same transaction.
func (b *Broker) Complete(ctx context.Context, p Principal, pilotID int64, r *api.CompleteRequest) (*api.CompleteResponse, error) {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return nil, err
	}
	now := b.now()
	comps := make([]store.Completion, len(r.Results))
	rejected := make([]string, len(r.Results))
	for i := range r.Results {
		res := &r.Results[i]
		c := store.Completion{TaskID: res.TaskID, Attempt: res.Attempt, PilotID: pilotID, Code: res.Code, Kind: store.KindApp,
			Record: attemptRecord(&res.Record)}
		if res.Infra {
			c.Kind = store.KindInfra
		}
		if c.Record.ReportedAt.IsZero() {
			c.Record.ReportedAt = now
		}
		if len(res.Messages) > 0 {
			msgs, err := b.routeMessages(ctx, pilotID, res)
			if err != nil {
				rejected[i] = err.Error()
				c.Code = CodeMessageRejected
				c.Kind = store.KindApp
				c.Record.Reason = "messages rejected: " + err.Error()
			} else {
				c.Messages = msgs
			}
		}
		comps[i] = c
	}
	results, err := b.store.TaskComplete(ctx, store.TaskCompleteParams{Completions: comps, Policy: b.policy(), Now: now})
	if err != nil {
		return nil, err
	}
	out := &api.CompleteResponse{Results: make([]api.CompleteResult, len(results))}
	var wake []int64
	applied, fenced := 0, 0
	b.mu.Lock()
	quarantine := ""
	if ps.status == store.PilotActive || ps.status == store.PilotDraining {
		quarantine = b.quarantineFor(ps, comps, results, now)
	}
	progress := b.progressOf(comps, results)
	for i, res := range results {
		out.Results[i] = api.CompleteResult{TaskID: comps[i].TaskID, Applied: res.Applied, Status: res.Status,
			Emitted: res.Emitted, Duplicates: res.Duplicates, Error: rejected[i]}
		if !res.Applied {
			fenced++
			continue
		}
		applied++
		if res.Status == store.StatusRetryWait {
			b.retryAt(res.RetryAt)
		}
		li, ok := b.leases[comps[i].TaskID]
		delete(b.leases, comps[i].TaskID)
		if ok && (res.Status == store.StatusReady || b.modules[li.moduleID] != nil && b.modules[li.moduleID].maxInflight > 0) {
			wake = append(wake, li.moduleID) // a retry to lease, or room under max_inflight
		}
		if res.Emitted > 0 {
			for _, m := range comps[i].Messages {
				wake = append(wake, m.ModuleID)
			}
		}
	}
	b.mu.Unlock()
	if quarantine != "" {
		b.quarantine(ctx, ps, quarantine)
	}
	b.countProgress(ctx, ps, progress)
	woken := map[int64]bool{}
	for _, m := range wake {
		if !woken[m] {
			woken[m] = true
			b.waiters.wake(m)
		}
	}
	b.metrics.results.WithLabelValues("applied").Add(float64(applied))
	b.metrics.results.WithLabelValues("fenced").Add(float64(fenced))
	return out, nil
}

// routeMessages resolves the modules of the messages an attempt emitted and
// stamps from_module.
func (b *Broker) routeMessages(ctx context.Context, pilotID int64, res *api.Result) ([]store.TaskInput, error) {
	b.mu.RLock()
	li, ok := b.leases[res.TaskID]
	b.mu.RUnlock()
	var moduleID, appID int64
	if ok && li.attempt == res.Attempt && li.pilotID == pilotID {
		moduleID = li.moduleID
	} else {
		// Not leased by this process (broker restarted) or stale: read the
		// task; the store fences stale results anyway.
		t, err := b.store.TaskGet(ctx, res.TaskID)
		if err != nil {
			return nil, storeErr(err, fmt.Sprintf("task %d", res.TaskID))
		}
		moduleID, appID = t.ModuleID, t.AppID
	}
	from, err := b.moduleByID(ctx, appID, moduleID)
	if err != nil {
		return nil, err
	}
	out := make([]store.TaskInput, 0, len(res.Messages))
	for i, msg := range res.Messages {
		name := msg.Module
		if name == "" {
			name = from.defaultSink()
			if name == "" {
				return nil, fmt.Errorf("message %d: module %s has no sink module and the app no main router", i, from.name)
			}
		}
		to := from.app.modules[name]
		if to == nil {
			return nil, fmt.Errorf("message %d: app %s has no module %q", i, from.app.name, name)
		}
		h := msg.Headers
		if h["from_module"] == "" {
			h = copyHeaders(h, len(h)+1)
			h["from_module"] = from.name
		}
		in, err := taskInput(to, msg.Body, h)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		out = append(out, in)
	}
	return out, nil
}

func copyHeaders(h map[string]string, n int) map[string]string {
	out := make(map[string]string, n)
	for k, v := range h {
		out[k] = v
	}
	return out
}

// Deregister ends a pilot cleanly: its leases go back to READY without
// spending any budget.
func (b *Broker) Deregister(ctx context.Context, p Principal, pilotID int64) error {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return err
	}
	n, err := b.store.TaskRelease(ctx, store.TaskReleaseParams{PilotID: pilotID, All: true, Reason: "pilot deregistered", Now: b.now()})
	if err != nil {
		return err
	}
	// A quarantined pilot stays so: its host is left out of later jobs.
	status := store.PilotGone
	if b.pilotStatus(ps) == store.PilotQuarantined {
		status = store.PilotQuarantined
	}
	if err := b.store.PilotSetStatus(ctx, pilotID, status); err != nil {
		return storeErr(err, fmt.Sprintf("pilot %d", pilotID))
	}
	b.mu.Lock()
	ps.status = status
	var mods []int64
	for id, li := range b.leases {
		if li.pilotID == pilotID {
			delete(b.leases, id)
			mods = append(mods, li.moduleID)
		}
	}
	b.mu.Unlock()
	for _, m := range mods {
		b.waiters.wake(m)
	}
	b.log.Info("pilot deregistered", zap.Int64("pilot", pilotID), zap.Int("released", n))
	return nil
}

// DrainPilot asks a pilot to take no more work; it learns it at its next
// heartbeat or lease.
func (b *Broker) DrainPilot(ctx context.Context, p Principal, pilotID int64) error {
	ps, err := b.pilot(ctx, p, pilotID)
	if err != nil {
		return err
	}
	if err := b.store.PilotSetStatus(ctx, pilotID, store.PilotDraining); err != nil {
		return storeErr(err, fmt.Sprintf("pilot %d", pilotID))
	}
	b.mu.Lock()
	ps.status = store.PilotDraining
	b.mu.Unlock()
	return nil
}

func pilotView(p *store.Pilot) api.Pilot {
	out := api.Pilot{ID: p.ID, Site: p.Site, Host: p.Host, IP: p.IP, Cores: p.Cores, MemoryMB: p.MemoryMB, GPUs: p.GPUs,
		JobID: p.JobID, Status: p.Status, Version: p.Version, RegisteredAt: p.RegisteredAt, LastSeen: p.LastSeen}
	if !p.Deadline.IsZero() {
		d := p.Deadline
		out.Deadline = &d
	}
	_ = json.Unmarshal([]byte(p.Slots), &out.Slots)
	return out
}

func storeAttempts(in []api.TaskAttempt) []store.TaskAttempt {
	out := make([]store.TaskAttempt, len(in))
	for i, ta := range in {
		out[i] = store.TaskAttempt{TaskID: ta.TaskID, Attempt: ta.Attempt}
	}
	return out
}

// siteLimit is a site's limits.max_inflight (0 = none, or no such site).
func (b *Broker) siteLimit(ctx context.Context, name string) int {
	b.mu.RLock()
	n, ok := b.siteInflight[name]
	b.mu.RUnlock()
	if ok {
		return n
	}
	if st, err := b.store.SiteGet(ctx, name); err == nil && len(st.Spec) > 2 {
		if sp, err := site.Parse("spec", st.Spec); err == nil {
			n = sp.Limits.MaxInflight
		}
	}
	b.mu.Lock()
	if b.siteInflight == nil {
		b.siteInflight = map[string]int{}
	}
	b.siteInflight[name] = n
	b.mu.Unlock()
	return n
}

// reserveInflight trims lease requests to what each module's max_inflight
// and the pilot's site's limit (siteLimit, 0 = none) leave room for,
// counting the leases outstanding and those being granted by concurrent
// requests; unreserve gives the reservation back once the granted leases
// are recorded (or none were).
func (b *Broker) reserveInflight(ps *pilotState, siteLimit int, reqs []store.ModuleLease) ([]store.ModuleLease, func()) {
	if !b.inflightLimited(siteLimit, reqs) {
		return reqs, func() {}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	siteRoom := -1 // no limit
	if siteLimit > 0 {
		used := b.siteReserved[ps.site]
		for _, li := range b.leases {
			if p := b.pilots[li.pilotID]; p != nil && p.site == ps.site {
				used++
			}
		}
		siteRoom = max(siteLimit-used, 0)
	}
	var held map[int64]int
	siteHeld := 0
	out := reqs[:0:0]
	for _, r := range reqs {
		if siteRoom == 0 {
			break
		}
		if siteRoom > 0 {
			r.Max = min(r.Max, siteRoom)
		}
		if m := b.modules[r.ModuleID]; m != nil && m.maxInflight > 0 {
			limit := m.maxInflight
			inflight := b.reserved[r.ModuleID]
			for _, li := range b.leases {
				if li.moduleID == r.ModuleID {
					inflight++
				}
			}
			r.Max = min(r.Max, limit-inflight)
			if r.Max <= 0 {
				continue
			}
			if b.reserved == nil {
				b.reserved = map[int64]int{}
			}
			if held == nil {
				held = map[int64]int{}
			}
			b.reserved[r.ModuleID] += r.Max
			held[r.ModuleID] += r.Max
		}
		if siteRoom > 0 {
			siteRoom -= r.Max
			siteHeld += r.Max
		}
		out = append(out, r)
	}
	if siteHeld > 0 {
		if b.siteReserved == nil {
			b.siteReserved = map[string]int{}
		}
		b.siteReserved[ps.site] += siteHeld
	}
	return out, func() {
		if held == nil && siteHeld == 0 {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for m, n := range held {
			b.reserved[m] -= n
		}
		if siteHeld > 0 {
			b.siteReserved[ps.site] -= siteHeld
		}
	}
}

// inflightLimited reports whether a site or module limit applies to reqs,
// so that most leases skip the broker's write lock and the lease count.
func (b *Broker) inflightLimited(siteLimit int, reqs []store.ModuleLease) bool {
	if siteLimit > 0 {
		return true
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, r := range reqs {
		if m := b.modules[r.ModuleID]; m != nil && m.maxInflight > 0 {
			return true
		}
	}
	return false
}
