package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

const primesYAML = `
name: app-primes-test
parameters:
  main_router: mr-module
modules:
  my-module:
    base_image: app-primes/calc:${TAG}
    site: local
    slots: ["h0:1"]
    parameters:
      retry_rules: "['1:3','2:2','*']"
  mr-module:
    base_image: agent
    parameters:
      start_task: "1000"
`

type bundle struct {
	b      *broker.Broker
	client *api.Client
	srv    *httptest.Server
	ctx    context.Context
}

func setup(t *testing.T, cfg broker.Config) *bundle {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir()+"/scalebox.db")
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	b := broker.New(st, cfg, zaptest.NewLogger(t))
	require.NoError(t, b.Start(ctx))
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(func() { b.Close(); srv.Close() })
	return &bundle{b: b, client: api.NewClient(srv.URL, ""), srv: srv, ctx: ctx}
}

func (tb *bundle) createApp(t *testing.T) *api.App {
	t.Helper()
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: primesYAML, Vars: map[string]string{"TAG": "bash"}})
	require.NoError(t, err)
	return a
}

func (tb *bundle) register(t *testing.T) int64 {
	t.Helper()
	r, err := tb.client.PilotRegister(tb.ctx, &api.PilotRegistration{Site: "local", Host: "n0", Cores: 2})
	require.NoError(t, err)
	return r.Pilot.ID
}

func moduleCounts(a *api.App, name string) map[string]int64 {
	for _, m := range a.Modules {
		if m.Name == name {
			return m.Counts
		}
	}
	return nil
}

func TestAppCreateAddsStartTasks(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	require.Equal(t, "app-primes-test", a.Name)
	require.Equal(t, "RUNNING", a.Status)
	require.Equal(t, map[string]int64{"READY": 1}, moduleCounts(a, "mr-module"))

	apps, err := tb.client.AppList(tb.ctx)
	require.NoError(t, err)
	require.Len(t, apps, 1)
}

func TestBadAppIsRejectedWithItsLine(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	_, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: "name: x\nmodules:\n  a:\n    sink_modules: [nope]\n", Filename: "bad.yaml"})
	require.True(t, api.IsCode(err, api.CodeInvalidApp), "%v", err)
	require.Contains(t, err.Error(), "bad.yaml:4")
	require.Contains(t, err.Error(), "nope")

	_, err = tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: primesYAML})
	require.True(t, api.IsCode(err, api.CodeInvalidApp), "undefined ${TAG}: %v", err)
	require.Contains(t, err.Error(), "TAG")
}

func TestBadBodiesNameTheField(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	for _, c := range []struct{ body, want string }{
		{`{"tasks":[{"body":""}]}`, "tasks[0].body"},
		{`{"tasks":[{"module":"nope","body":"x"}]}`, "tasks[0].module"},
		{`{"tasks":[{"body":"x","headers":{"a":1}}]}`, "headers"},
		{`{"tasks":[],"bogus":1}`, "bogus"},
		{`{"conflict":"MAYBE","tasks":[{"body":"x"}]}`, "conflict"},
		{`not json`, "invalid JSON"},
		{`{"tasks":[{"body":"a\u0000b"}]}`, "without NUL"},
	} {
		resp, err := http.Post(tb.srv.URL+"/api/v1/apps/"+itoa(a.ID)+"/tasks", "application/json", strings.NewReader(c.body))
		require.NoError(t, err)
		var body strings.Builder
		_, _ = ioCopy(&body, resp)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, c.body+" → "+body.String())
		require.Contains(t, body.String(), c.want, c.body)
		require.Contains(t, body.String(), `"code":"bad_request"`)
	}
}

