// Package store is the durable state of Scalebox: apps, modules, tasks, the
// per-attempt records of the task perspective, pilots, sites, semaphores,
// variables and API tokens.
//
// The package holds only the interface, its row types and sentinel errors.
// Implementations live beside it and are named after their dependency:
// store/postgres (jackc/pgx v5, production) and store/sqlite
// (modernc.org/sqlite, the zero-setup default). store/storetest is the one
// conformance suite both must pass.
//
// The store is deliberately policy-free: which module a message goes to,
// whether a failed attempt is retried and which apps may be leased from are
// decided by the broker and passed in (module ids, a RetryPolicy). The store
// guarantees atomicity and fencing:
//
//   - TaskLease hands a READY task to exactly one pilot, bumps its attempt
//     number (the fencing token) and sets a lease expiry.
//   - TaskComplete applies a result only if (task, attempt) still holds the
//     lease; in the same transaction it records the attempt row, moves the
//     task to its next status and inserts the messages the attempt emitted.
//     A stale result is recorded as fenced and changes nothing else.
//
// Task lifecycle (Scalebox status codes):
//
//	INITIAL(-9) --release--> READY(-1) --lease--> QUEUED(-2) --heartbeat--> RUNNING(-3)
//	                           ^                     |                          |
//	                           +---- retry / lease expired / released ---------+
//	                                                 |                          |
//	                                                 +---- complete ----> OK(0) | ERROR(>0) | SYSTEM(<-9)
package store

import (
	"context"
	"errors"
	"time"
)

// Task status codes, as in Scalebox.
const (
	StatusInitial = -9 // created but not dispatchable
	StatusReady   = -1 // waiting for a pilot
	StatusQueued  = -2 // leased to a pilot, not yet started
	StatusRunning = -3 // the pilot reported it running
	// StatusRetryWait: failed, waiting out its retry backoff; READY again
	// once TaskPromoteRetries finds it due.
	StatusRetryWait = -4
	StatusOK        = 0 // success; > 0 is the module's error code

	// System error codes (Scalebox's -100 range) for tasks whose
	// infrastructure retry budget ran out.
	StatusSysLost = -103 // pilot lost / lease expired too often
)

// IsFinal reports whether a task status is final (neither waiting nor leased).
func IsFinal(status int) bool { return status >= 0 || status < StatusInitial }

// App statuses.
const (
	AppInitial   = "INITIAL"
	AppRunning   = "RUNNING"
	AppPaused    = "PAUSED"
	AppFinished  = "FINISHED"
	AppCancelled = "CANCELLED"
)

// Pilot statuses.
const (
	PilotActive   = "ACTIVE"   // registered and heartbeating
	PilotDraining = "DRAINING" // takes no new work, finishes what it has
	PilotLost     = "LOST"     // missed its heartbeats; its leases were requeued
	PilotGone     = "GONE"     // deregistered cleanly
	// PilotQuarantined takes no work: its tasks failed fast again and again
	// (a black hole). The status outlives the pilot, so that its host is
	// left out of the site's later pilot jobs.
	PilotQuarantined = "QUARANTINED"
)

// Attempt kinds: what ended an attempt, and which budget it spent.
const (
	KindApp      = "app"      // the module ran and exited (0 or an error code)
	KindInfra    = "infra"    // infrastructure failure (pilot lost, lease expired, walltime, node)
	KindReleased = "released" // handed back by a draining pilot before it ran to the end
	KindFenced   = "fenced"   // a result for a lease that was no longer current: recorded, not applied
)

// Conflict actions for tasks whose (module, body) already exists.
const (
	ConflictIgnore    = "IGNORE"    // keep the existing task; report the new one as a duplicate
	ConflictOverwrite = "OVERWRITE" // replace headers and re-queue the existing task if it is final
	// A re-queued task takes the input's Status, keeps its attempt number (the
	// fencing token) and starts again with zero failure counters.
)

// Token roles.
const (
	RoleAdmin = "admin"
	RoleUser  = "user"
	RolePilot = "pilot"
)

