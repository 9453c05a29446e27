package dedup_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// deployTaking deploys rev of key on m, taking d of fake time, and returns
// when its ticket settled.
func deployTaking(ctx context.Context, t *testing.T, m *dedup.Manager, clock *deduptest.Clock, d *deduptest.Deployer,
	key string, rev dedup.Revision, took time.Duration, err error) {
	t.Helper()
	tk := trigger(t, m, key, rev)
	c := nextCall(ctx, t, d)
	requireCall(t, c, key, rev)
	clock.Advance(took)
	c.Finish(err)
	await(ctx, t, tk)
}

func TestBaseline(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock))

	base := func() dedup.Baseline { return status(t, m, "web").Baseline }
	require.Equal(t, dedup.Baseline{}, func() dedup.Baseline {
		trigger(t, m, "web", "v0")
		c := nextCall(ctx, t, d)
		b := base()
		clock.Advance(time.Minute)
		c.Finish(errBoom) // a failure does not count
		return b
	}(), "Baseline before any success")

	deployTaking(ctx, t, m, clock, d, "web", "v1", 10*time.Second, nil)
	require.Equal(t, dedup.Baseline{Samples: 1, Mean: 10 * time.Second, P90: 10 * time.Second}, base(), "Baseline after one success")
	deployTaking(ctx, t, m, clock, d, "web", "v2", 20*time.Second, nil)
	require.Equal(t, dedup.Baseline{Samples: 2, Mean: 15 * time.Second, P90: 20 * time.Second}, base(), "Baseline after two")
	deployTaking(ctx, t, m, clock, d, "web", "v3", time.Hour, errBoom)
	require.Equal(t, dedup.Baseline{Samples: 2, Mean: 15 * time.Second, P90: 20 * time.Second}, base(), "Baseline after a failure")

	// 3s..8s: the first eight make a plain average: (10+20+3+...+8)/8.
	for i := 3; i <= 8; i++ {
		deployTaking(ctx, t, m, clock, d, "web", dedup.Revision(fmt.Sprint("v", i)), time.Duration(i)*time.Second, nil)
	}
	require.Equal(t, dedup.Baseline{Samples: 8, Mean: 7875 * time.Millisecond, P90: 20 * time.Second}, base(), "Baseline after eight")
	// From then on a new one weighs 1/8: 7.875 + (15.875-7.875)/8 = 8.875.
	deployTaking(ctx, t, m, clock, d, "web", "v9", 15875*time.Millisecond, nil)
	require.Equal(t, dedup.Baseline{Samples: 9, Mean: 8875 * time.Millisecond, P90: 20 * time.Second}, base(), "Baseline after nine")

	// Twenty more: the window keeps the last 15, whose 90th percentile is
	// their second longest.
	for i := 1; i <= 20; i++ {
		deployTaking(ctx, t, m, clock, d, "web", dedup.Revision(fmt.Sprint("w", i)), time.Duration(i)*time.Second, nil)
	}
	b := base()
	require.Equal(t, dedup.BaselineWindow, b.Samples, "Samples with a full window")
	require.Equal(t, 19*time.Second, b.P90, "P90 of 6s..20s")
	require.InDelta(t, 14.0987, b.Mean.Seconds(), 0.001, "Mean: each of the last twenty weighed 1/8")

	// A forgotten key starts afresh.
	require.True(t, m.Forget("web"))
	deployTaking(ctx, t, m, clock, d, "web", "x", 3*time.Second, nil)
	require.Equal(t, dedup.Baseline{Samples: 1, Mean: 3 * time.Second, P90: 3 * time.Second}, base(), "Baseline after Forget")
}