func TestLongPollIsWokenByNewWork(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)

	got := make(chan *api.LeaseResponse, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{
			Slots: []api.SlotRequest{{AppID: a.ID, Module: "my-module", Max: 4}}, WaitSeconds: 30})
		got <- r
		errc <- err
	}()
	require.Eventually(t, func() bool { return tb.b.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	start := time.Now()
	_, err := tb.client.TaskAdd(tb.ctx, a.ID, &api.TaskAddRequest{Module: "my-module", Tasks: []api.TaskInput{{Body: "000000001_000000100"}}})
	require.NoError(t, err)
	r := <-got
	require.NoError(t, <-errc)
	require.Less(t, time.Since(start), 5*time.Second, "woken, not timed out")
	require.Len(t, r.Tasks, 1)
	require.Equal(t, "000000001_000000100", r.Tasks[0].Body)
	require.Equal(t, 1, r.Tasks[0].Attempt)
	require.JSONEq(t, `{}`, string(r.Tasks[0].Headers))
}

func TestCompleteEmitsMessagesAndFencesStaleResults(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)

	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 1)
	lt := r.Tasks[0]

	msgs := []api.Message{
		{Module: "my-module", Body: "000000001_000000100", Headers: map[string]string{"len": "100"}},
		{Module: "my-module", Body: "000000101_000000200"},
		{Module: "my-module", Body: "000000101_000000200"}, // duplicate
	}
	res, err := tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{
		TaskID: lt.TaskID, Attempt: lt.Attempt, Code: 0, Messages: msgs,
		Record: api.Attempt{Host: "n0", Stdout: "split 1000", Stderr: "bad\x00bytes\xff", ExitCode: 0},
	}}})
	require.NoError(t, err)
	require.Equal(t, []api.CompleteResult{{TaskID: lt.TaskID, Applied: true, Status: 0, Emitted: 2, Duplicates: 1}}, res.Results)

	// The same result again is stale: recorded as fenced, nothing emitted twice.
	res, err = tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{
		TaskID: lt.TaskID, Attempt: lt.Attempt, Code: 0, Messages: msgs}}})
	require.NoError(t, err)
	require.False(t, res.Results[0].Applied)

	view, err := tb.client.AppGet(tb.ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"READY": 2}, moduleCounts(view, "my-module"))
	require.Equal(t, map[string]int64{"OK": 1}, moduleCounts(view, "mr-module"))

	d, err := tb.client.TaskGet(tb.ctx, lt.TaskID)
	require.NoError(t, err)
	require.Equal(t, "OK", d.Task.StatusName)
	require.Len(t, d.Attempts, 2)
	require.Equal(t, "app", d.Attempts[0].Kind)
	require.Equal(t, "split 1000", d.Attempts[0].Stdout)
	require.Equal(t, "badbytes\uFFFD", d.Attempts[0].Stderr, "NUL dropped, invalid UTF-8 replaced")
	require.NotNil(t, d.Attempts[0].LeasedAt)
	require.NotNil(t, d.Attempts[0].RecordedAt)
	require.Equal(t, "fenced", d.Attempts[1].Kind)

	list, err := tb.client.TaskList(tb.ctx, api.TaskListParams{AppID: a.ID, Module: "my-module"})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 2)
	require.Equal(t, "mr-module", list.Tasks[0].Headers["from_module"])
	require.Equal(t, "100", list.Tasks[0].Headers["len"])
}

func TestRetryRulesAndDefaultSink(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)
	_, err := tb.client.TaskAdd(tb.ctx, a.ID, &api.TaskAddRequest{Module: "my-module", Tasks: []api.TaskInput{{Body: "t2"}}})
	require.NoError(t, err)

	// retry_rules '2:2': exit 2 is retried twice → three attempts, final status 2.
	var last api.CompleteResult
	for i := 1; i <= 3; i++ {
		r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "my-module", Max: 1}}})
		require.NoError(t, err)
		require.Len(t, r.Tasks, 1, "attempt %d", i)
		require.Equal(t, i, r.Tasks[0].Attempt)
		res, err := tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{
			TaskID: r.Tasks[0].TaskID, Attempt: i, Code: 2,
			// A message with no module goes to the default sink: the main router.
			Messages: []api.Message{{Body: "partial-" + itoa(int64(i))}},
		}}})
		require.NoError(t, err)
		last = res.Results[0]
	}
	require.Equal(t, 2, last.Status)
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "my-module", Max: 1}}})
	require.NoError(t, err)
	require.Empty(t, r.Tasks)

	view, err := tb.client.AppGet(tb.ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, int64(4), moduleCounts(view, "mr-module")["READY"], "start task + 3 partial messages")
}