// Sentinel errors. Implementations translate their drivers' errors to these.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)

// Store is the durable state behind the broker.
type Store interface {
	Apps
	Tasks
	Pilots
	Sites
	PilotJobs
	Coordination
	Tokens
	// Close releases the store's connections.
	Close() error
}

// Apps are pipelines of modules.
type Apps interface {
	// AppCreate inserts an app and its modules in one transaction.
	// ErrConflict if a module name repeats.
	AppCreate(ctx context.Context, p AppCreateParams) (*App, error)
	// AppGet returns the app with its modules. ErrNotFound.
	AppGet(ctx context.Context, id int64) (*App, error)
	// AppList returns all apps, newest first, with their modules.
	AppList(ctx context.Context) ([]*App, error)
	// AppSetStatus changes an app's status; result, when non-nil, replaces the
	// result text (set-finished). ErrNotFound.
	AppSetStatus(ctx context.Context, id int64, status string, result *string) error
	// AppTaskCounts returns the number of tasks per module and status.
	AppTaskCounts(ctx context.Context, appID int64) ([]StatusCount, error)
}

// Tasks are messages for modules, and their attempts.
type Tasks interface {
	// TaskAdd inserts tasks in one transaction. Tasks whose (module, body)
	// already exists, in the store or earlier in the same call, are
	// duplicates, handled by p.Conflict. The result lists one entry per input,
	// in order. Inputs are applied as if one at a time, in order; new tasks get
	// increasing ids in input order.
	TaskAdd(ctx context.Context, p TaskAddParams) (*TaskAddResult, error)
	// TaskGet returns one task. ErrNotFound.
	TaskGet(ctx context.Context, id int64) (*Task, error)
	// TaskActivate makes INITIAL tasks of an app dispatchable (READY):
	// those of p.ModuleID (0 = every module), only p.IDs if given, at most
	// p.Limit (0 = all), oldest first. It returns how many it moved.
	TaskActivate(ctx context.Context, p TaskActivateParams) (int, error)
	// TaskList returns tasks matching the filter, ordered by id, starting
	// after f.AfterID, at most f.Limit (default 100, max 10000).
	TaskList(ctx context.Context, f TaskFilter) ([]*Task, error)
	// TaskLease hands READY tasks of the requested modules to one pilot:
	// status QUEUED, attempt+1, pilot set, lease expiry now+TTL. A task goes
	// to one pilot at a time (SKIP LOCKED / single writer). Tasks bound to a
	// host (ToHost != "") are leased only by a pilot that lists that name
	// in p.Hosts. Oldest tasks first.
	TaskLease(ctx context.Context, p TaskLeaseParams) ([]*Lease, error)
	// TaskHeartbeat renews every lease the pilot holds (expiry now+TTL),
	// marks the listed attempts RUNNING, refreshes the pilot's last-seen time
	// and returns those listed attempts whose lease the pilot no longer holds
	// (the pilot must stop them).
	TaskHeartbeat(ctx context.Context, p TaskHeartbeatParams) (stale []TaskAttempt, err error)
	// TaskComplete applies results in one transaction; see the package
	// comment. The result has one entry per completion, in order.
	TaskComplete(ctx context.Context, p TaskCompleteParams) ([]CompleteResult, error)
	// TaskRelease hands leases back without spending any budget (a draining
	// or deregistering pilot): each still-current (task, attempt) goes back to
	// READY and an attempt row of kind "released" is recorded. With
	// All set, every lease of the pilot is released. Returns the number released.
	TaskRelease(ctx context.Context, p TaskReleaseParams) (int, error)
	// TaskPromoteRetries makes the RETRY_WAIT tasks that are due at now
	// READY and returns the modules of those it promoted (a module once per
	// promoted task).
	TaskPromoteRetries(ctx context.Context, now time.Time) ([]int64, error)
	// TaskExpireLeases finds leases that expired before p.Now, records an
	// "infra" attempt row for each, and moves each task to the status the
	// policy returns (READY to retry, or a final code). Returns those tasks.
	// The policy is called with code StatusSysLost and kind KindInfra.
	TaskExpireLeases(ctx context.Context, p TaskExpireParams) ([]*Task, error)
	// AttemptList returns a task's attempt rows, oldest first.
	AttemptList(ctx context.Context, taskID int64) ([]*Attempt, error)
}

