package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/store"
)

// Request body limits.
const (
	maxRequestBytes = 256 << 20 // task batches and result batches
)

type principalKey struct{}

// handlerFunc is a route: it returns a value to encode as JSON (status 200,
// or 201 for creations) or an error mapped once by wrap.
type handlerFunc func(r *http.Request, p Principal) (any, error)

// created marks a response as 201.
type created struct{ v any }

// Handler returns the broker's HTTP API.
func (b *Broker) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(b.recoverer)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	r.Route(api.Prefix, func(r chi.Router) {
		user := []string{store.RoleUser}
		both := []string{store.RoleUser, store.RolePilot}
		pilot := []string{store.RolePilot}

		r.Post("/apps", b.wrap(user, b.hAppCreate))
		r.Get("/apps", b.wrap(both, b.hAppList))
		r.Get("/apps/{app}", b.wrap(both, b.hAppGet))
		for _, action := range []string{"pause", "resume", "cancel"} {
			r.Post("/apps/{app}/"+action, b.wrap(user, b.hAppAction(action)))
		}
		r.Post("/apps/{app}/finish", b.wrap(both, b.hAppFinish))
		r.Post("/apps/{app}/tasks", b.wrap(both, b.hTaskAdd))
		r.Post("/apps/{app}/tasks/activate", b.wrap(both, b.hTaskActivate))

		r.Get("/tasks", b.wrap(both, b.hTaskList))
		r.Get("/tasks/{task}", b.wrap(both, b.hTaskGet))

		r.Post("/apps/{app}/semaphores", b.wrap(both, b.hSemaCreate))
		r.Get("/apps/{app}/semaphores", b.wrap(both, b.hSemaList))
		r.Get("/apps/{app}/semaphores/{name}", b.wrap(both, b.hSemaGet))
		r.Put("/apps/{app}/semaphores/{name}", b.wrap(both, b.hSemaSet))
		r.Post("/apps/{app}/semaphores/{name}/increment", b.wrap(both, b.hSemaIncrement))
		r.Get("/apps/{app}/variables", b.wrap(both, b.hVarList))
		r.Get("/apps/{app}/variables/{name}", b.wrap(both, b.hVarGet))
		r.Put("/apps/{app}/variables/{name}", b.wrap(both, b.hVarSet))

		r.Post("/pilots", b.wrap(pilot, b.hPilotRegister))
		r.Get("/pilots", b.wrap(user, b.hPilotList))
		r.Post("/pilots/{pilot}/lease", b.wrap(pilot, b.hLease))
		r.Post("/pilots/{pilot}/heartbeat", b.wrap(pilot, b.hHeartbeat))
		r.Post("/pilots/{pilot}/complete", b.wrap(pilot, b.hComplete))
		r.Post("/pilots/{pilot}/drain", b.wrap(user, b.hDrain))
		r.Post("/pilots/{pilot}/release", b.wrap(user, b.hPilotRelease))
		r.Delete("/pilots/{pilot}", b.wrap(pilot, b.hDeregister))
		r.Post("/pilots/{pilot}/cancel", b.wrap(user, b.hPilotCancel))
		r.Get("/pilot-jobs", b.wrap(user, b.hPilotJobList))
		r.Post("/pilot-jobs/{job}/cancel", b.wrap(user, b.hPilotJobCancel))

		r.Get("/sites", b.wrap(both, b.hSiteList))
		r.Get("/sites/{site}", b.wrap(both, b.hSiteGet))
		r.Put("/sites/{site}", b.wrap(nil, b.hSitePut))
		r.Post("/sites/{site}/submit", b.wrap(user, b.hSiteSubmit))

		r.Post("/tokens", b.wrap(nil, b.hTokenCreate))
	})
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, errorf(api.CodeNotFound, "", "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: errorf(api.CodeBadRequest, "", "method not allowed")})
	})
	return r
}