func TestMessageToUnknownModuleFailsTheTaskWith245(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}})
	require.NoError(t, err)
	res, err := tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{
		TaskID: r.Tasks[0].TaskID, Attempt: 1, Code: 0, Messages: []api.Message{{Module: "nope", Body: "x"}}}}})
	require.NoError(t, err)
	require.True(t, res.Results[0].Applied)
	require.Equal(t, broker.CodeMessageRejected, res.Results[0].Status)
	require.Contains(t, res.Results[0].Error, `no module "nope"`)
}

func TestPausedAppIsNotLeased(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)
	_, err := tb.client.AppAction(tb.ctx, a.ID, "pause")
	require.NoError(t, err)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r.Tasks)

	got := make(chan int, 1)
	go func() {
		r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots, WaitSeconds: 30})
		if err != nil {
			got <- -1
			return
		}
		got <- len(r.Tasks)
	}()
	require.Eventually(t, func() bool { return tb.b.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	_, err = tb.client.AppAction(tb.ctx, a.ID, "resume")
	require.NoError(t, err)
	require.Equal(t, 1, <-got)

	_, err = tb.client.AppSetFinished(tb.ctx, a.ID, "Result is 168")
	require.NoError(t, err)
	view, err := tb.client.AppGet(tb.ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, "FINISHED", view.Status)
	require.Equal(t, "Result is 168", view.Result)
	_, err = tb.client.AppAction(tb.ctx, a.ID, "resume")
	require.True(t, api.IsCode(err, api.CodeConflict), "%v", err)
}

func TestExpiredLeaseIsRetriedAsInfra(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{LeaseTTL: time.Hour})
	now := time.Now()
	tb.b.SetClock(func() time.Time { return now })
	a := tb.createApp(t)
	pilot := tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 1)

	now = now.Add(2 * time.Hour)
	require.NoError(t, tb.b.Sweep(tb.ctx))
	d, err := tb.client.TaskGet(tb.ctx, r.Tasks[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, "READY", d.Task.StatusName)
	require.Equal(t, 1, d.Task.InfraFailures)
	require.Equal(t, 0, d.Task.AppFailures)
	require.Equal(t, "infra", d.Attempts[0].Kind)

	// The late result of the expired lease is fenced.
	res, err := tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{TaskID: r.Tasks[0].TaskID, Attempt: 1}}})
	require.NoError(t, err)
	require.False(t, res.Results[0].Applied)
}

func TestDeregisterReleasesLeases(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	pilot := tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 1)
	require.NoError(t, tb.client.Deregister(tb.ctx, pilot))
	d, err := tb.client.TaskGet(tb.ctx, r.Tasks[0].TaskID)
	require.NoError(t, err)
	require.Equal(t, "READY", d.Task.StatusName)
	require.Equal(t, 0, d.Task.InfraFailures+d.Task.AppFailures)

	_, err = tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.True(t, api.IsCode(err, api.CodeConflict), "%v", err)
}

func TestSemaphoresAndVariables(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a := tb.createApp(t)
	_, err := tb.client.SemaphoreIncrement(tb.ctx, a.ID, "app-primes:sum_value", 25, false)
	require.True(t, api.IsCode(err, api.CodeNotFound), "%v", err)
	for _, n := range []int64{25, 21, 16} {
		_, err := tb.client.SemaphoreIncrement(tb.ctx, a.ID, "app-primes:sum_value", n, true)
		require.NoError(t, err)
	}
	s, err := tb.client.SemaphoreGet(tb.ctx, a.ID, "app-primes:sum_value")
	require.NoError(t, err)
	require.Equal(t, int64(62), s.Value)
	require.NoError(t, tb.client.SemaphoreCreate(tb.ctx, a.ID, &api.SemaphoreCreateRequest{Semaphores: map[string]int64{"vtask_size:head": 2}}))
	err = tb.client.SemaphoreCreate(tb.ctx, a.ID, &api.SemaphoreCreateRequest{Semaphores: map[string]int64{"vtask_size:head": 2}})
	require.True(t, api.IsCode(err, api.CodeConflict), "%v", err)
	list, err := tb.client.SemaphoreList(tb.ctx, a.ID, "vtask")
	require.NoError(t, err)
	require.Equal(t, []api.Semaphore{{Name: "vtask_size:head", Value: 2}}, list)

	_, err = tb.client.VariableSet(tb.ctx, a.ID, "target", "/data/out")
	require.NoError(t, err)
	v, err := tb.client.VariableGet(tb.ctx, a.ID, "target")
	require.NoError(t, err)
	require.Equal(t, "/data/out", v.Value)
	_, err = tb.client.VariableGet(tb.ctx, a.ID, "missing")
	require.True(t, api.IsCode(err, api.CodeNotFound))
}