// Pilots are the agents that lease and run tasks.
type Pilots interface {
	// PilotRegister inserts a pilot (status ACTIVE, last seen now) and returns it with its id.
	// "Now" is p.RegisteredAt, or the current time if that is zero.
	PilotRegister(ctx context.Context, p *Pilot) (*Pilot, error)
	// PilotGet returns one pilot. ErrNotFound.
	PilotGet(ctx context.Context, id int64) (*Pilot, error)
	// PilotList returns pilots, newest first; empty filter fields match all.
	PilotList(ctx context.Context, f PilotFilter) ([]*Pilot, error)
	// PilotSetStatus changes a pilot's status. ErrNotFound.
	PilotSetStatus(ctx context.Context, id int64, status string) error
	// PilotMarkLost marks ACTIVE/DRAINING pilots not seen since `before` as
	// LOST and returns them (their leases expire on their own).
	PilotMarkLost(ctx context.Context, before time.Time) ([]*Pilot, error)
}

// Sites are where pilots run (a Slurm partition, a PBS queue, this host).
type Sites interface {
	// SitePut inserts or replaces a site by name. A replaced site keeps its
	// original CreatedAt.
	SitePut(ctx context.Context, s *Site) error
	// SiteGet returns one site. ErrNotFound.
	SiteGet(ctx context.Context, name string) (*Site, error)
	// SiteList returns all sites by name.
	SiteList(ctx context.Context) ([]*Site, error)
}

// PilotJobs are the batch jobs (or job arrays) submitted to run pilots,
// with the scheduler's view of them, so users see pending, running, failed
// and finished pilot jobs, and a restarted broker keeps watching them.
type PilotJobs interface {
	// PilotJobAdd inserts a job record and returns it with its id.
	PilotJobAdd(ctx context.Context, j *PilotJob) (*PilotJob, error)
	// PilotJobGet returns one job record. ErrNotFound.
	PilotJobGet(ctx context.Context, id int64) (*PilotJob, error)
	// PilotJobList returns job records, newest first.
	PilotJobList(ctx context.Context, f PilotJobFilter) ([]*PilotJob, error)
	// PilotJobUpdate stores what the scheduler said of many jobs in one
	// transaction. ErrNotFound (and nothing stored) if an id is unknown.
	PilotJobUpdate(ctx context.Context, us []PilotJobUpdate) error
}

// Coordination holds app-scoped semaphores (integer counters) and variables
// (key/values), as Scalebox's `scalebox semaphore` and `scalebox variable`.
type Coordination interface {
	// SemaphoreCreate creates a semaphore with a value. ErrConflict if it exists
	// and conflict is not ConflictOverwrite (which sets the value).
	SemaphoreCreate(ctx context.Context, appID int64, name string, value int64, conflict string) error
	// SemaphoreGet returns a semaphore's value. ErrNotFound.
	SemaphoreGet(ctx context.Context, appID int64, name string) (int64, error)
	// SemaphoreList returns all semaphores of an app whose name starts with
	// prefix (a literal, case-sensitive prefix), ordered by name.
	SemaphoreList(ctx context.Context, appID int64, prefix string) ([]NameValue[int64], error)
	// SemaphoreSet sets an existing semaphore. ErrNotFound.
	SemaphoreSet(ctx context.Context, appID int64, name string, value int64) error
	// SemaphoreAdd adds delta atomically and returns the new value.
	// ErrNotFound unless autoCreate, which creates it at delta.
	SemaphoreAdd(ctx context.Context, appID int64, name string, delta int64, autoCreate bool) (int64, error)
	// VariableGet returns a variable's value. ErrNotFound.
	VariableGet(ctx context.Context, appID int64, name string) (string, error)
	// VariableSet creates or replaces a variable.
	VariableSet(ctx context.Context, appID int64, name, value string) error
	// VariableList returns all variables of an app whose name starts with
	// prefix (a literal, case-sensitive prefix), ordered by name.
	VariableList(ctx context.Context, appID int64, prefix string) ([]NameValue[string], error)
}

