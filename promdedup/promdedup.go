package promdedup

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// StatusSource is where the running and pending gauges are read at each
// scrape. *dedup.Manager satisfies it. Statuses must be safe for
// concurrent use.
type StatusSource interface {
	Statuses() []dedup.Status
}

var _ StatusSource = (*dedup.Manager)(nil)

// Default histogram buckets, in seconds.
var (
	// DefaultDeployBuckets suit deploys of seconds to an hour, and the
	// lag from a trigger to live.
	DefaultDeployBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	// DefaultPollBuckets suit polls of a git remote or an HTTP resource.
	DefaultPollBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// An Option configures Metrics made by New.
type Option func(*config)

type config struct {
	keyLabel      bool
	deployBuckets []float64
	pollBuckets   []float64
}

// WithKeyLabel adds a "key" label to every metric, so that each key gets
// its own series. Off by default: a Manager with many keys would make as
// many series per metric (keys × label values), which is what Prometheus
// warns against. Turn it on for a handful of keys.
func WithKeyLabel() Option { return func(c *config) { c.keyLabel = true } }

// WithDeployBuckets sets the buckets, in seconds and increasing, of
// dedupdeploy_run_duration_seconds and dedupdeploy_trigger_to_live_seconds.
// The default is DefaultDeployBuckets.
func WithDeployBuckets(b ...float64) Option {
	return func(c *config) { c.deployBuckets = slices.Clone(b) }
}

// WithPollBuckets sets the buckets, in seconds and increasing, of
// dedupdeploy_poll_duration_seconds. The default is DefaultPollBuckets.
func WithPollBuckets(b ...float64) Option {
	return func(c *config) { c.pollBuckets = slices.Clone(b) }
}

// Metrics turns the events of a dedup.Manager and of a poller.Poller, and
// the Manager's Statuses, into Prometheus metrics. It is a
// prometheus.Collector: register it once. Its methods are safe for
// concurrent use; Observe and ObservePoll never block on anything but a
// short lock.
type Metrics struct {
	keyLabel bool

	triggers      *prometheus.CounterVec
	runs          *prometheus.CounterVec
	runDuration   *prometheus.HistogramVec
	triggerToLive *prometheus.HistogramVec
	slow          *prometheus.CounterVec
	storeErrors   *prometheus.CounterVec
	polls         *prometheus.CounterVec
	pollDuration  *prometheus.HistogramVec
	running       *prometheus.Desc
	pending       *prometheus.Desc

	mu     sync.Mutex
	src    StatusSource
	firsts map[string][]first // per key, when each revision in flight was first triggered
}

// first is when a revision of a key was first triggered.
type first struct {
	rev dedup.Revision
	at  time.Time
}

// maxInFlight bounds the revisions tracked per key. A key has at most a
// running and a pending revision; the slack covers events delivered out
// of order by concurrent goroutines.
const maxInFlight = 4

// New returns Metrics to register with a prometheus.Registerer. It panics

// runOutcomes are the outcomes runs_total counts: a run ends deployed,
// failed, aborted, or unchanged (the Store had it live); superseded is a
// ticket's outcome, not a run's.
var runOutcomes = []dedup.Outcome{dedup.Deployed, dedup.Failed, dedup.Aborted, dedup.Unchanged}

// if a bucket list is not increasing (prometheus' own rule).
func New(opts ...Option) *Metrics {
	cfg := config{deployBuckets: DefaultDeployBuckets, pollBuckets: DefaultPollBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	labels := func(ls ...string) []string {
		if cfg.keyLabel {
			return append([]string{"key"}, ls...)
		}
		return ls
	}
	m := &Metrics{
		keyLabel: cfg.keyLabel,
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dedupdeploy_triggers_total",
			Help: "Triggers accepted, by what they did: started, queued, joined-running, joined-pending, unchanged.",
		}, labels("action")),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dedupdeploy_runs_total",
			Help: "Runs (one revision's deploy, its retries included) that ended, by outcome: deployed, failed, aborted, unchanged (found live before deploying).",
		}, labels("outcome")),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dedupdeploy_run_duration_seconds",
			Help:    "How long each deploy attempt ran, successful or not.",
			Buckets: cfg.deployBuckets,
		}, labels()),
		triggerToLive: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dedupdeploy_trigger_to_live_seconds",
			Help:    "From the first trigger of a revision to the end of its successful deploy.",
			Buckets: cfg.deployBuckets,
		}, labels()),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dedupdeploy_slow_deploys_total",
			Help: "Deploy attempts reported slow against their key's baseline (dedup.WithSlowDeploy).",
		}, labels()),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dedupdeploy_store_errors_total",
			Help: "Failed loads and saves of the Store.",
		}, labels()),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dedupdeploy_polls_total",
			Help: "Polls of a source, by result: polled (unchanged), changed, error, trigger-failed.",
		}, labels("result")),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dedupdeploy_poll_duration_seconds",
			Help:    "How long each poll of a source took.",
			Buckets: cfg.pollBuckets,
		}, labels()),
		running: prometheus.NewDesc("dedupdeploy_running",
			"Keys with a deploy running, as of the scrape.", labels(), nil),
		pending: prometheus.NewDesc("dedupdeploy_pending",
			"Keys with a revision pending (waiting for the running deploy, a start time, a slot or a retry), as of the scrape.", labels(), nil),
		firsts: make(map[string][]first),
	}
	if !cfg.keyLabel {
		// Every series exists from the start, at zero: a rate over a
		// series that appears with its first increment misses it.
		for _, a := range []dedup.Action{dedup.ActionStarted, dedup.ActionQueued, dedup.ActionJoinedRunning, dedup.ActionJoinedPending, dedup.ActionUnchanged} {
			m.triggers.WithLabelValues(a.String())
		}
		for _, o := range runOutcomes {
			m.runs.WithLabelValues(o.String())
		}
		for _, k := range []poller.EventKind{poller.EventPolled, poller.EventChanged, poller.EventError, poller.EventTriggerFailed} {
			m.polls.WithLabelValues(k.String())
		}
		m.runDuration.WithLabelValues()
		m.triggerToLive.WithLabelValues()
		m.slow.WithLabelValues()
		m.storeErrors.WithLabelValues()
		m.pollDuration.WithLabelValues()
	}
	return m
}