func TestAuthRoles(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{Auth: true})
	tokenFile := t.TempDir() + "/token"
	require.NoError(t, tb.b.BootstrapAdminToken(tb.ctx, tokenFile))
	adminTok := readFile(t, tokenFile)

	anon := tb.client
	_, err := anon.AppList(tb.ctx)
	require.True(t, api.IsCode(err, api.CodeUnauthorized), "%v", err)

	admin := api.NewClient(tb.srv.URL, adminTok)
	userTok, err := admin.TokenCreate(tb.ctx, &api.TokenRequest{Role: "user"})
	require.NoError(t, err)
	pilotTok, err := admin.TokenCreate(tb.ctx, &api.TokenRequest{Role: "pilot", Site: "hpc1"})
	require.NoError(t, err)
	_, err = admin.TokenCreate(tb.ctx, &api.TokenRequest{Role: "pilot"})
	require.True(t, api.IsCode(err, api.CodeBadRequest), "pilot token without site: %v", err)

	user := api.NewClient(tb.srv.URL, userTok.Token)
	a, err := user.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: primesYAML, Vars: map[string]string{"TAG": "x"}})
	require.NoError(t, err)
	_, err = user.TokenCreate(tb.ctx, &api.TokenRequest{Role: "admin"})
	require.True(t, api.IsCode(err, api.CodeForbidden), "%v", err)

	pilot := api.NewClient(tb.srv.URL, pilotTok.Token)
	_, err = pilot.PilotRegister(tb.ctx, &api.PilotRegistration{Site: "other", Host: "n1"})
	require.True(t, api.IsCode(err, api.CodeForbidden), "%v", err)
	reg, err := pilot.PilotRegister(tb.ctx, &api.PilotRegistration{Site: "hpc1", Host: "n1"})
	require.NoError(t, err)
	// my-module runs on site "local": a pilot of hpc1 may not lease it.
	_, err = pilot.Lease(tb.ctx, reg.Pilot.ID, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "my-module", Max: 1}}})
	require.True(t, api.IsCode(err, api.CodeForbidden), "%v", err)
	_, err = pilot.AppAction(tb.ctx, a.ID, "cancel")
	require.True(t, api.IsCode(err, api.CodeForbidden), "%v", err)

	// A pilot of another site may not act for this pilot.
	other, err := admin.TokenCreate(tb.ctx, &api.TokenRequest{Role: "pilot", Site: "hpc2"})
	require.NoError(t, err)
	_, err = api.NewClient(tb.srv.URL, other.Token).Heartbeat(tb.ctx, reg.Pilot.ID, &api.HeartbeatRequest{})
	require.True(t, api.IsCode(err, api.CodeForbidden), "%v", err)

	// The token file is the credential: a restart registers it again.
	require.NoError(t, tb.b.BootstrapAdminToken(tb.ctx, tokenFile))
}

func TestHealthzAndMetrics(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	require.NoError(t, tb.client.Healthz(tb.ctx))
	tb.createApp(t)
	resp, err := http.Get(tb.srv.URL + "/metrics")
	require.NoError(t, err)
	var body strings.Builder
	_, _ = ioCopy(&body, resp)
	require.Contains(t, body.String(), "scalebox_tasks_added_total 1")
	require.Contains(t, body.String(), `scalebox_http_requests_total{code="201",method="POST",route="/api/v1/apps"} 1`)
}

