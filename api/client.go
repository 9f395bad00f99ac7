package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls the broker's REST API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the broker at base (e.g.
// "http://127.0.0.1:8080"); token may be empty when auth is off. A base
// "unix:///path/to.sock" talks HTTP over that unix socket: a task inside a
// container without a network reaches its pilot that way.
func NewClient(base, token string) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if sock, ok := strings.CutPrefix(base, "unix://"); ok {
		var d net.Dialer
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", sock)
		}
		base = "http://localhost"
	}
	return &Client{
		base:  strings.TrimRight(base, "/"),
		token: token,
		http:  &http.Client{Transport: tr},
	}
}

// NewClientWith returns a client for the broker at base that sends its
// requests through hc: many clients can share one transport (a process
// simulating a thousand pilots, a bridge).
func NewClientWith(base, token string, hc *http.Client) *Client {
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// Token returns the client's token.
func (c *Client) Token() string { return c.token }

// Base returns the broker address.
func (c *Client) Base() string { return c.base }

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Do sends a JSON request and decodes a JSON response into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+Prefix+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			eb.Error.Status = resp.StatusCode
			return eb.Error
		}
		return &Error{Code: CodeInternal, Status: resp.StatusCode,
			Message: fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response of %s %s: %w", method, path, err)
	}
	return nil
}

// AppCreate creates an app from app.yaml text.
func (c *Client) AppCreate(ctx context.Context, r *AppCreateRequest) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodPost, "/apps", r, &out)
}

// AppList lists apps.
func (c *Client) AppList(ctx context.Context) ([]App, error) {
	var out []App
	return out, c.Do(ctx, http.MethodGet, "/apps", nil, &out)
}

// AppGet shows one app with per-module task counts.
func (c *Client) AppGet(ctx context.Context, id int64) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodGet, "/apps/"+itoa(id), nil, &out)
}

// AppAction pauses, resumes or cancels an app ("pause", "resume", "cancel").
func (c *Client) AppAction(ctx context.Context, id int64, action string) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodPost, "/apps/"+itoa(id)+"/"+action, nil, &out)
}

// AppSetFinished marks an app finished with a result text.
func (c *Client) AppSetFinished(ctx context.Context, id int64, result string) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodPost, "/apps/"+itoa(id)+"/finish", &AppStatusRequest{Result: result}, &out)
}

// TaskAdd adds tasks to an app.
func (c *Client) TaskAdd(ctx context.Context, appID int64, r *TaskAddRequest) (*TaskAddResponse, error) {
	var out TaskAddResponse
	return &out, c.Do(ctx, http.MethodPost, "/apps/"+itoa(appID)+"/tasks", r, &out)
}

// TaskListParams filters a task listing.
type TaskListParams struct {
	AppID  int64
	Module string
	Status *int
	After  int64
	Limit  int
}

// TaskActivate makes INITIAL tasks READY.
func (c *Client) TaskActivate(ctx context.Context, appID int64, r *TaskActivateRequest) (*TaskActivateResponse, error) {
	var out TaskActivateResponse
	return &out, c.Do(ctx, http.MethodPost, "/apps/"+itoa(appID)+"/tasks/activate", r, &out)
}

