package promdedup_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/promdedup"
)

var errBoom = errors.New("boom")

// failingSave is a MemoryStore whose Save fails for one key.
type failingSave struct {
	dedup.MemoryStore
	key string
}

func (s *failingSave) Save(ctx context.Context, key string, rev dedup.Revision) error {
	if key == s.key {
		return errBoom
	}
	return s.MemoryStore.Save(ctx, key, rev)
}

// scenario runs, in a synctest bubble (so on fake time), a known story
// through a real Manager and a real Poller observed by metrics, and calls
// scrape while web's deploy v5 runs and v6 waits:
//
//	0s     web v1 starts (started); it takes 60s
//	60s    web v2 starts (started), v2 again (joined-running), v3 (queued); v2 takes 150s
//	90s    web v4 (queued, replacing v3), v4 again (joined-pending)
//	180s   v2 is slow: twice its baseline of 60s
//	210s   v2 deployed (150s, 150s after its trigger); v4 starts, fails after 10s
//	220s   web v2 (unchanged); api a1 (started) takes 5s, deployed, but its Save fails
//	225s   web v5 (started) runs until the end; v6 (queued)
//
// and then four polls of a source, 2s each: s1 (changed), s1 (polled), an
// error, s2 (changed).
func scenario(t *testing.T, metrics *promdedup.Metrics, scrape func()) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		release := make(chan struct{})
		took := map[dedup.Revision]time.Duration{"v1": time.Minute, "v2": 150 * time.Second, "v4": 10 * time.Second, "a1": 5 * time.Second}
		m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, _ string, rev dedup.Revision) error {
			if rev == "v5" {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}
			time.Sleep(took[rev])
			if rev == "v4" {
				return errBoom
			}
			return nil
		}), dedup.WithObserver(metrics.Observe), dedup.WithSlowDeploy(2, time.Minute), dedup.WithStore(&failingSave{key: "api"}))
		require.NoError(t, err)
		metrics.SetSource(m)

		trigger := func(key string, rev dedup.Revision, want dedup.Action) *dedup.Ticket {
			t.Helper()
			tk, err := m.Trigger(key, rev)
			require.NoErrorf(t, err, "Trigger(%q, %q)", key, rev)
			require.Equalf(t, want, tk.Action(), "Trigger(%q, %q).Action()", key, rev)
			return tk
		}
		wait := func(tk *dedup.Ticket, want dedup.Outcome) {
			t.Helper()
			res, _ := tk.Wait(ctx)
			require.Equal(t, want, res.Outcome, "Result %+v", res)
		}

		wait(trigger("web", "v1", dedup.ActionStarted), dedup.Deployed)
		t2 := trigger("web", "v2", dedup.ActionStarted)
		trigger("web", "v2", dedup.ActionJoinedRunning)
		trigger("web", "v3", dedup.ActionQueued)
		time.Sleep(30 * time.Second)
		t4 := trigger("web", "v4", dedup.ActionQueued)
		require.Equal(t, dedup.Revision("v3"), t4.Replaced())
		trigger("web", "v4", dedup.ActionJoinedPending)
		wait(t2, dedup.Deployed)
		wait(t4, dedup.Failed)
		trigger("web", "v2", dedup.ActionUnchanged)
		wait(trigger("api", "a1", dedup.ActionStarted), dedup.Deployed)
		trigger("web", "v5", dedup.ActionStarted)
		trigger("web", "v6", dedup.ActionQueued)
		synctest.Wait() // v5's goroutine is blocked in its deploy

		// A Poller of its own Manager, so that its triggers do not
		// count above.
		pm, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }))
		require.NoError(t, err)
		var (
			mu    sync.Mutex
			calls int
		)
		src := poller.SourceFunc(func(context.Context) (dedup.Revision, error) {
			time.Sleep(2 * time.Second)
			mu.Lock()
			defer mu.Unlock()
			calls++
			return [...]dedup.Revision{"s1", "s1", "", "s2"}[calls-1], [...]error{nil, nil, errBoom, nil}[calls-1]
		})
		polled := make(chan poller.Event)
		p := poller.New(pm, poller.WithObserver(func(e poller.Event) {
			metrics.ObservePoll(e)
			polled <- e
		}))
		require.NoError(t, p.Watch("site", src, poller.Every(time.Minute), poller.Jitter(0)))
		pctx, stop := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- p.Run(pctx) }()
		for _, want := range []poller.EventKind{poller.EventChanged, poller.EventPolled, poller.EventError, poller.EventChanged} {
			require.Equal(t, want, (<-polled).Kind)
		}
		stop()
		require.NoError(t, <-done)
		require.NoError(t, pm.Close(ctx))

		scrape()

		close(release)
		require.NoError(t, m.Close(ctx))
	})
}