// A broker that restarts after an outage longer than the lease TTL gives
// its pilots one TTL to re-attach before it expires leases or declares
// pilots lost: the restart costs no running task.
func TestRestartGivesPilotsATTLToReattach(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir()+"/scalebox.db")
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	clock := func() time.Time { return now }
	start := func() *bundle {
		b := broker.New(st, broker.Config{LeaseTTL: time.Minute, ExpiryInterval: time.Hour}, zaptest.NewLogger(t))
		b.SetClock(clock)
		require.NoError(t, b.Start(ctx))
		srv := httptest.NewServer(b.Handler())
		t.Cleanup(func() { b.Close(); srv.Close() })
		return &bundle{b: b, client: api.NewClient(srv.URL, ""), srv: srv, ctx: ctx}
	}
	tb := start()
	a := tb.createApp(t)
	pilot := tb.register(t)
	r, err := tb.client.Lease(ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "mr-module", Max: 1}}})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 1)
	held := api.TaskAttempt{TaskID: r.Tasks[0].TaskID, Attempt: r.Tasks[0].Attempt}
	tb.b.Close()

	// Ten minutes down, then a new broker on the same store.
	now = now.Add(10 * time.Minute)
	tb = start()
	require.NoError(t, tb.b.Sweep(ctx))
	d, err := tb.client.TaskGet(ctx, held.TaskID)
	require.NoError(t, err)
	require.Equal(t, "QUEUED", d.Task.StatusName, "no lease expires in the first TTL after a start")

	// The pilot's next heartbeat re-attaches it and renews what it holds.
	now = now.Add(20 * time.Second)
	hb, err := tb.client.Heartbeat(ctx, pilot, &api.HeartbeatRequest{Reconcile: true, Held: []api.TaskAttempt{held}})
	require.NoError(t, err)
	require.Empty(t, hb.Stale)
	require.Equal(t, "ACTIVE", hb.Status)
	now = now.Add(50 * time.Second) // past the grace, within the renewed lease
	require.NoError(t, tb.b.Sweep(ctx))
	d, err = tb.client.TaskGet(ctx, held.TaskID)
	require.NoError(t, err)
	require.Equal(t, "QUEUED", d.Task.StatusName)
	require.Empty(t, d.Attempts)

	// Silent from then on: expired and lost as usual.
	now = now.Add(3 * time.Minute)
	require.NoError(t, tb.b.Sweep(ctx))
	d, err = tb.client.TaskGet(ctx, held.TaskID)
	require.NoError(t, err)
	require.Equal(t, "READY", d.Task.StatusName)
	require.Equal(t, "infra", d.Attempts[0].Kind)
}

// A pilot whose tasks fail fast again and again (a black hole) is
// quarantined when the module asks for it (task_min_seconds): it gets no
// more work, learns it at its heartbeat, and stays quarantined after it
// leaves, so that its host is left out of later pilot jobs.
func TestBlackHolePilotIsQuarantined(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{QuarantineAfter: 3})
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: bh
modules:
  m:
    parameters: {task_min_seconds: 10}
