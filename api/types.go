// Package api holds the wire types of the broker's REST API (JSON,
// snake_case), its stable error codes and a typed Go client. It imports no
// server or store code, so the pilot and the CLI stay small.
package api

import (
	"encoding/json"
	"strconv"
	"time"
)

// Version prefix of every route.
const Prefix = "/api/v1"

// Task status codes (Scalebox's).
const (
	StatusInitial = -9
	StatusReady   = -1
	StatusQueued  = -2
	StatusRunning = -3
	// StatusRetryWait: failed, waiting out the module's retry_backoff.
	StatusRetryWait = -4
	StatusOK        = 0
)

// StatusName renders a task status code for people.
func StatusName(code int) string {
	switch {
	case code == StatusInitial:
		return "INITIAL"
	case code == StatusReady:
		return "READY"
	case code == StatusQueued:
		return "QUEUED"
	case code == StatusRunning:
		return "RUNNING"
	case code == StatusRetryWait:
		return "RETRY_WAIT"
	case code == StatusOK:
		return "OK"
	case code > 0:
		return "ERROR(" + strconv.Itoa(code) + ")"
	default:
		return "SYSERR(" + strconv.Itoa(code) + ")"
	}
}

// Error is the body of every non-2xx response: {"error": {...}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Status  int    `json:"-"` // HTTP status, filled by the client
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Code + ": " + e.Field + ": " + e.Message
	}
	return e.Code + ": " + e.Message
}

// ErrorBody wraps Error on the wire.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Stable error codes.
const (
	CodeBadRequest   = "bad_request"
	CodeInvalidApp   = "invalid_app"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeTooLarge     = "too_large"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable"
)

// AppCreateRequest creates an app from app.yaml text. Vars are the
// variables the text refers to (the CLI resolves them from scalebox.env,
// --env-file and its environment). StartTasks, when set, replace each named
// module's start_task list (the CLI expands FILE: references locally).
type AppCreateRequest struct {
	YAML       string              `json:"yaml"`
	Filename   string              `json:"filename,omitempty"`
	Vars       map[string]string   `json:"vars,omitempty"`
	StartTasks map[string][]string `json:"start_tasks,omitempty"`
}

// App is an app as the API shows it.
type App struct {
	ID        int64           `json:"id"`
	Name      string          `json:"name"`
	Status    string          `json:"status"`
	Result    string          `json:"result,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	Modules   []Module        `json:"modules,omitempty"`
	Spec      json.RawMessage `json:"spec,omitempty"`
}

// Module is a module with its task counts by status name.
type Module struct {
	ID     int64            `json:"id"`
	Name   string           `json:"name"`
	Site   string           `json:"site,omitempty"`
	Counts map[string]int64 `json:"counts,omitempty"`
	Spec   json.RawMessage  `json:"spec,omitempty"`
}

// AppStatusRequest sets an app finished with a result text.
type AppStatusRequest struct {
	Result string `json:"result"`
}

// TaskInput is one task to add.
type TaskInput struct {
	Module  string            `json:"module,omitempty"` // module name; "" = the request's module
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers,omitempty"`
}

// TaskAddRequest adds tasks to an app, thousands per request.
type TaskAddRequest struct {
	Module   string      `json:"module,omitempty"`   // default module for tasks that name none
	Conflict string      `json:"conflict,omitempty"` // IGNORE (default) or OVERWRITE
	Tasks    []TaskInput `json:"tasks"`
}

// TaskActivateRequest makes INITIAL tasks of an app READY (Scalebox's
// initial_task_status: INITIAL, for dynamic scheduling).
type TaskActivateRequest struct {
	Module string  `json:"module,omitempty"` // "" = every module of the app
	IDs    []int64 `json:"ids,omitempty"`    // only these tasks
	Limit  int     `json:"limit,omitempty"`  // at most this many, oldest first; 0 = all
}

// TaskActivateResponse says how many tasks became READY.
type TaskActivateResponse struct {
	Activated int `json:"activated"`
}

// TaskAddResponse reports added tasks. IDs are in input order; a
// duplicate's id is the existing task's.
type TaskAddResponse struct {
	Inserted   int     `json:"inserted"`
	Duplicates int     `json:"duplicates"`
	IDs        []int64 `json:"ids"`
}