// Tokens are API credentials, stored as SHA-256 hashes.
type Tokens interface {
	// TokenCreate stores a token. ErrConflict if the hash exists.
	TokenCreate(ctx context.Context, t *Token) error
	// TokenLookup finds a token by its hash. ErrNotFound.
	TokenLookup(ctx context.Context, hash string) (*Token, error)
	// TokenCount returns the number of stored tokens.
	TokenCount(ctx context.Context) (int, error)
}

// RetryPolicy decides a task's next status after an attempt ends. It is
// called inside the completing transaction with the task's counters before
// this attempt is counted. Return StatusReady to retry, or a final status
// (usually code itself).
type RetryPolicy interface {
	Next(moduleID int64, code int, kind string, appFailures, infraFailures int) int
}

// RetryFunc adapts a function to RetryPolicy.
type RetryFunc func(moduleID int64, code int, kind string, appFailures, infraFailures int) int

// Next implements RetryPolicy.
func (f RetryFunc) Next(moduleID int64, code int, kind string, appFailures, infraFailures int) int {
	return f(moduleID, code, kind, appFailures, infraFailures)
}

// RetryDelayer is implemented by a RetryPolicy whose retries may wait: when
// Next retries an app failure, RetryDelay (given the task's app failures,
// this one included) says how long the task stays in StatusRetryWait before
// it is READY again; 0 retries at once.
type RetryDelayer interface {
	RetryDelay(moduleID int64, appFailures int) time.Duration
}

// RetryDelay is p's delay for a retry, 0 when p has none.
func RetryDelay(p RetryPolicy, moduleID int64, appFailures int) time.Duration {
	if d, ok := p.(RetryDelayer); ok {
		return max(d.RetryDelay(moduleID, appFailures), 0)
	}
	return 0
}

// NoRetry is a policy that never retries: the attempt's code is final.
var NoRetry RetryPolicy = RetryFunc(func(_ int64, code int, _ string, _, _ int) int { return code })