`})
	require.NoError(t, err)
	var in []api.TaskInput
	for i := range 6 {
		in = append(in, api.TaskInput{Module: "m", Body: strconv.Itoa(i)})
	}
	_, err = tb.client.TaskAdd(tb.ctx, a.ID, &api.TaskAddRequest{Tasks: in})
	require.NoError(t, err)
	bad, good := tb.register(t), tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "m", Max: 1}}
	run := func(pilot int64, code int, ran time.Duration) *api.CompleteResponse {
		r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
		require.NoError(t, err)
		require.Len(t, r.Tasks, 1)
		start := time.Now()
		end := start.Add(ran)
		res, err := tb.client.Complete(tb.ctx, pilot, &api.CompleteRequest{Results: []api.Result{{TaskID: r.Tasks[0].TaskID,
			Attempt: r.Tasks[0].Attempt, Code: code, Record: api.Attempt{ExitCode: code, ProgramStart: &start, ProgramEnd: &end}}}})
		require.NoError(t, err)
		return res
	}
	status := func(id int64) string {
		ps, err := tb.client.PilotList(tb.ctx)
		require.NoError(t, err)
		for _, p := range ps {
			if p.ID == id {
				return p.Status
			}
		}
		return ""
	}
	run(bad, 1, 100*time.Millisecond)
	run(bad, 1, 20*time.Second) // a slow failure breaks the streak
	run(bad, 1, 100*time.Millisecond)
	run(bad, 1, 100*time.Millisecond)
	require.Equal(t, "ACTIVE", status(bad))
	run(bad, 1, 100*time.Millisecond) // third fast failure in a row
	require.Equal(t, "QUARANTINED", status(bad))

	r, err := tb.client.Lease(tb.ctx, bad, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r.Tasks, "a quarantined pilot gets no work")
	hb, err := tb.client.Heartbeat(tb.ctx, bad, &api.HeartbeatRequest{})
	require.NoError(t, err)
	require.Equal(t, "QUARANTINED", hb.Status)
	require.NoError(t, tb.client.Deregister(tb.ctx, bad))
	require.Equal(t, "QUARANTINED", status(bad), "the verdict outlives the pilot")
	// Its host takes no new pilot (PBS cannot leave it out of a job).
	_, err = tb.client.PilotRegister(tb.ctx, &api.PilotRegistration{Host: "n0"})
	require.True(t, api.IsCode(err, api.CodeConflict), "%v", err)
	require.Contains(t, err.Error(), "quarantined")

	// Lifted by hand once the node is repaired; only a quarantine can be.
	var released api.Pilot
	require.NoError(t, tb.client.Do(tb.ctx, "POST", fmt.Sprintf("/pilots/%d/release", bad), nil, &released))
	require.Equal(t, "DRAINING", released.Status, "heard from within a TTL: it goes on draining")
	require.Equal(t, "DRAINING", status(bad))
	err = tb.client.Do(tb.ctx, "POST", fmt.Sprintf("/pilots/%d/release", bad), nil, nil)
	require.True(t, api.IsCode(err, api.CodeConflict), "%v", err)
	_, err = tb.client.PilotRegister(tb.ctx, &api.PilotRegistration{Host: "n0"})
	require.NoError(t, err, "released: the host takes pilots again")

	// Fast failures elsewhere are the module's, not a black hole's, as long
	// as they are not all in a row on one pilot.
	run(good, 0, 100*time.Millisecond)
	require.Equal(t, "ACTIVE", status(good))
}

// An attempt RUNNING beyond task_global_timeout_scale × task_max_seconds
// is ended by the broker with 123 (Scalebox's server-side timeout); the
// pilot still holding it finds it stale.
func TestStuckRunningAttemptEndsWith123(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{LeaseTTL: time.Hour})
	now := time.Now().Add(2 * time.Hour) // past the broker's start-up grace
	tb.b.SetClock(func() time.Time { return now })
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: stuck
modules:
  m:
    parameters: {task_max_seconds: 10, task_global_timeout_scale: 1.5, start_task: x}
`})
	require.NoError(t, err)
	pilot := tb.register(t)
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "m", Max: 1}}})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 1)
	ta := api.TaskAttempt{TaskID: r.Tasks[0].TaskID, Attempt: r.Tasks[0].Attempt}
	_, err = tb.client.Heartbeat(tb.ctx, pilot, &api.HeartbeatRequest{Running: []api.TaskAttempt{ta}, Reconcile: true})
	require.NoError(t, err)

	now = now.Add(14 * time.Second) // within 1.5 × 10 s; heartbeats do not reset the clock
	hb, err := tb.client.Heartbeat(tb.ctx, pilot, &api.HeartbeatRequest{Running: []api.TaskAttempt{ta}, Reconcile: true})
	require.NoError(t, err)
	require.Empty(t, hb.Stale)
	require.NoError(t, tb.b.Sweep(tb.ctx))
	d, err := tb.client.TaskGet(tb.ctx, ta.TaskID)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", d.Task.StatusName)

	now = now.Add(2 * time.Second) // 16 s > 15 s
	require.NoError(t, tb.b.Sweep(tb.ctx))
	d, err = tb.client.TaskGet(tb.ctx, ta.TaskID)
	require.NoError(t, err)
	require.Equal(t, 123, d.Task.Status)
	require.Len(t, d.Attempts, 1)
	require.Equal(t, 123, d.Attempts[0].Code)
	require.Equal(t, "app", d.Attempts[0].Kind)
	require.Contains(t, d.Attempts[0].Reason, "stuck RUNNING")
	hb, err = tb.client.Heartbeat(tb.ctx, pilot, &api.HeartbeatRequest{Running: []api.TaskAttempt{ta}, Reconcile: true})
	require.NoError(t, err)
	require.Equal(t, []api.TaskAttempt{ta}, hb.Stale)
}

