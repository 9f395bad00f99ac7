package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the broker's Prometheus series, on a registry of its own so
// several brokers can live in one process (tests).
type metrics struct {
	reg      *prometheus.Registry
	added    prometheus.Counter
	leased   prometheus.Counter
	expired  prometheus.Counter
	results  *prometheus.CounterVec
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		added: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalebox_tasks_added_total", Help: "Tasks inserted (duplicates excluded).",
		}),
		leased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalebox_tasks_leased_total", Help: "Task attempts handed to pilots.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalebox_leases_expired_total", Help: "Leases that expired without a result.",
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalebox_results_total", Help: "Attempt results by outcome (applied or fenced).",
		}, []string{"outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalebox_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "scalebox_http_request_seconds", Help: "HTTP request latency by route (long polls included).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .5, 1, 5, 30, 60},
		}, []string{"route"}),
	}
	m.reg.MustRegister(m.added, m.leased, m.expired, m.results, m.requests, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