// SetSource sets the Manager whose Statuses the dedupdeploy_running and
// dedupdeploy_pending gauges count at each scrape. Until it is set they
// are not reported. Call it once the Manager exists: Observe must be
// passed to dedup.New before.
func (m *Metrics) SetSource(src StatusSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.src = src
}

// labels returns the label values of a series of key.
func (m *Metrics) labels(key string, ls ...string) []string {
	if m.keyLabel {
		return append([]string{key}, ls...)
	}
	return ls
}

// Observe records a Manager's event: pass it to dedup.WithObserver (call
// it from your own observer to keep one too). It is quick and does not
// block.
func (m *Metrics) Observe(e dedup.Event) {
	if e.Action != 0 {
		m.triggers.WithLabelValues(m.labels(e.Key, e.Action.String())...).Inc()
	}
	switch e.Kind {
	case dedup.EventQueued, dedup.EventCoalesced:
		if e.Action != 0 {
			m.triggered(e.Key, e.Revision, e.Replaced, e.Time)
		}
	case dedup.EventSucceeded:
		m.runs.WithLabelValues(m.labels(e.Key, dedup.Deployed.String())...).Inc()
		m.runDuration.WithLabelValues(m.labels(e.Key)...).Observe(e.Duration.Seconds())
		if at, ok := m.settled(e.Key, e.Revision); ok {
			m.triggerToLive.WithLabelValues(m.labels(e.Key)...).Observe(e.Time.Sub(at).Seconds())
		}
	case dedup.EventFailed:
		m.runs.WithLabelValues(m.labels(e.Key, dedup.Failed.String())...).Inc()
		m.runDuration.WithLabelValues(m.labels(e.Key)...).Observe(e.Duration.Seconds())
		m.settled(e.Key, e.Revision)
	case dedup.EventRetrying:
		m.runDuration.WithLabelValues(m.labels(e.Key)...).Observe(e.Duration.Seconds())
	case dedup.EventAborted:
		m.runs.WithLabelValues(m.labels(e.Key, dedup.Aborted.String())...).Inc()
		if e.Err != nil { // Close canceled a running attempt, which then ended
			m.runDuration.WithLabelValues(m.labels(e.Key)...).Observe(e.Duration.Seconds())
		}
		m.settled(e.Key, e.Revision)
	case dedup.EventUnchanged:
		if e.Action == 0 { // a run found its revision live; not a trigger's answer
			m.runs.WithLabelValues(m.labels(e.Key, dedup.Unchanged.String())...).Inc()
			m.settled(e.Key, e.Revision)
		}
	case dedup.EventSlow:
		m.slow.WithLabelValues(m.labels(e.Key)...).Inc()
	case dedup.EventStoreFailed:
		m.storeErrors.WithLabelValues(m.labels(e.Key)...).Inc()
	}
}

