package dedup_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestStatus(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Minute}))

	_, ok := m.Status("web")
	require.False(t, ok, "Status of a key never triggered")

	t1 := trigger(t, m, "web", "v1")
	c1 := nextCall(ctx, t, d)
	trigger(t, m, "web", "v2")
	t3 := trigger(t, m, "web", "v3")
	require.Equal(t, dedup.Status{
		Key: "web", Running: "v1", Pending: "v3", Attempt: 1,
		Runs: 1, Superseded: 1, LastStarted: at(0),
	}, status(t, m, "web"), "Status while v1 runs and v3 waits")

	clock.Advance(time.Second)
	c1.Finish(nil)
	await(ctx, t, t1)
	c2 := nextCall(ctx, t, d)
	require.Equal(t, dedup.Status{
		Key: "web", Live: "v1", Running: "v3", Attempt: 1,
		Runs: 2, Deployed: 1, Superseded: 1, LastStarted: at(time.Second), LastFinished: at(time.Second),
		Baseline: dedup.Baseline{Samples: 1, Mean: time.Second, P90: time.Second},
	}, status(t, m, "web"), "Status while v3 runs")

	clock.Advance(time.Second)
	c2.Finish(errBoom)
	require.NoError(t, clock.WaitTimers(ctx, 1), "retry timer")
	require.Equal(t, dedup.Status{
		Key: "web", Live: "v1", Pending: "v3", LastErr: errBoom, Attempt: 1, NextStart: at(2*time.Second + time.Minute),
		Runs: 2, Deployed: 1, Failures: 1, Superseded: 1, LastStarted: at(time.Second), LastFinished: at(2 * time.Second),
		Baseline: dedup.Baseline{Samples: 1, Mean: time.Second, P90: time.Second},
	}, status(t, m, "web"), "Status while v3 waits to retry")

	clock.AdvanceNext()
	c3 := nextCall(ctx, t, d)
	s := status(t, m, "web")
	require.Equal(t, dedup.Revision("v3"), s.Running)
	require.Equal(t, 2, s.Attempt, "Attempt of the retry")
	clock.Advance(time.Second)
	c3.Finish(nil)
	res := await(ctx, t, t3)
	requireResult(t, res, "v3", "v3", dedup.Deployed)
	require.Equal(t, 2, res.Attempts, "Attempts")
	require.Equal(t, dedup.Status{
		Key: "web", Live: "v3",
		Runs: 3, Deployed: 2, Failures: 1, Superseded: 1,
		LastStarted: at(2*time.Second + time.Minute), LastFinished: at(3*time.Second + time.Minute),
		Baseline: dedup.Baseline{Samples: 2, Mean: time.Second, P90: time.Second},
	}, status(t, m, "web"), "Status after v3 succeeded")
}

func TestStatusesSortedByKey(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, instant("v2"))
	require.Empty(t, m.Statuses(), "Statuses of a new Manager")
	for _, key := range []string{"web", "api", "worker", "db"} {
		_, _ = m.Deploy(ctx, key, "v1")
	}
	_, _ = m.Deploy(ctx, "db", "v2")
	var keys []string
	for _, s := range m.Statuses() {
		keys = append(keys, s.Key)
		want := dedup.Revision("v1")
		require.Equalf(t, want, s.Live, "Status(%q).Live", s.Key)
		if s.Key == "db" {
			require.ErrorIsf(t, s.LastErr, errBoom, "Status(%q).LastErr", s.Key)
		} else {
			require.NoErrorf(t, s.LastErr, "Status(%q).LastErr", s.Key)
		}
		one, ok := m.Status(s.Key)
		require.True(t, ok)
		require.Equalf(t, one, s, "Statuses()[%q] and Status(%q)", s.Key, s.Key)
	}
	require.Equal(t, []string{"api", "db", "web", "worker"}, keys, "Statuses order")
}

// TestForget: only an idle key is forgotten, and it starts afresh.
func TestForget(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		name := "no store"
		if withStore {
			name = "store"
		}
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			rec := newRecorder()
			opts := []dedup.Option{dedup.WithClock(clock), dedup.WithMinInterval(time.Hour), dedup.WithObserver(rec.observe),
				dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Minute})}
			if withStore {
				opts = append(opts, dedup.WithStore(new(dedup.MemoryStore)))
			}
			m := newManager(t, d, opts...)
			require.True(t, m.Forget("web"), "Forget of a key never triggered")

			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			require.False(t, m.Forget("web"), "Forget while v1 runs")
			t2 := trigger(t, m, "web", "v2")
			c1.Finish(nil)
			await(ctx, t, t1)
			require.False(t, m.Forget("web"), "Forget while v2 waits for the min interval")
			clock.Advance(time.Hour)
			c2 := nextCall(ctx, t, d)
			c2.Finish(errBoom)
			rec.waitFor(ctx, t, "retrying", ofKind(dedup.EventRetrying, "v2"))
			require.False(t, m.Forget("web"), "Forget while v2 waits for its retry")
			clock.Advance(time.Hour) // the retry backoff, and the min interval
			nextCall(ctx, t, d).Finish(nil)
			requireResult(t, await(ctx, t, t2), "v2", "v2", dedup.Deployed)

			require.False(t, m.Forget("web"), "Forget within the min interval since the last start")
			clock.Advance(time.Hour)
			require.True(t, m.Forget("web"), "Forget of the idle key")
			_, ok := m.Status("web")
			require.False(t, ok, "Status of a forgotten key")
			require.Empty(t, m.Statuses())
			require.True(t, m.Forget("web"), "Forget again")

			// Afresh: the live revision is known only to the Store.
			t3 := trigger(t, m, "web", "v2")
			if withStore {
				require.Equal(t, dedup.ActionStarted, t3.Action(), "the first run reads the Store")
				requireResult(t, await(ctx, t, t3), "v2", "v2", dedup.Unchanged)
			} else {
				c3 := nextCall(ctx, t, d)
				requireCall(t, c3, "web", "v2")
				c3.Finish(nil)
				requireResult(t, await(ctx, t, t3), "v2", "v2", dedup.Deployed)
			}
			st := status(t, m, "web")
			require.Equal(t, dedup.Revision("v2"), st.Live)
			require.Zero(t, st.Failures, "counters start afresh")
			requireResult(t, t1.Result(), "v1", "v1", dedup.Deployed) // old tickets stay valid
		})
	}
}

// Forget keeps a key whose live revision the Store failed to save: the
// Manager's memory is its only record.
func TestForgetUnsaved(t *testing.T) {
	ctx := testContext(t)
	store := newCountingStore()
	require.NoError(t, store.MemoryStore.Save(ctx, "web", "v1"))
	m := newManager(t, instant(), dedup.WithStore(store))

	store.saveErr = errBoom
	res, err := m.Deploy(ctx, "web", "v2")
	require.NoError(t, err)
	requireResult(t, res, "v2", "v2", dedup.Deployed)
	require.ErrorIs(t, status(t, m, "web").StoreErr, errBoom)
	require.False(t, m.Forget("web"), "Forget while v2 is live but unsaved")

	// A rollback to v1 still deploys: the Manager knows v2 is live.
	store.saveErr = nil
	res, err = m.Deploy(ctx, "web", "v1")
	require.NoError(t, err)
	requireResult(t, res, "v1", "v1", dedup.Deployed)
	require.True(t, m.Forget("web"), "Forget once the live revision is saved")

	res, err = m.Deploy(ctx, "web", "v1")
	require.NoError(t, err)
	requireResult(t, res, "v1", "v1", dedup.Unchanged)
}