// wrap authenticates, authorises (roles; admin always passes), runs the
// route, encodes its value and maps its error, and records metrics.
func (b *Broker) wrap(roles []string, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := http.StatusOK
		defer func() {
			route := chi.RouteContext(r.Context()).RoutePattern()
			b.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			b.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		p, err := b.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err == nil {
			err = allow(p, roles...)
		}
		var v any
		if err == nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
			v, err = h(r.WithContext(context.WithValue(r.Context(), principalKey{}, p)), p)
		}
		if err != nil {
			status = writeError(w, b.mapError(r, err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if c, ok := v.(created); ok {
			status = http.StatusCreated
			w.WriteHeader(status)
			v = c.v
		}
		if v == nil {
			v = struct{}{}
		}
		_ = json.NewEncoder(w).Encode(v)
	}
}

// mapError turns any error into an API error; unexpected ones are logged
// and hidden behind "internal".
func (b *Broker) mapError(r *http.Request, err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(api.CodeTooLarge, "", fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
	}
	if errors.Is(err, context.Canceled) {
		return errorf(api.CodeUnavailable, "", "request cancelled")
	}
	b.log.Error("request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	return errorf(api.CodeInternal, "", err.Error())
}

var statusOf = map[string]int{
	api.CodeBadRequest:   http.StatusBadRequest,
	api.CodeInvalidApp:   http.StatusUnprocessableEntity,
	api.CodeNotFound:     http.StatusNotFound,
	api.CodeConflict:     http.StatusConflict,
	api.CodeUnauthorized: http.StatusUnauthorized,
	api.CodeForbidden:    http.StatusForbidden,
	api.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	api.CodeUnavailable:  http.StatusServiceUnavailable,
}

func writeError(w http.ResponseWriter, e *api.Error) int {
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
	return status
}

// recoverer turns a panic in a handler into a logged 500: nothing crashes
// the broker.
func (b *Broker) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				b.log.Error("handler panic", zap.Any("panic", v), zap.String("path", r.URL.Path), zap.Stack("stack"))
				writeError(w, errorf(api.CodeInternal, "", "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors that name the problem.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(api.CodeBadRequest, "", "request body is empty; expected JSON")
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errorf(api.CodeBadRequest, te.Field, fmt.Sprintf("expected %s, got JSON %s", te.Type, te.Value))
		}
		return errorf(api.CodeBadRequest, "", "invalid JSON body: "+err.Error())
	}
	if dec.More() {
		return errorf(api.CodeBadRequest, "", "trailing data after the JSON body")
	}
	return nil
}

func pathID(r *http.Request, name string) (int64, error) {
	s := chi.URLParam(r, name)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(api.CodeBadRequest, name, fmt.Sprintf("bad %s id %q", name, s))
	}
	return id, nil
}

func queryInt(r *http.Request, name string) (int64, bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, errorf(api.CodeBadRequest, name, fmt.Sprintf("bad integer %q", s))
	}
	return v, true, nil
}

func (b *Broker) hAppCreate(r *http.Request, _ Principal) (any, error) {
	var req api.AppCreateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	a, err := b.CreateApp(r.Context(), &req)
	if err != nil {
		return nil, err
	}
	return created{a}, nil
}

func (b *Broker) hAppList(r *http.Request, _ Principal) (any, error) {
	return b.ListApps(r.Context())
}

func (b *Broker) hAppGet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	return b.AppView(r.Context(), id)
}

func (b *Broker) hAppAction(action string) handlerFunc {
	return func(r *http.Request, _ Principal) (any, error) {
		id, err := pathID(r, "app")
		if err != nil {
			return nil, err
		}
		return b.AppAction(r.Context(), id, action, nil)
	}
}

func (b *Broker) hAppFinish(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.AppStatusRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.AppAction(r.Context(), id, "finish", &req.Result)
}

func (b *Broker) hTaskAdd(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.TaskAddRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	res, err := b.AddTasks(r.Context(), id, &req)
	if err != nil {
		return nil, err
	}
	return created{res}, nil
}

func (b *Broker) hTaskActivate(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.TaskActivateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.ActivateTasks(r.Context(), id, &req)
}

func (b *Broker) hTaskList(r *http.Request, _ Principal) (any, error) {
	var q TaskListQuery
	var err error
	if q.AppID, _, err = queryInt(r, "app"); err != nil {
		return nil, err
	}
	if q.After, _, err = queryInt(r, "after"); err != nil {
		return nil, err
	}
	limit, _, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	q.Limit = int(limit)
	if st, ok, err := queryInt(r, "status"); err != nil {
		return nil, err
	} else if ok {
		s := int(st)
		q.Status = &s
	}
	q.Module = r.URL.Query().Get("module")
	return b.ListTasks(r.Context(), q)
}

func (b *Broker) hTaskGet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "task")
	if err != nil {
		return nil, err
	}
	return b.ShowTask(r.Context(), id)
}

