package pilot

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/scalebox-hpc/scalebox/api"
)

// proxy is the pilot's loopback endpoint for `scalebox` commands run inside
// tasks (SCALEBOX_BROKER points at it, SCALEBOX_TOKEN is the attempt's
// secret). `task add` is buffered into the attempt and sent with its
// result, in the same broker transaction that completes it: a task that
// fails and retries never leaves half its messages behind twice, and a
// fenced attempt emits nothing. Everything else is forwarded to the broker
// with the pilot's own token.
type proxy struct {
	p   *Pilot
	ln  net.Listener
	srv *http.Server
	url string

	mu       sync.Mutex
	attempts map[string]*attempt // by secret

	hookSecret string // lifecycle hooks: may call the broker, not add tasks
}

func startProxy(p *Pilot) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(p.cfg.Broker)
	if err != nil {
		ln.Close()
		return nil, err
	}
	x := &proxy{p: p, ln: ln, url: "http://" + ln.Addr().String(), attempts: map[string]*attempt{}}
	if x.hookSecret, err = newSecret(); err != nil {
		ln.Close()
		return nil, err
	}
	x.attempts[x.hookSecret] = &attempt{} // no task
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Del("Authorization")
		if p.cfg.Token != "" {
			r.Out.Header.Set("Authorization", "Bearer "+p.cfg.Token)
		}
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a := x.lookup(r)
		if a == nil {
			writeErr(w, http.StatusUnauthorized, api.CodeUnauthorized, "not a running task of this pilot")
			return
		}
		if r.Method == http.MethodPost && isTaskAdd(r.URL.Path) {
			if a.task == nil {
				writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "tasks can be added from run.sh only, not from setup, check or teardown scripts")
				return
			}
			x.taskAdd(w, r, a)
			return
		}
		rp.ServeHTTP(w, r)
	})
	x.srv = &http.Server{Handler: mux}
	go func() { _ = x.srv.Serve(ln) }()
	// The same endpoint on a unix socket, for tasks in containers without
	// a network: the pilot's run dir is bound into them.
	uln, err := net.Listen("unix", filepath.Join(p.runDir(), proxySocket))
	if err != nil {
		x.close()
		return nil, fmt.Errorf("pilot proxy socket: %w", err)
	}
	go func() { _ = x.srv.Serve(uln) }()
	return x, nil
}

// proxySocket is the proxy's unix socket in the pilot's run dir.
const proxySocket = "p.sock"

func isTaskAdd(path string) bool {
	rest, ok := strings.CutPrefix(path, api.Prefix+"/apps/")
	return ok && strings.HasSuffix(rest, "/tasks") && strings.Count(rest, "/") == 1
}

func (x *proxy) lookup(r *http.Request) *attempt {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.attempts[secret]
}

func (x *proxy) register(a *attempt) {
	x.mu.Lock()
	x.attempts[a.secret] = a
	x.mu.Unlock()
}

func (x *proxy) unregister(a *attempt) {
	x.mu.Lock()
	delete(x.attempts, a.secret)
	x.mu.Unlock()
}

// taskAdd buffers messages into the attempt.
func (x *proxy) taskAdd(w http.ResponseWriter, r *http.Request, a *attempt) {
	var req api.TaskAddRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 256<<20))
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	a.mu.Lock()
	for _, t := range req.Tasks {
		mod := t.Module
		if mod == "" {
			mod = req.Module
		}
		a.messages = append(a.messages, api.Message{Module: mod, Body: t.Body, Headers: t.Headers})
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	// Ids are not known until the result is applied: Scalebox's in-agent
	// `task add` returns 0 as well.
	_ = json.NewEncoder(w).Encode(api.TaskAddResponse{Inserted: len(req.Tasks), IDs: make([]int64, len(req.Tasks))})
}

func (x *proxy) close() { _ = x.srv.Close() }

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: code, Message: msg}})
}

func newSecret() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "att_" + hex.EncodeToString(b), nil
}

func jsonUnmarshal(b []byte, v any) error {
	if len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, v)
}

func numCPU() int { return runtime.NumCPU() }