// max_inflight bounds a module's leased tasks across all pilots; a
// completion makes room again.
func TestMaxInflightAcrossPilots(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: inflight
modules:
  m:
    parameters: {max_inflight: 2}
`})
	require.NoError(t, err)
	var in []api.TaskInput
	for i := range 5 {
		in = append(in, api.TaskInput{Module: "m", Body: strconv.Itoa(i)})
	}
	_, err = tb.client.TaskAdd(tb.ctx, a.ID, &api.TaskAddRequest{Tasks: in})
	require.NoError(t, err)
	p1, p2 := tb.register(t), tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "m", Max: 5}}
	r1, err := tb.client.Lease(tb.ctx, p1, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r1.Tasks, 2)
	r2, err := tb.client.Lease(tb.ctx, p2, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r2.Tasks, "two in flight already")

	_, err = tb.client.Complete(tb.ctx, p1, &api.CompleteRequest{Results: []api.Result{{TaskID: r1.Tasks[0].TaskID, Attempt: r1.Tasks[0].Attempt}}})
	require.NoError(t, err)
	r2, err = tb.client.Lease(tb.ctx, p2, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r2.Tasks, 1)
}

// INITIAL tasks are not dispatched until they are activated.
func TestInitialTasksWaitForActivation(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: initial
modules:
  m:
    parameters: {initial_task_status: INITIAL, start_task: [one, two, three]}
`})
	require.NoError(t, err)
	pilot := tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "m", Max: 10}}
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r.Tasks)

	// A waiting pilot is woken by the activation.
	got := make(chan []api.LeasedTask, 1)
	go func() {
		r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots, WaitSeconds: 30})
		if err != nil {
			got <- nil
			return
		}
		got <- r.Tasks
	}()
	res, err := tb.client.TaskActivate(tb.ctx, a.ID, &api.TaskActivateRequest{Module: "m", Limit: 2})
	require.NoError(t, err)
	require.Equal(t, 2, res.Activated)
	require.Len(t, <-got, 2)

	_, err = tb.client.TaskActivate(tb.ctx, a.ID, &api.TaskActivateRequest{Module: "nope"})
	require.True(t, api.IsCode(err, api.CodeNotFound), "%v", err)
	res, err = tb.client.TaskActivate(tb.ctx, a.ID, &api.TaskActivateRequest{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Activated)
}