func TestSlowDeploy(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithObserver(rec.observe),
		dedup.WithSlowDeploy(2, time.Minute), dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Second}))
	slow := func() []dedup.Event {
		var out []dedup.Event
		for _, e := range rec.events() {
			if e.Kind == dedup.EventSlow {
				out = append(out, e)
			}
		}
		return out
	}

	// The first deploy has no baseline: it is not judged, however long.
	trigger(t, m, "web", "v1")
	c := nextCall(ctx, t, d)
	require.Zero(t, clock.Timers(), "timers armed for a key without a baseline")
	clock.Advance(10 * time.Minute)
	c.Finish(nil)
	rec.waitFor(ctx, t, "succeeded", ofKind(dedup.EventSucceeded, "v1"))
	require.Empty(t, slow(), "slow events of the first deploy")

	// Baseline 10m: slow after 20m, once.
	tk := trigger(t, m, "web", "v2")
	c = nextCall(ctx, t, d)
	require.Equal(t, 1, clock.Timers(), "the slow timer is armed as the attempt begins")
	clock.Advance(20*time.Minute - time.Second)
	require.Empty(t, slow(), "slow events before 2×P90")
	require.False(t, status(t, m, "web").Slow, "Status.Slow before 2×P90")
	clock.Advance(time.Second)
	e := rec.waitFor(ctx, t, "slow", ofKind(dedup.EventSlow, "v2"))
	require.Equal(t, 1, e.Attempt, "EventSlow.Attempt")
	require.Equal(t, 20*time.Minute, e.Duration, "EventSlow.Duration: how long it has run")
	require.Equal(t, 10*time.Minute, e.Baseline, "EventSlow.Baseline")
	require.Equal(t, at(10*time.Minute+20*time.Minute), e.Time, "EventSlow.Time")
	require.True(t, status(t, m, "web").Slow, "Status.Slow of the slow attempt")
	clock.Advance(time.Hour)
	require.Len(t, slow(), 1, "slow events of one attempt")
	c.Finish(nil)
	await(ctx, t, tk)
	require.False(t, status(t, m, "web").Slow, "Status.Slow once the attempt ended")

	// An attempt that ends in time stops its timer: nothing fires later.
	tk = trigger(t, m, "web", "v3")
	c = nextCall(ctx, t, d)
	clock.Advance(time.Minute)
	c.Finish(nil)
	await(ctx, t, tk)
	require.Zero(t, clock.Timers(), "timers after the attempt ended")
	clock.Advance(24 * time.Hour)
	require.Len(t, slow(), 1, "slow events after a deploy that ended in time")

	// Each attempt is judged on its own, retries too. The window holds
	// 10m, 1h20m and 1m now: P90 is 1h20m.
	b := status(t, m, "web").Baseline
	require.Equal(t, 3, b.Samples)
	tk = trigger(t, m, "web", "v4")
	c = nextCall(ctx, t, d)
	clock.Advance(2 * b.P90)
	rec.waitFor(ctx, t, "slow attempt 1", func(e dedup.Event) bool { return e.Kind == dedup.EventSlow && e.Revision == "v4" && e.Attempt == 1 })
	c.Finish(errBoom)
	rec.waitFor(ctx, t, "retrying", ofKind(dedup.EventRetrying, "v4"))
	clock.Advance(time.Second)
	c = nextCall(ctx, t, d)
	require.False(t, status(t, m, "web").Slow, "Status.Slow of the retry")
	clock.Advance(2 * b.P90)
	e = rec.waitFor(ctx, t, "slow attempt 2", func(e dedup.Event) bool { return e.Kind == dedup.EventSlow && e.Revision == "v4" && e.Attempt == 2 })
	require.Equal(t, 2*b.P90, e.Duration, "EventSlow.Duration of the retry")
	c.Finish(nil)
	await(ctx, t, tk)
	require.Len(t, slow(), 3, "slow events in all")
}

func TestSlowDeployFloor(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithObserver(rec.observe), dedup.WithSlowDeploy(3, time.Minute))

	deployTaking(ctx, t, m, clock, d, "api", "v1", 5*time.Second, nil)
	trigger(t, m, "api", "v2")
	c := nextCall(ctx, t, d)
	clock.Advance(59 * time.Second) // far beyond 3×5s, within the floor
	for _, e := range rec.events() {
		require.NotEqual(t, dedup.EventSlow, e.Kind, "slow event within the floor: %+v", e)
	}
	clock.Advance(time.Second)
	e := rec.waitFor(ctx, t, "slow", ofKind(dedup.EventSlow, "v2"))
	require.Equal(t, time.Minute, e.Duration, "EventSlow.Duration at the floor")
	require.Equal(t, 5*time.Second, e.Baseline, "EventSlow.Baseline")
	c.Finish(nil)
}

// Close leaves no slow timer behind, also one armed for a deploy that Close
// cancels.
func TestSlowDeployClose(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m, err := dedup.New(d, dedup.WithClock(clock), dedup.WithSlowDeploy(2, 0))
	require.NoError(t, err)
	deployTaking(ctx, t, m, clock, d, "web", "v1", time.Second, nil)
	trigger(t, m, "web", "v2")
	nextCall(ctx, t, d)
	require.Equal(t, 1, clock.Timers(), "slow timer armed")
	closeNow(t, m)
	require.Zero(t, clock.Timers(), "timers after Close")
}