// triggered records that rev of key was triggered at t, superseding
// replaced, if any.
func (m *Metrics) triggered(key string, rev, replaced dedup.Revision, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fs := m.firsts[key]
	if replaced != "" {
		fs = slices.DeleteFunc(fs, func(f first) bool { return f.rev == replaced })
	}
	if !slices.ContainsFunc(fs, func(f first) bool { return f.rev == rev }) {
		if len(fs) == maxInFlight {
			fs = slices.Delete(fs, 0, 1)
		}
		fs = append(fs, first{rev: rev, at: t})
	}
	m.firsts[key] = fs
}

// settled forgets rev of key, which ended, and returns when it was first
// triggered.
func (m *Metrics) settled(key string, rev dedup.Revision) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fs := m.firsts[key]
	i := slices.IndexFunc(fs, func(f first) bool { return f.rev == rev })
	if i < 0 {
		return time.Time{}, false
	}
	at := fs[i].at
	if fs = slices.Delete(fs, i, i+1); len(fs) == 0 {
		delete(m.firsts, key)
	} else {
		m.firsts[key] = fs
	}
	return at, true
}

// ObservePoll records a Poller's event: pass it to poller.WithObserver.
// It is quick and does not block.
func (m *Metrics) ObservePoll(e poller.Event) {
	m.polls.WithLabelValues(m.labels(e.Key, e.Kind.String())...).Inc()
	m.pollDuration.WithLabelValues(m.labels(e.Key)...).Observe(e.Duration.Seconds())
}

// Describe sends the descriptors of every metric; part of
// prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- m.running
	ch <- m.pending
}

// Collect sends every metric, reading the gauges from the StatusSource;
// part of prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	m.mu.Lock()
	src := m.src
	m.mu.Unlock()
	if src == nil {
		return
	}
	sts := src.Statuses()
	if m.keyLabel {
		for _, st := range sts {
			ch <- prometheus.MustNewConstMetric(m.running, prometheus.GaugeValue, boolValue(st.Running != ""), st.Key)
			ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, boolValue(st.Pending != ""), st.Key)
		}
		return
	}
	var running, pending float64
	for _, st := range sts {
		running += boolValue(st.Running != "")
		pending += boolValue(st.Pending != "")
	}
	ch <- prometheus.MustNewConstMetric(m.running, prometheus.GaugeValue, running)
	ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, pending)
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.triggers, m.runs, m.runDuration, m.triggerToLive, m.slow, m.storeErrors, m.polls, m.pollDuration}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var _ prometheus.Collector = (*Metrics)(nil)