// vtask_size: the module's counter gates new work; the scripts give it
// back at the vtask's end.
func TestVtaskCounterGatesLeases(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: vtask
modules:
  head:
    parameters: {vtask_size: 2, start_task: [v1, v2, v3, v4]}
`})
	require.NoError(t, err)
	s, err := tb.client.SemaphoreGet(tb.ctx, a.ID, "vtask_size:head")
	require.NoError(t, err)
	require.EqualValues(t, 2, s.Value, "created with the app")
	pilot := tb.register(t)
	slots := []api.SlotRequest{{AppID: a.ID, Module: "head", Max: 10}}
	r, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r.Tasks, 2)
	s, err = tb.client.SemaphoreGet(tb.ctx, a.ID, "vtask_size:head")
	require.NoError(t, err)
	require.EqualValues(t, 0, s.Value)
	r2, err := tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r2.Tasks, "counter at 0: no new vtask")

	// A vtask ends: its tail gives the count back.
	_, err = tb.client.SemaphoreIncrement(tb.ctx, a.ID, "vtask_size:head", 1, false)
	require.NoError(t, err)
	r2, err = tb.client.Lease(tb.ctx, pilot, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r2.Tasks, 1)
}

// A site's limits.max_inflight bounds the tasks leased to its pilots, all
// modules together.
func TestSiteMaxInflight(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	_, err := tb.client.SitePut(tb.ctx, &api.Site{Name: "small", Kind: "local",
		Spec: json.RawMessage(`{"name": "small", "kind": "local", "limits": {"max_inflight": 3}}`)})
	require.NoError(t, err)
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: site-inflight
modules:
  x: {parameters: {start_task: [x1, x2, x3, x4]}}
  y: {parameters: {start_task: [y1, y2, y3, y4]}}
`})
	require.NoError(t, err)
	reg := func() int64 {
		r, err := tb.client.PilotRegister(tb.ctx, &api.PilotRegistration{Site: "small", Host: "n", Cores: 2})
		require.NoError(t, err)
		return r.Pilot.ID
	}
	p1, p2 := reg(), reg()
	slots := []api.SlotRequest{{AppID: a.ID, Module: "x", Max: 2}, {AppID: a.ID, Module: "y", Max: 2}}
	r1, err := tb.client.Lease(tb.ctx, p1, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r1.Tasks, 3, "three for the site, whatever the modules")
	r2, err := tb.client.Lease(tb.ctx, p2, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Empty(t, r2.Tasks)
	_, err = tb.client.Complete(tb.ctx, p1, &api.CompleteRequest{Results: []api.Result{{TaskID: r1.Tasks[0].TaskID, Attempt: r1.Tasks[0].Attempt}}})
	require.NoError(t, err)
	r2, err = tb.client.Lease(tb.ctx, p2, &api.LeaseRequest{Slots: slots})
	require.NoError(t, err)
	require.Len(t, r2.Tasks, 1)
	// Another site's pilots are not limited.
	other := tb.register(t)
	r3, err := tb.client.Lease(tb.ctx, other, &api.LeaseRequest{Slots: []api.SlotRequest{{AppID: a.ID, Module: "x", Max: 4}, {AppID: a.ID, Module: "y", Max: 4}}})
	require.NoError(t, err)
	require.Len(t, r3.Tasks, 4, "the 4 tasks left")
}

// node_progress_gap keeps a module's hosts together: a host may not get
// the gap ahead of the slowest of its group.
func TestNodeProgressGap(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{})
	a, err := tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: `name: progress
modules:
  m:
    parameters: {node_progress_gap: '{"h": 1}', start_task: [t1, t2, t3, t4, t5, t6]}
`})
	require.NoError(t, err)
	reg := func(host string) int64 {
		r, err := tb.client.PilotRegister(tb.ctx, &api.PilotRegistration{Site: "local", Host: host, Cores: 1})
		require.NoError(t, err)
		return r.Pilot.ID
	}
	fast, slow := reg("h1"), reg("h2")
	slots := []api.SlotRequest{{AppID: a.ID, Module: "m", Max: 1}}
	lease := func(p int64) []api.LeasedTask {
		r, err := tb.client.Lease(tb.ctx, p, &api.LeaseRequest{Slots: slots})
		require.NoError(t, err)
		return r.Tasks
	}
	done := func(p int64, lt api.LeasedTask) {
		_, err := tb.client.Complete(tb.ctx, p, &api.CompleteRequest{Results: []api.Result{{TaskID: lt.TaskID, Attempt: lt.Attempt}}})
		require.NoError(t, err)
	}
	s := lease(slow) // h2 starts one and takes its time
	require.Len(t, s, 1)
	f := lease(fast)
	require.Len(t, f, 1)
	done(fast, f[0])
	require.Empty(t, lease(fast), "h1 is 1 ahead of h2: held back")
	done(slow, s[0])
	require.Len(t, lease(fast), 1, "h2 caught up")

	for _, bad := range []string{`'{"(": 1}'`, `'{"h": 0}'`, `"0"`} {
		_, err = tb.client.AppCreate(tb.ctx, &api.AppCreateRequest{YAML: "name: bad\nmodules:\n  m:\n    parameters: {node_progress_gap: " + bad + "}\n"})
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "node_progress_gap", bad)
	}
}