// With the default clock, the slow timer is a time.AfterFunc: inside a
// synctest bubble it fires on the bubble's time, and Close stops it.
func TestSlowDeployRealClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		took := make(chan time.Duration, 2)
		release := make(chan struct{})
		var (
			mu     sync.Mutex
			events []dedup.Event
		)
		m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, _ string, rev dedup.Revision) error {
			if rev == "v1" {
				time.Sleep(30 * time.Second)
				return nil
			}
			<-release
			return nil
		}), dedup.WithSlowDeploy(2, 0), dedup.WithObserver(func(e dedup.Event) {
			if e.Kind == dedup.EventSlow {
				took <- e.Duration
			}
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}))
		require.NoError(t, err)
		_, err = m.Deploy(context.Background(), "web", "v1")
		require.NoError(t, err)
		trigger(t, m, "web", "v2")
		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, time.Minute, <-took, "EventSlow.Duration")
		require.Empty(t, took, "one slow event per attempt")
		close(release)
		require.NoError(t, m.Close(context.Background()))
		require.Equal(t, dedup.EventSucceeded, events[len(events)-1].Kind, "last event")
	})
}

func TestWithSlowDeployInvalid(t *testing.T) {
	for _, tt := range []struct {
		multiple float64
		floor    time.Duration
	}{{0.5, 0}, {0, time.Minute}, {math.NaN(), 0}, {math.Inf(1), 0}, {2, -time.Second}} {
		_, err := dedup.New(instant(), dedup.WithSlowDeploy(tt.multiple, tt.floor))
		require.ErrorIsf(t, err, dedup.ErrInvalid, "New(WithSlowDeploy(%v, %v))", tt.multiple, tt.floor)
	}
	m, err := dedup.New(instant(), dedup.WithSlowDeploy(1, 0))
	require.NoError(t, err, "New(WithSlowDeploy(1, 0))")
	require.NoError(t, m.Close(context.Background()))
}

// Each successful trigger marks one event, its first, with what it did.
func TestEventAction(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m := newManager(t, d, dedup.WithObserver(rec.observe))

	t1 := trigger(t, m, "web", "v1")
	c := nextCall(ctx, t, d)
	trigger(t, m, "web", "v1")
	require.NoError(t, m.Notify("web", "v2"))
	trigger(t, m, "web", "v3")
	trigger(t, m, "web", "v3")
	c.Finish(nil)
	await(ctx, t, t1)
	tk := trigger(t, m, "web", "v3")
	nextCall(ctx, t, d).Finish(nil)
	await(ctx, t, tk)
	trigger(t, m, "web", "v3")
	// Events are delivered after the ticket settles: wait for the last.
	rec.waitFor(ctx, t, "succeeded", ofKind(dedup.EventSucceeded, "v3"))

	type ev struct {
		Kind     dedup.EventKind
		Revision dedup.Revision
		Action   dedup.Action
	}
	var got []ev
	evs := rec.events()
	slices.SortFunc(evs, func(a, b dedup.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, e := range evs {
		got = append(got, ev{e.Kind, e.Revision, e.Action})
	}
	require.Equal(t, []ev{
		{dedup.EventQueued, "v1", dedup.ActionStarted},
		{dedup.EventStarted, "v1", 0},
		{dedup.EventCoalesced, "v1", dedup.ActionJoinedRunning},
		{dedup.EventQueued, "v2", dedup.ActionQueued},
		{dedup.EventCoalesced, "v3", dedup.ActionQueued}, // replaced v2
		{dedup.EventCoalesced, "v3", dedup.ActionJoinedPending},
		{dedup.EventSucceeded, "v1", 0},
		{dedup.EventStarted, "v3", 0},
		{dedup.EventCoalesced, "v3", dedup.ActionJoinedRunning},
		{dedup.EventSucceeded, "v3", 0},
		{dedup.EventUnchanged, "v3", dedup.ActionUnchanged},
	}, got)
}

// BenchmarkBaselineKeyMemory is BenchmarkIdleKeyMemory for keys deployed
// three times, whose baseline keeps a window of recent durations. Run it
// with -benchtime=1x.
func BenchmarkBaselineKeyMemory(b *testing.B) { benchmarkKeyMemory(b, 3) }