// TaskList lists tasks.
func (c *Client) TaskList(ctx context.Context, p TaskListParams) (*TaskList, error) {
	q := url.Values{}
	if p.AppID != 0 {
		q.Set("app", itoa(p.AppID))
	}
	if p.Module != "" {
		q.Set("module", p.Module)
	}
	if p.Status != nil {
		q.Set("status", strconv.Itoa(*p.Status))
	}
	if p.After != 0 {
		q.Set("after", itoa(p.After))
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	var out TaskList
	return &out, c.Do(ctx, http.MethodGet, "/tasks?"+q.Encode(), nil, &out)
}

// TaskGet shows a task with all its attempts.
func (c *Client) TaskGet(ctx context.Context, id int64) (*TaskDetail, error) {
	var out TaskDetail
	return &out, c.Do(ctx, http.MethodGet, "/tasks/"+itoa(id), nil, &out)
}

// PilotRegister registers a pilot.
func (c *Client) PilotRegister(ctx context.Context, r *PilotRegistration) (*PilotRegistered, error) {
	var out PilotRegistered
	return &out, c.Do(ctx, http.MethodPost, "/pilots", r, &out)
}

// Lease long-polls for tasks.
func (c *Client) Lease(ctx context.Context, pilotID int64, r *LeaseRequest) (*LeaseResponse, error) {
	var out LeaseResponse
	return &out, c.Do(ctx, http.MethodPost, "/pilots/"+itoa(pilotID)+"/lease", r, &out)
}

// Heartbeat renews a pilot's leases.
func (c *Client) Heartbeat(ctx context.Context, pilotID int64, r *HeartbeatRequest) (*HeartbeatResponse, error) {
	var out HeartbeatResponse
	return &out, c.Do(ctx, http.MethodPost, "/pilots/"+itoa(pilotID)+"/heartbeat", r, &out)
}

// Complete reports results.
func (c *Client) Complete(ctx context.Context, pilotID int64, r *CompleteRequest) (*CompleteResponse, error) {
	var out CompleteResponse
	return &out, c.Do(ctx, http.MethodPost, "/pilots/"+itoa(pilotID)+"/complete", r, &out)
}

// Deregister ends a pilot; its leases go back to the queue.
func (c *Client) Deregister(ctx context.Context, pilotID int64) error {
	return c.Do(ctx, http.MethodDelete, "/pilots/"+itoa(pilotID), nil, nil)
}

// PilotList lists pilots.
func (c *Client) PilotList(ctx context.Context) ([]Pilot, error) {
	var out []Pilot
	return out, c.Do(ctx, http.MethodGet, "/pilots", nil, &out)
}

// SemaphoreCreate creates semaphores.
func (c *Client) SemaphoreCreate(ctx context.Context, appID int64, r *SemaphoreCreateRequest) error {
	return c.Do(ctx, http.MethodPost, "/apps/"+itoa(appID)+"/semaphores", r, nil)
}

// SemaphoreGet reads one semaphore.
func (c *Client) SemaphoreGet(ctx context.Context, appID int64, name string) (*Semaphore, error) {
	var out Semaphore
	return &out, c.Do(ctx, http.MethodGet, "/apps/"+itoa(appID)+"/semaphores/"+url.PathEscape(name), nil, &out)
}

// SemaphoreList lists semaphores whose names start with prefix.
func (c *Client) SemaphoreList(ctx context.Context, appID int64, prefix string) ([]Semaphore, error) {
	var out []Semaphore
	return out, c.Do(ctx, http.MethodGet, "/apps/"+itoa(appID)+"/semaphores?prefix="+url.QueryEscape(prefix), nil, &out)
}

// SemaphoreSet sets an existing semaphore.
func (c *Client) SemaphoreSet(ctx context.Context, appID int64, name string, v int64) (*Semaphore, error) {
	var out Semaphore
	return &out, c.Do(ctx, http.MethodPut, "/apps/"+itoa(appID)+"/semaphores/"+url.PathEscape(name), &SemaphoreValue{Value: v}, &out)
}

// SemaphoreIncrement adds delta and returns the new value.
func (c *Client) SemaphoreIncrement(ctx context.Context, appID int64, name string, delta int64, autoCreate bool) (*Semaphore, error) {
	var out Semaphore
	return &out, c.Do(ctx, http.MethodPost, "/apps/"+itoa(appID)+"/semaphores/"+url.PathEscape(name)+"/increment",
		&SemaphoreIncrement{Delta: delta, AutoCreate: autoCreate}, &out)
}

// VariableGet reads a variable.
func (c *Client) VariableGet(ctx context.Context, appID int64, name string) (*Variable, error) {
	var out Variable
	return &out, c.Do(ctx, http.MethodGet, "/apps/"+itoa(appID)+"/variables/"+url.PathEscape(name), nil, &out)
}

// VariableSet creates or replaces a variable.
func (c *Client) VariableSet(ctx context.Context, appID int64, name, value string) (*Variable, error) {
	var out Variable
	return &out, c.Do(ctx, http.MethodPut, "/apps/"+itoa(appID)+"/variables/"+url.PathEscape(name), &VariableValue{Value: value}, &out)
}

// VariableList lists variables whose names start with prefix.
func (c *Client) VariableList(ctx context.Context, appID int64, prefix string) ([]Variable, error) {
	var out []Variable
	return out, c.Do(ctx, http.MethodGet, "/apps/"+itoa(appID)+"/variables?prefix="+url.QueryEscape(prefix), nil, &out)
}

// SitePut registers or replaces a site.
func (c *Client) SitePut(ctx context.Context, s *Site) (*Site, error) {
	var out Site
	return &out, c.Do(ctx, http.MethodPut, "/sites/"+url.PathEscape(s.Name), s, &out)
}

// SiteGet shows one site.
func (c *Client) SiteGet(ctx context.Context, name string) (*Site, error) {
	var out Site
	return &out, c.Do(ctx, http.MethodGet, "/sites/"+url.PathEscape(name), nil, &out)
}

// SiteSubmit submits pilots to a batch site through the provisioner.
func (c *Client) SiteSubmit(ctx context.Context, site string, r *SiteSubmitRequest) (*PilotJob, error) {
	var out PilotJob
	return &out, c.Do(ctx, http.MethodPost, "/sites/"+url.PathEscape(site)+"/submit", r, &out)
}

// PilotJobList lists pilot jobs, newest first; site "" and appID 0 match all.
func (c *Client) PilotJobList(ctx context.Context, site string, appID int64, active bool) ([]PilotJob, error) {
	q := url.Values{}
	if site != "" {
		q.Set("site", site)
	}
	if appID != 0 {
		q.Set("app_id", itoa(appID))
	}
	if active {
		q.Set("active", "true")
	}
	path := "/pilot-jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []PilotJob
	return out, c.Do(ctx, http.MethodGet, path, nil, &out)
}

// PilotJobCancel cancels a pilot job (all its pilots) by its record id.
func (c *Client) PilotJobCancel(ctx context.Context, id int64) (*PilotJob, error) {
	var out PilotJob
	return &out, c.Do(ctx, http.MethodPost, "/pilot-jobs/"+itoa(id)+"/cancel", nil, &out)
}

// PilotCancel cancels the batch job a pilot runs in.
func (c *Client) PilotCancel(ctx context.Context, id int64) (*Pilot, error) {
	var out Pilot
	return &out, c.Do(ctx, http.MethodPost, "/pilots/"+itoa(id)+"/cancel", nil, &out)
}

// SiteList lists sites.
func (c *Client) SiteList(ctx context.Context) ([]Site, error) {
	var out []Site
	return out, c.Do(ctx, http.MethodGet, "/sites", nil, &out)
}

// TokenCreate creates an API token (admin only).
func (c *Client) TokenCreate(ctx context.Context, r *TokenRequest) (*TokenResponse, error) {
	var out TokenResponse
	return &out, c.Do(ctx, http.MethodPost, "/tokens", r, &out)
}

// Healthz checks that the broker answers.
func (c *Client) Healthz(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: HTTP %d", resp.StatusCode)
	}
	return nil
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