func TestMetrics(t *testing.T) {
	metrics := promdedup.New(promdedup.WithDeployBuckets(30, 120, 600), promdedup.WithPollBuckets(1, 5))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(metrics))
	scenario(t, metrics, func() {
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP dedupdeploy_triggers_total Triggers accepted, by what they did: started, queued, joined-running, joined-pending, unchanged.
# TYPE dedupdeploy_triggers_total counter
dedupdeploy_triggers_total{action="joined-pending"} 1
dedupdeploy_triggers_total{action="joined-running"} 1
dedupdeploy_triggers_total{action="queued"} 3
dedupdeploy_triggers_total{action="started"} 4
dedupdeploy_triggers_total{action="unchanged"} 1
# HELP dedupdeploy_runs_total Runs (one revision's deploy, its retries included) that ended, by outcome: deployed, failed, aborted, unchanged (found live before deploying).
# TYPE dedupdeploy_runs_total counter
dedupdeploy_runs_total{outcome="aborted"} 0
dedupdeploy_runs_total{outcome="deployed"} 3
dedupdeploy_runs_total{outcome="failed"} 1
dedupdeploy_runs_total{outcome="unchanged"} 0
# HELP dedupdeploy_run_duration_seconds How long each deploy attempt ran, successful or not.
# TYPE dedupdeploy_run_duration_seconds histogram
dedupdeploy_run_duration_seconds_bucket{le="30"} 2
dedupdeploy_run_duration_seconds_bucket{le="120"} 3
dedupdeploy_run_duration_seconds_bucket{le="600"} 4
dedupdeploy_run_duration_seconds_bucket{le="+Inf"} 4
dedupdeploy_run_duration_seconds_sum 225
dedupdeploy_run_duration_seconds_count 4
# HELP dedupdeploy_trigger_to_live_seconds From the first trigger of a revision to the end of its successful deploy.
# TYPE dedupdeploy_trigger_to_live_seconds histogram
dedupdeploy_trigger_to_live_seconds_bucket{le="30"} 1
dedupdeploy_trigger_to_live_seconds_bucket{le="120"} 2
dedupdeploy_trigger_to_live_seconds_bucket{le="600"} 3
dedupdeploy_trigger_to_live_seconds_bucket{le="+Inf"} 3
dedupdeploy_trigger_to_live_seconds_sum 215
dedupdeploy_trigger_to_live_seconds_count 3
# HELP dedupdeploy_slow_deploys_total Deploy attempts reported slow against their key's baseline (dedup.WithSlowDeploy).
# TYPE dedupdeploy_slow_deploys_total counter
dedupdeploy_slow_deploys_total 1
# HELP dedupdeploy_store_errors_total Failed loads and saves of the Store.
# TYPE dedupdeploy_store_errors_total counter
dedupdeploy_store_errors_total 1
# HELP dedupdeploy_polls_total Polls of a source, by result: polled (unchanged), changed, error, trigger-failed.
# TYPE dedupdeploy_polls_total counter
dedupdeploy_polls_total{result="changed"} 2
dedupdeploy_polls_total{result="error"} 1
dedupdeploy_polls_total{result="polled"} 1
dedupdeploy_polls_total{result="trigger-failed"} 0
# HELP dedupdeploy_poll_duration_seconds How long each poll of a source took.
# TYPE dedupdeploy_poll_duration_seconds histogram
dedupdeploy_poll_duration_seconds_bucket{le="1"} 0
dedupdeploy_poll_duration_seconds_bucket{le="5"} 4
dedupdeploy_poll_duration_seconds_bucket{le="+Inf"} 4
dedupdeploy_poll_duration_seconds_sum 8
dedupdeploy_poll_duration_seconds_count 4
# HELP dedupdeploy_running Keys with a deploy running, as of the scrape.
# TYPE dedupdeploy_running gauge
dedupdeploy_running 1
# HELP dedupdeploy_pending Keys with a revision pending (waiting for the running deploy, a start time, a slot or a retry), as of the scrape.
# TYPE dedupdeploy_pending gauge
dedupdeploy_pending 1
`)))
	})
}

// With the key label, each key has its own series, and only the keys
// that had the event.
func TestMetricsKeyLabel(t *testing.T) {
	metrics := promdedup.New(promdedup.WithKeyLabel(), promdedup.WithDeployBuckets(30, 120, 600), promdedup.WithPollBuckets(1, 5))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(metrics))
	scenario(t, metrics, func() {
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP dedupdeploy_triggers_total Triggers accepted, by what they did: started, queued, joined-running, joined-pending, unchanged.
# TYPE dedupdeploy_triggers_total counter
dedupdeploy_triggers_total{action="joined-pending",key="web"} 1
dedupdeploy_triggers_total{action="joined-running",key="web"} 1
dedupdeploy_triggers_total{action="queued",key="web"} 3
dedupdeploy_triggers_total{action="started",key="api"} 1
dedupdeploy_triggers_total{action="started",key="web"} 3
dedupdeploy_triggers_total{action="unchanged",key="web"} 1
# HELP dedupdeploy_trigger_to_live_seconds From the first trigger of a revision to the end of its successful deploy.
# TYPE dedupdeploy_trigger_to_live_seconds histogram
dedupdeploy_trigger_to_live_seconds_bucket{key="api",le="30"} 1
dedupdeploy_trigger_to_live_seconds_bucket{key="api",le="120"} 1
dedupdeploy_trigger_to_live_seconds_bucket{key="api",le="600"} 1
dedupdeploy_trigger_to_live_seconds_bucket{key="api",le="+Inf"} 1
dedupdeploy_trigger_to_live_seconds_sum{key="api"} 5
dedupdeploy_trigger_to_live_seconds_count{key="api"} 1
dedupdeploy_trigger_to_live_seconds_bucket{key="web",le="30"} 0
dedupdeploy_trigger_to_live_seconds_bucket{key="web",le="120"} 1
dedupdeploy_trigger_to_live_seconds_bucket{key="web",le="600"} 2
dedupdeploy_trigger_to_live_seconds_bucket{key="web",le="+Inf"} 2
dedupdeploy_trigger_to_live_seconds_sum{key="web"} 210
dedupdeploy_trigger_to_live_seconds_count{key="web"} 2
# HELP dedupdeploy_slow_deploys_total Deploy attempts reported slow against their key's baseline (dedup.WithSlowDeploy).
# TYPE dedupdeploy_slow_deploys_total counter
dedupdeploy_slow_deploys_total{key="web"} 1
# HELP dedupdeploy_store_errors_total Failed loads and saves of the Store.
# TYPE dedupdeploy_store_errors_total counter
dedupdeploy_store_errors_total{key="api"} 1
# HELP dedupdeploy_polls_total Polls of a source, by result: polled (unchanged), changed, error, trigger-failed.
# TYPE dedupdeploy_polls_total counter
dedupdeploy_polls_total{key="site",result="changed"} 2
dedupdeploy_polls_total{key="site",result="error"} 1
dedupdeploy_polls_total{key="site",result="polled"} 1
# HELP dedupdeploy_running Keys with a deploy running, as of the scrape.
# TYPE dedupdeploy_running gauge
dedupdeploy_running{key="api"} 0
dedupdeploy_running{key="web"} 1
# HELP dedupdeploy_pending Keys with a revision pending (waiting for the running deploy, a start time, a slot or a retry), as of the scrape.
# TYPE dedupdeploy_pending gauge
dedupdeploy_pending{key="api"} 0
dedupdeploy_pending{key="web"} 1
`), "dedupdeploy_triggers_total", "dedupdeploy_trigger_to_live_seconds", "dedupdeploy_slow_deploys_total",
			"dedupdeploy_store_errors_total", "dedupdeploy_polls_total", "dedupdeploy_running", "dedupdeploy_pending"))
	})
}

// Until SetSource, the gauges are not reported; the rest is, at zero.
func TestMetricsNoSource(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(promdedup.New()))
	n, err := testutil.GatherAndCount(reg, "dedupdeploy_running", "dedupdeploy_pending")
	require.NoError(t, err)
	require.Zero(t, n, "gauge series without a source")
	n, err = testutil.GatherAndCount(reg, "dedupdeploy_triggers_total")
	require.NoError(t, err)
	require.Equal(t, 5, n, "trigger series, one per action, from the start")
}