func (b *Broker) hSemaCreate(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.SemaphoreCreateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := b.CreateSemaphores(r.Context(), id, &req); err != nil {
		return nil, err
	}
	return created{struct{}{}}, nil
}

func (b *Broker) hSemaList(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	return b.ListSemaphores(r.Context(), id, r.URL.Query().Get("prefix"))
}

func (b *Broker) hSemaGet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	return b.GetSemaphore(r.Context(), id, chi.URLParam(r, "name"))
}

func (b *Broker) hSemaSet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.SemaphoreValue
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.SetSemaphore(r.Context(), id, chi.URLParam(r, "name"), req.Value)
}

func (b *Broker) hSemaIncrement(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.SemaphoreIncrement
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.IncrementSemaphore(r.Context(), id, chi.URLParam(r, "name"), &req)
}

func (b *Broker) hVarList(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	return b.ListVariables(r.Context(), id, r.URL.Query().Get("prefix"))
}

func (b *Broker) hVarGet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	return b.GetVariable(r.Context(), id, chi.URLParam(r, "name"))
}

func (b *Broker) hVarSet(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "app")
	if err != nil {
		return nil, err
	}
	var req api.VariableValue
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.SetVariable(r.Context(), id, chi.URLParam(r, "name"), req.Value)
}

func (b *Broker) hPilotRegister(r *http.Request, p Principal) (any, error) {
	var req api.PilotRegistration
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	res, err := b.RegisterPilot(r.Context(), p, &req)
	if err != nil {
		return nil, err
	}
	return created{res}, nil
}

func (b *Broker) hPilotList(r *http.Request, _ Principal) (any, error) {
	q := r.URL.Query()
	return b.ListPilots(r.Context(), q.Get("site"), strings.ToUpper(q.Get("status")))
}

func (b *Broker) hLease(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	var req api.LeaseRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.Lease(r.Context(), p, id, &req)
}

func (b *Broker) hHeartbeat(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	var req api.HeartbeatRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.Heartbeat(r.Context(), p, id, &req)
}

func (b *Broker) hComplete(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	var req api.CompleteRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.Complete(r.Context(), p, id, &req)
}

func (b *Broker) hDrain(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	return nil, b.DrainPilot(r.Context(), p, id)
}

func (b *Broker) hPilotRelease(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	return b.ReleasePilot(r.Context(), p, id)
}

func (b *Broker) hDeregister(r *http.Request, p Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	return nil, b.Deregister(r.Context(), p, id)
}

func (b *Broker) hSiteList(r *http.Request, _ Principal) (any, error) {
	return b.ListSites(r.Context())
}

func (b *Broker) hSiteGet(r *http.Request, _ Principal) (any, error) {
	return b.GetSite(r.Context(), chi.URLParam(r, "site"))
}

func (b *Broker) hSitePut(r *http.Request, _ Principal) (any, error) {
	var req api.Site
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return b.PutSite(r.Context(), chi.URLParam(r, "site"), &req)
}

func (b *Broker) hSiteSubmit(r *http.Request, _ Principal) (any, error) {
	var req api.SiteSubmitRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	j, err := b.SubmitPilots(r.Context(), chi.URLParam(r, "site"), &req)
	if err != nil {
		return nil, err
	}
	return created{j}, nil
}

func (b *Broker) hPilotCancel(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "pilot")
	if err != nil {
		return nil, err
	}
	return b.CancelPilot(r.Context(), id)
}

func (b *Broker) hPilotJobList(r *http.Request, _ Principal) (any, error) {
	q := r.URL.Query()
	f := store.PilotJobFilter{Site: q.Get("site"), Active: q.Get("active") == "true"}
	if v := q.Get("app_id"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 1 {
			return nil, errorf(api.CodeBadRequest, "app_id", fmt.Sprintf("app_id must be a positive integer, not %q", v))
		}
		f.AppID = id
	}
	return b.ListPilotJobs(r.Context(), f)
}

func (b *Broker) hPilotJobCancel(r *http.Request, _ Principal) (any, error) {
	id, err := pathID(r, "job")
	if err != nil {
		return nil, err
	}
	return b.CancelPilotJob(r.Context(), id)
}

func (b *Broker) hTokenCreate(r *http.Request, _ Principal) (any, error) {
	var req api.TokenRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	res, err := b.CreateToken(r.Context(), &req)
	if err != nil {
		return nil, err
	}
	return created{res}, nil
}