// Task is one task.
type Task struct {
	ID            int64             `json:"id"`
	AppID         int64             `json:"app_id"`
	ModuleID      int64             `json:"module_id"`
	Module        string            `json:"module,omitempty"`
	Body          string            `json:"body"`
	Headers       map[string]string `json:"headers"`
	Status        int               `json:"status"`
	StatusName    string            `json:"status_name"`
	Attempts      int               `json:"attempts"`
	AppFailures   int               `json:"app_failures"`
	InfraFailures int               `json:"infra_failures"`
	PilotID       int64             `json:"pilot_id,omitempty"`
	LeaseExpires  *time.Time        `json:"lease_expires,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// TaskList is a page of tasks; Next is the cursor of the next page (0: none).
type TaskList struct {
	Tasks []Task `json:"tasks"`
	Next  int64  `json:"next,omitempty"`
}

// TaskDetail is a task with all its attempts.
type TaskDetail struct {
	Task     Task      `json:"task"`
	Attempts []Attempt `json:"attempts"`
}

// LabeledTime is a user timestamp (timestamps.txt).
type LabeledTime struct {
	Time  time.Time `json:"time"`
	Label string    `json:"label,omitempty"`
}

// Attempt is the task perspective record of one execution.
type Attempt struct {
	ID           int64          `json:"id,omitempty"`
	TaskID       int64          `json:"task_id"`
	Attempt      int            `json:"attempt"`
	PilotID      int64          `json:"pilot_id,omitempty"`
	Host         string         `json:"host,omitempty"`
	Slot         string         `json:"slot,omitempty"`
	Kind         string         `json:"kind,omitempty"`
	ExitCode     int            `json:"exit_code"`
	Code         int            `json:"code"`
	Reason       string         `json:"reason,omitempty"`
	Stdout       string         `json:"stdout,omitempty"`
	Stderr       string         `json:"stderr,omitempty"`
	CustomText   string         `json:"custom_text,omitempty"`
	BytesRead    int64          `json:"bytes_read,omitempty"`
	BytesWritten int64          `json:"bytes_written,omitempty"`
	InputBytes   int64          `json:"input_bytes,omitempty"`
	OutputBytes  int64          `json:"output_bytes,omitempty"`
	CPUUserUS    int64          `json:"cpu_user_us,omitempty"`
	CPUSystemUS  int64          `json:"cpu_system_us,omitempty"`
	MaxRSS       int64          `json:"max_rss,omitempty"`
	CreatedAt    *time.Time     `json:"created_at,omitempty"`
	LeasedAt     *time.Time     `json:"leased_at,omitempty"`
	StartedAt    *time.Time     `json:"started_at,omitempty"`
	ProgramStart *time.Time     `json:"program_start,omitempty"`
	ProgramEnd   *time.Time     `json:"program_end,omitempty"`
	ReportedAt   *time.Time     `json:"reported_at,omitempty"`
	RecordedAt   *time.Time     `json:"recorded_at,omitempty"`
	UserTimes    []LabeledTime  `json:"user_timestamps,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// PilotRegistration registers a pilot.
type PilotRegistration struct {
	Site     string         `json:"site"`
	Host     string         `json:"host"`
	IP       string         `json:"ip,omitempty"`
	Cores    int            `json:"cores,omitempty"`
	MemoryMB int64          `json:"memory_mb,omitempty"`
	GPUs     int            `json:"gpus,omitempty"`
	Slots    map[string]int `json:"slots,omitempty"`
	JobID    string         `json:"job_id,omitempty"`
	Deadline *time.Time     `json:"deadline,omitempty"`
	Version  string         `json:"version,omitempty"`
}

// Pilot is a registered pilot.
type Pilot struct {
	ID           int64          `json:"id"`
	Site         string         `json:"site"`
	Host         string         `json:"host"`
	IP           string         `json:"ip,omitempty"`
	Cores        int            `json:"cores,omitempty"`
	MemoryMB     int64          `json:"memory_mb,omitempty"`
	GPUs         int            `json:"gpus,omitempty"`
	Slots        map[string]int `json:"slots,omitempty"`
	JobID        string         `json:"job_id,omitempty"`
	Deadline     *time.Time     `json:"deadline,omitempty"`
	Status       string         `json:"status"`
	Version      string         `json:"version,omitempty"`
	RegisteredAt time.Time      `json:"registered_at"`
	LastSeen     time.Time      `json:"last_seen"`
}

// PilotRegistered is the broker's answer to a registration.
type PilotRegistered struct {
	Pilot            Pilot   `json:"pilot"`
	LeaseTTLSeconds  float64 `json:"lease_ttl_seconds"`
	HeartbeatSeconds float64 `json:"heartbeat_seconds"`
}

// SlotRequest asks for up to Max tasks of one module, named by id or by
// (app id, module name).
type SlotRequest struct {
	ModuleID int64  `json:"module_id,omitempty"`
	AppID    int64  `json:"app_id,omitempty"`
	Module   string `json:"module,omitempty"`
	Max      int    `json:"max"`
}

// LeaseRequest asks for work; the broker holds the request up to
// WaitSeconds until work appears. With no Slots, the pilot takes work of any
// running app's modules on its site, up to Max tasks.
type LeaseRequest struct {
	Slots       []SlotRequest `json:"slots,omitempty"`
	Max         int           `json:"max,omitempty"`
	Hosts       []string      `json:"hosts,omitempty"`
	WaitSeconds float64       `json:"wait_seconds,omitempty"`
}

// LeasedTask is a task handed to a pilot.
type LeasedTask struct {
	TaskID    int64           `json:"task_id"`
	Attempt   int             `json:"attempt"`
	AppID     int64           `json:"app_id"`
	ModuleID  int64           `json:"module_id"`
	Module    string          `json:"module"`
	Body      string          `json:"body"`
	Headers   json.RawMessage `json:"headers"` // flat JSON object, passed to the module as $2 unchanged
	CreatedAt time.Time       `json:"created_at"`
	LeasedAt  time.Time       `json:"leased_at"`
	Expires   time.Time       `json:"expires"`
}

// LeaseResponse carries leased tasks (possibly none after the wait).
type LeaseResponse struct {
	Tasks []LeasedTask `json:"tasks"`
}

// TaskAttempt names one lease.
type TaskAttempt struct {
	TaskID  int64 `json:"task_id"`
	Attempt int   `json:"attempt"`
}

// HeartbeatRequest renews a pilot's leases and reports running attempts.
type HeartbeatRequest struct {
	Running []TaskAttempt `json:"running,omitempty"`
	// Held, with Reconcile, are the pilot's other attempts: leased to it
	// and queued there, or done and not yet reported. Only the leases of
	// Running and Held are renewed then; a lease whose grant never reached
	// the pilot runs out after its TTL.
	Held      []TaskAttempt `json:"held,omitempty"`
	Reconcile bool          `json:"reconcile,omitempty"`
}

// HeartbeatResponse lists attempts the pilot must stop (no longer its
// leases) and the pilot's status (DRAINING asks it to take no more work).
type HeartbeatResponse struct {
	Stale  []TaskAttempt `json:"stale,omitempty"`
	Status string        `json:"status"`
}

// Message is a task emitted by an attempt. Module "" means the emitting
// module's default sink (its first sink module, else the app's main router).
type Message struct {
	Module  string            `json:"module,omitempty"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Result is the outcome of one attempt.
type Result struct {
	TaskID   int64     `json:"task_id"`
	Attempt  int       `json:"attempt"`
	Code     int       `json:"code"`
	Infra    bool      `json:"infra,omitempty"` // failure not caused by the module (walltime, node)
	Record   Attempt   `json:"record"`
	Messages []Message `json:"messages,omitempty"`
}

// CompleteRequest reports results in a batch.
type CompleteRequest struct {
	Results []Result `json:"results"`
}

// CompleteResult says what became of one result.
type CompleteResult struct {
	TaskID     int64  `json:"task_id"`
	Applied    bool   `json:"applied"`
	Status     int    `json:"status"`
	Emitted    int    `json:"emitted"`
	Duplicates int    `json:"duplicates"`
	Error      string `json:"error,omitempty"` // why emitted messages were refused (the task then fails with 245)
}

// CompleteResponse answers a CompleteRequest, one result per input.
type CompleteResponse struct {
	Results []CompleteResult `json:"results"`
}

// Semaphore is one counter.
type Semaphore struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// SemaphoreCreateRequest creates semaphores.
type SemaphoreCreateRequest struct {
	Semaphores map[string]int64 `json:"semaphores"`
	Conflict   string           `json:"conflict,omitempty"`
}

// SemaphoreValue sets a semaphore.
type SemaphoreValue struct {
	Value int64 `json:"value"`
}

// SemaphoreIncrement adds Delta; AutoCreate creates a missing semaphore.
type SemaphoreIncrement struct {
	Delta      int64 `json:"delta"`
	AutoCreate bool  `json:"auto_create,omitempty"`
}

// Variable is one key/value.
type Variable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// VariableValue sets a variable.
type VariableValue struct {
	Value string `json:"value"`
}

// Site is where pilots run; Spec is its definition.
type Site struct {
	Name      string          `json:"name"`
	Kind      string          `json:"kind"`
	Spec      json.RawMessage `json:"spec,omitempty"`
	CreatedAt time.Time       `json:"created_at,omitzero"`
	UpdatedAt time.Time       `json:"updated_at,omitzero"`
	// Provisioning is the provisioner's view (GET of a batch site only).
	Provisioning *SiteProvisioning `json:"provisioning,omitempty"`
}

// SiteProvisioning is the provisioner's view of a batch site.
type SiteProvisioning struct {
	Wanted       int        `json:"wanted"`
	Live         int        `json:"live"`
	Pending      int        `json:"pending"`
	Failures     int        `json:"failures"`
	BackoffUntil *time.Time `json:"backoff_until,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	LastStatusAt *time.Time `json:"last_status_at,omitempty"`
}

// PilotJob is a batch job (or job array) that runs pilots of a site.
type PilotJob struct {
	ID          int64     `json:"id"`
	Site        string    `json:"site"`
	AppID       int64     `json:"app_id"`
	JobID       string    `json:"job_id,omitempty"`
	Count       int       `json:"count"`
	State       string    `json:"state"`
	Native      string    `json:"native,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	Final       bool      `json:"final"`
	SubmittedAt time.Time `json:"submitted_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// SiteSubmitRequest submits pilots to a site.
type SiteSubmitRequest struct {
	AppID int64 `json:"app_id"`
	Count int   `json:"count"`
}

// TokenRequest creates an API token.
type TokenRequest struct {
	Name string `json:"name,omitempty"`
	Role string `json:"role"`
	Site string `json:"site,omitempty"`
}

// TokenResponse carries a new token's secret, shown once.
type TokenResponse struct {
	Token string `json:"token"`
	Role  string `json:"role"`
	Site  string `json:"site,omitempty"`
}