// App is a pipeline.
type App struct {
	ID        int64
	Name      string
	Status    string
	Spec      []byte // the normalised app definition as JSON (opaque to the store)
	Result    string // set-finished text
	Modules   []*Module
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Module is one stage of an app.
type Module struct {
	ID    int64
	AppID int64
	Name  string
	Site  string // "" = any site
	Spec  []byte // the normalised module definition as JSON (opaque to the store)
}

// AppCreateParams creates an app.
type AppCreateParams struct {
	Name    string
	Status  string
	Spec    []byte
	Modules []ModuleParams
	Now     time.Time
}

// ModuleParams creates a module.
type ModuleParams struct {
	Name string
	Site string
	Spec []byte
}

// StatusCount is the number of tasks of a module in one status.
type StatusCount struct {
	ModuleID int64
	Status   int
	Count    int64
}

// Task is one message for one module.
type Task struct {
	ID            int64
	AppID         int64
	ModuleID      int64
	Body          string
	Headers       string // flat JSON object
	Status        int
	Attempt       int // number of attempts started; the current lease's fencing token
	AppFailures   int // attempts that ended with a module error
	InfraFailures int // attempts that ended by infrastructure failure
	ToHost        string
	PilotID       int64     // current lease holder, 0 if none
	LeasedAt      time.Time // when the current/last lease was taken, zero if never
	LeaseExpires  time.Time // zero if not leased
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// TaskInput is a task to insert.
type TaskInput struct {
	ModuleID int64
	Body     string
	Headers  string // flat JSON object; "" is stored as "{}"
	Status   int    // StatusReady or StatusInitial
	ToHost   string // HOST-BOUND target, "" for any
}

// TaskAddParams inserts tasks.
type TaskAddParams struct {
	AppID    int64
	Tasks    []TaskInput
	Conflict string // ConflictIgnore (default) or ConflictOverwrite
	Now      time.Time
}

// TaskAddResult reports what TaskAdd did.
type TaskAddResult struct {
	IDs        []int64 // per input: the new task's id, or the existing task's id for a duplicate
	Duplicate  []bool  // per input: true if (module, body) existed
	Inserted   int     // new tasks, plus final tasks re-queued by ConflictOverwrite
	Duplicates int     // the other inputs; Inserted + Duplicates = len(Tasks)
}

// TaskFilter selects tasks.
type TaskFilter struct {
	AppID    int64 // 0 = any
	ModuleID int64 // 0 = any
	Status   *int  // nil = any
	AfterID  int64 // cursor
	Limit    int
}

// TaskActivateParams selects INITIAL tasks to make READY.
type TaskActivateParams struct {
	AppID    int64
	ModuleID int64   // 0 = every module of the app
	IDs      []int64 // nil = any
	Limit    int     // 0 = all
	Now      time.Time
}

// ModuleLease asks for up to Max tasks of one module.
type ModuleLease struct {
	ModuleID int64
	Max      int
}

// TaskLeaseParams leases tasks to one pilot.
type TaskLeaseParams struct {
	PilotID int64
	Modules []ModuleLease
	Hosts   []string // names and addresses of the pilot's host, for HOST-BOUND tasks
	TTL     time.Duration
	Now     time.Time
}

// Lease is a task handed to a pilot.
type Lease struct {
	TaskID    int64
	AppID     int64
	ModuleID  int64
	Body      string
	Headers   string
	Attempt   int
	CreatedAt time.Time
	LeasedAt  time.Time
	Expires   time.Time
}

// TaskAttempt names one attempt of one task (a lease).
type TaskAttempt struct {
	TaskID  int64
	Attempt int
}

// TaskHeartbeatParams renews a pilot's leases.
type TaskHeartbeatParams struct {
	PilotID int64
	Running []TaskAttempt // attempts that have started since the last heartbeat (or are running)
	// Held, with Reconcile, are the other attempts the pilot holds (leased
	// to it, queued there or done but not yet reported). Only the leases of
	// Held and Running are renewed then, so a lease whose grant never
	// reached the pilot (a response lost with a broker restart) expires
	// after its TTL instead of being renewed forever; a held attempt that
	// is no longer the pilot's is returned as stale. Without Reconcile
	// every lease of the pilot is renewed.
	Held      []TaskAttempt
	Reconcile bool
	TTL       time.Duration
	Now       time.Time
}

// Completion is the result of one attempt.
type Completion struct {
	TaskID   int64
	Attempt  int
	PilotID  int64
	Code     int         // 0 = OK, > 0 module error code (after task-exec.json overrides)
	Kind     string      // KindApp or KindInfra
	Record   Attempt     // the store fills ids, Kind, Code, CreatedAt, LeasedAt and RecordedAt
	Messages []TaskInput // emitted messages, module ids resolved by the broker
}

// TaskCompleteParams completes attempts.
type TaskCompleteParams struct {
	Completions []Completion
	Policy      RetryPolicy // nil = NoRetry
	Conflict    string      // for emitted messages; default ConflictIgnore
	Now         time.Time
}

// CompleteResult reports what happened to one completion. A completion for
// a task that does not exist is neither applied nor recorded.
type CompleteResult struct {
	Applied    bool      // false: fenced (recorded only)
	Status     int       // the task's status afterwards
	Emitted    int       // messages inserted
	Duplicates int       // messages that already existed
	RetryAt    time.Time // StatusRetryWait: when the task is READY again
}

// TaskReleaseParams hands leases back.
type TaskReleaseParams struct {
	PilotID  int64
	Attempts []TaskAttempt
	All      bool
	Reason   string
	Now      time.Time
}

// TaskExpireParams expires leases.
type TaskExpireParams struct {
	Now    time.Time
	Policy RetryPolicy // nil = always retry (StatusReady)
	Reason string
}

// Attempt is one execution of one task: the task perspective record.
// Timestamps that did not happen are zero. Stores keep every time, the user
// timestamps included, at microsecond precision (truncated).
type Attempt struct {
	ID       int64
	TaskID   int64
	AppID    int64
	ModuleID int64
	Attempt  int
	PilotID  int64
	Host     string
	Slot     string
	Kind     string // KindApp, KindInfra, KindReleased, KindFenced
	ExitCode int    // the program's exit code (-1 if it did not exit)
	Code     int    // the status code the attempt reported (task-exec.json overrides the exit code)
	Reason   string // why an infra/released/fenced attempt ended

	Stdout     string // capped (output_text_size), tail kept by default
	Stderr     string
	CustomText string // auxout.txt / custom-out.txt

	BytesRead    int64 // process tree, /proc/<pid>/io
	BytesWritten int64
	InputBytes   int64 // declared input-files.txt / task-exec.json
	OutputBytes  int64
	CPUUser      time.Duration
	CPUSystem    time.Duration
	MaxRSS       int64 // bytes

	CreatedAt    time.Time // task created (broker side)
	LeasedAt     time.Time // leased (broker side)
	StartedAt    time.Time // pilot began preparing the attempt (container side)
	ProgramStart time.Time // program exec'd
	ProgramEnd   time.Time // program exited
	ReportedAt   time.Time // pilot sent the result
	RecordedAt   time.Time // broker committed the row

	UserTimestamps []LabeledTime  // timestamps.txt
	Extra          map[string]any // extra-attributes.txt, runtime, image, iobytes… (JSON object)
}

// LabeledTime is a user timestamp with an optional label.
type LabeledTime struct {
	Time  time.Time `json:"time"`
	Label string    `json:"label,omitempty"`
}

// Pilot is an agent that leases tasks.
type Pilot struct {
	ID           int64
	Site         string
	Host         string
	IP           string
	Cores        int
	MemoryMB     int64
	GPUs         int
	Slots        string    // JSON: module slot counts the pilot serves
	JobID        string    // batch job id, if any
	Deadline     time.Time // walltime end, zero if unknown
	Status       string
	Version      string
	RegisteredAt time.Time
	LastSeen     time.Time
}

// PilotFilter selects pilots.
type PilotFilter struct {
	Site   string
	Status string
}

// Site is where pilots run.
type Site struct {
	Name      string
	Kind      string // local, slurm, pbs, ssh, kubernetes
	Spec      []byte // the site definition as JSON (opaque to the store)
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Pilot job states beyond batch.State's: a submission the scheduler refused.
const PilotJobRefused = "REFUSED"

// PilotJob is one submission of pilots to a site's batch scheduler.
type PilotJob struct {
	ID          int64
	Site        string
	AppID       int64  // the app its pilots serve
	JobID       string // the scheduler's id; "" if the submission was refused
	Count       int    // pilots in the job (array size)
	State       string // batch.State (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, UNKNOWN) or REFUSED
	Native      string // the scheduler's own state, for display
	Reason      string // the scheduler's reason or message
	ExitCode    *int   // when known
	Final       bool   // the job ended (or was refused): no more updates expected
	SubmittedAt time.Time
	UpdatedAt   time.Time
}

// PilotJobUpdate is the scheduler's latest word on one job.
type PilotJobUpdate struct {
	ID       int64
	State    string
	Native   string
	Reason   string
	ExitCode *int
	Final    bool
	At       time.Time // zero = now
}

// PilotJobFilter selects job records; zero fields match all.
type PilotJobFilter struct {
	Site   string
	AppID  int64
	Active bool // only jobs that are not final
	Limit  int  // 0 = all
}

// NameValue is one semaphore or variable.
type NameValue[T int64 | string] struct {
	Name  string
	Value T
}

// Token is an API credential.
type Token struct {
	Hash      string // hex SHA-256 of the secret
	Name      string
	Role      string // admin, user, pilot
	Site      string // pilot tokens: the only site they may act for
	CreatedAt time.Time
}
