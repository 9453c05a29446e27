package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// requireNotStarted checks that key has no running deploy. A run starts
// under the Manager's lock, inside the timer callback that the fake clock
// runs before Advance or Set returns, so this is exact.
func requireNotStarted(t *testing.T, m *dedup.Manager, key string, when string) {
	t.Helper()
	s, _ := m.Status(key)
	require.Emptyf(t, s.Running, "%s: Status(%q).Running", when, key)
}

func TestDebounce(t *testing.T) {
	const quiet = 10 * time.Second
	tests := []struct {
		name     string
		maxDelay time.Duration
		triggers []time.Duration // when v1, v2, ... are triggered
		start    time.Duration   // when the newest one must start
	}{
		{"one trigger", 0, []time.Duration{0}, 10 * time.Second},
		{"trigger pushes the start", 0, []time.Duration{0, 9 * time.Second}, 19 * time.Second},
		{"burst without bound", 0, []time.Duration{0, 9 * time.Second, 18 * time.Second, 27 * time.Second}, 37 * time.Second},
		{"burst bounded by max delay", 30 * time.Second, []time.Duration{0, 9 * time.Second, 18 * time.Second, 27 * time.Second}, 30 * time.Second},
		{"max delay not reached", 30 * time.Second, []time.Duration{0, 5 * time.Second}, 15 * time.Second},
		{"max delay equal to quiet", quiet, []time.Duration{0, 5 * time.Second}, 10 * time.Second},
		{"quiet trigger after a pause", 0, []time.Duration{0, 10*time.Second - 1}, 20*time.Second - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithClock(clock), dedup.WithDebounce(quiet, tt.maxDelay))
			var tickets []*dedup.Ticket
			var last dedup.Revision
			for i, off := range tt.triggers {
				clock.Set(at(off))
				if i > 0 {
					requireNotStarted(t, m, "web", "before the last trigger")
				}
				last = dedup.Revision("v" + string(rune('1'+i)))
				tickets = append(tickets, trigger(t, m, "web", last))
			}
			clock.Set(at(tt.start - 1))
			requireNotStarted(t, m, "web", "just before the start")
			clock.Set(at(tt.start))
			require.Equal(t, last, status(t, m, "web").Running, "Running at the start")
			c := nextCall(ctx, t, d)
			requireCall(t, c, "web", last)
			c.Finish(nil)
			for i, tk := range tickets {
				res := await(ctx, t, tk)
				require.Equalf(t, last, res.Revision, "ticket %d: Result.Revision", i)
				require.Equalf(t, at(tt.start), res.Started, "ticket %d: Result.Started", i)
			}
			require.Equal(t, []dedup.Revision{last}, d.Revisions("web"), "deploys")
			require.Zero(t, clock.Timers(), "timers left armed")
		})
	}
}

// A trigger during a deploy waits its quiet period after the deploy too, and
// a trigger of the pending revision also pushes the start.
func TestDebounceAfterRunningDeploy(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithDebounce(10*time.Second, 0))
	trigger(t, m, "web", "v1")
	clock.Set(at(10 * time.Second))
	c1 := nextCall(ctx, t, d)

	clock.Set(at(12 * time.Second))
	t2 := trigger(t, m, "web", "v2")
	clock.Set(at(14 * time.Second))
	trigger(t, m, "web", "v2") // joins: the same revision does not push the start
	clock.Set(at(15 * time.Second))
	c1.Finish(nil)
	require.NoError(t, clock.WaitTimers(ctx, 1), "the follow-up's debounce timer")
	clock.Set(at(22*time.Second - 1))
	requireNotStarted(t, m, "web", "during the quiet period")
	clock.Set(at(22 * time.Second))
	c2 := nextCall(ctx, t, d)
	requireCall(t, c2, "web", "v2")
	c2.Finish(nil)
	res := await(ctx, t, t2)
	require.Equal(t, at(22*time.Second), res.Started, "Result.Started")
}

// A poller hands every poll's revision to the Manager (level-triggered):
// polls more frequent than the debounce's quiet period must not keep a
// revision from ever starting.
func TestDebounceWithLevelTriggeredPolls(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithDebounce(10*time.Second, 0))
	for poll := time.Duration(0); poll < 10*time.Second; poll += 3 * time.Second {
		clock.Set(at(poll))
		requireNotStarted(t, m, "web", "during the quiet period")
		require.NoError(t, m.Notify("web", "v1"), "Notify")
	}
	clock.Set(at(10 * time.Second))
	c := nextCall(ctx, t, d)
	requireCall(t, c, "web", "v1")
	c.Finish(nil)
}

func TestMinInterval(t *testing.T) {
	const interval = time.Minute
	tests := []struct {
		name      string
		trigger   time.Duration // of v2
		finish    time.Duration // of v1's deploy, which started at 0
		wantStart time.Duration // of v2
	}{
		{"trigger right after the deploy", 10 * time.Second, 10 * time.Second, interval},
		{"trigger later within the interval", 30 * time.Second, 10 * time.Second, interval},
		{"trigger after the interval", 90 * time.Second, 10 * time.Second, 90 * time.Second},
		{"trigger during a short deploy", 5 * time.Second, 10 * time.Second, interval},
		{"trigger during a long deploy", 30 * time.Second, 2 * time.Minute, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithClock(clock), dedup.WithMinInterval(interval))
			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			var t2 *dedup.Ticket
			if tt.trigger < tt.finish {
				clock.Set(at(tt.trigger))
				t2 = trigger(t, m, "web", "v2")
				clock.Set(at(tt.finish))
				c1.Finish(nil)
				await(ctx, t, t1)
			} else {
				clock.Set(at(tt.finish))
				c1.Finish(nil)
				await(ctx, t, t1)
				clock.Set(at(tt.trigger))
				t2 = trigger(t, m, "web", "v2")
			}
			if now := clock.Now(); at(tt.wantStart).After(now) {
				requireNotStarted(t, m, "web", "within the interval")
				require.Equal(t, at(tt.wantStart), status(t, m, "web").NextStart, "Status.NextStart")
				require.NoError(t, clock.WaitTimers(ctx, 1))
				clock.Set(at(tt.wantStart - 1))
				requireNotStarted(t, m, "web", "just before the interval passed")
				clock.Set(at(tt.wantStart))
			}
			c2 := nextCall(ctx, t, d)
			requireCall(t, c2, "web", "v2")
			c2.Finish(nil)
			res := await(ctx, t, t2)
			require.Equal(t, at(tt.wantStart), res.Started, "start of v2")
		})
	}
}

// The minimum interval also spaces the attempts of one run.
func TestMinIntervalSpacesRetries(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithMinInterval(time.Minute),
		dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Second}))
	tk := trigger(t, m, "web", "v1")
	nextCall(ctx, t, d).Finish(errBoom)
	require.NoError(t, clock.WaitTimers(ctx, 1))
	got, _ := clock.Next()
	require.Equal(t, time.Minute, got, "wait before the retry")
	clock.AdvanceNext()
	nextCall(ctx, t, d).Finish(nil)
	res := await(ctx, t, tk)
	requireResult(t, res, "v1", "v1", dedup.Deployed)
	require.Equal(t, at(time.Minute), status(t, m, "web").LastStarted, "start of the retry")
}

func TestRetryBackoff(t *testing.T) {
	tests := []struct {
		name   string
		policy dedup.RetryPolicy
		waits  []time.Duration // between the attempts
	}{
		{"no retry by default", dedup.RetryPolicy{}, nil},
		{"one attempt", dedup.RetryPolicy{MaxAttempts: 1, Initial: time.Second}, nil},
		{"doubling, capped", dedup.RetryPolicy{MaxAttempts: 4, Initial: time.Second, Max: 3 * time.Second, Multiplier: 2}, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{"tripling, capped", dedup.RetryPolicy{MaxAttempts: 5, Initial: time.Second, Max: 10 * time.Second, Multiplier: 3}, []time.Duration{time.Second, 3 * time.Second, 9 * time.Second, 10 * time.Second}},
		{"constant", dedup.RetryPolicy{MaxAttempts: 3, Initial: 5 * time.Second, Multiplier: 1}, []time.Duration{5 * time.Second, 5 * time.Second}},
		{"defaults", dedup.RetryPolicy{MaxAttempts: 4}, []time.Duration{dedup.DefaultRetryInitial, 2 * dedup.DefaultRetryInitial, 4 * dedup.DefaultRetryInitial}},
		{"default max", dedup.RetryPolicy{MaxAttempts: 3, Initial: 4 * time.Minute}, []time.Duration{4 * time.Minute, dedup.DefaultRetryMax}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			rec := newRecorder()
			m := newManager(t, d, dedup.WithClock(clock), dedup.WithRetry(tt.policy), dedup.WithObserver(rec.observe))
			tk := trigger(t, m, "web", "v1")
			attempts := len(tt.waits) + 1
			for i := range attempts {
				c := nextCall(ctx, t, d)
				requireCall(t, c, "web", "v1")
				require.Equalf(t, at(0).Add(sum(tt.waits[:i])), clock.Now(), "start of attempt %d", i+1)
				c.Finish(errBoom)
				if i == attempts-1 {
					break
				}
				require.NoError(t, clock.WaitTimers(ctx, 1), "retry timer")
				got, ok := clock.Next()
				require.True(t, ok)
				require.Equalf(t, tt.waits[i], got, "wait after attempt %d", i+1)
				s := status(t, m, "web")
				require.Equal(t, dedup.Revision("v1"), s.Pending, "Status.Pending while waiting to retry")
				require.Empty(t, s.Running, "Status.Running while waiting to retry")
				require.Equal(t, i+1, s.Attempt, "Status.Attempt while waiting to retry")
				require.ErrorIs(t, s.LastErr, errBoom, "Status.LastErr while waiting to retry")
				require.Equal(t, clock.Now().Add(tt.waits[i]), s.NextStart, "Status.NextStart")
				requireNotSettled(t, tk, "while waiting to retry")
				clock.Set(clock.Now().Add(tt.waits[i] - 1))
				requireNotStarted(t, m, "web", "before the backoff passed")
				clock.Advance(1)
			}
			res := await(ctx, t, tk)
			requireResult(t, res, "v1", "v1", dedup.Failed)
			require.ErrorIs(t, res.Err, errBoom, "Result.Err")
			require.Equal(t, attempts, res.Attempts, "Result.Attempts")
			require.Equal(t, at(0), res.Started, "Result.Started is the first attempt's")
			s := status(t, m, "web")
			require.Equal(t, attempts, s.Runs, "Status.Runs")
			require.Equal(t, attempts, s.Failures, "Status.Failures")
			require.Zero(t, clock.Timers(), "timers left armed")

			require.NoError(t, m.Close(ctx))
			var delays []time.Duration // by attempt: goroutines may deliver them out of order
			for _, e := range rec.events() {
				if e.Kind == dedup.EventRetrying {
					require.ErrorIs(t, e.Err, errBoom, "EventRetrying.Err")
					require.Greater(t, e.Attempt, 0, "EventRetrying.Attempt")
					for len(delays) < e.Attempt {
						delays = append(delays, -1)
					}
					delays[e.Attempt-1] = e.Delay
				}
			}
			require.Equal(t, tt.waits, delays, "EventRetrying delays by attempt")
		})
	}
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}

func TestRetryJitterShortensWaits(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock),
		dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 5, Initial: 8 * time.Second, Multiplier: 2, Max: time.Minute, Jitter: 0.5}))
	tk := trigger(t, m, "web", "v1")
	for i, full := range []time.Duration{8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute} {
		nextCall(ctx, t, d).Finish(errBoom)
		require.NoError(t, clock.WaitTimers(ctx, 1))
		got, _ := clock.Next()
		require.Truef(t, got > full/2 && got <= full, "wait after attempt %d = %v; want in (%v, %v]", i+1, got, full/2, full)
		clock.AdvanceNext()
	}
	nextCall(ctx, t, d).Finish(nil)
	res := await(ctx, t, tk)
	requireResult(t, res, "v1", "v1", dedup.Deployed)
	require.Equal(t, 5, res.Attempts)
}

// A run that succeeds on a retry is Deployed; the next run starts its
// backoff afresh.
func TestRetrySucceedsAndBackoffRestarts(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock),
		dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 5, Initial: time.Second, Multiplier: 2}))

	t1 := trigger(t, m, "web", "v1")
	for range 2 {
		nextCall(ctx, t, d).Finish(errBoom)
		require.NoError(t, clock.WaitTimers(ctx, 1))
		clock.AdvanceNext()
	}
	nextCall(ctx, t, d).Finish(nil)
	res := await(ctx, t, t1)
	requireResult(t, res, "v1", "v1", dedup.Deployed)
	require.Equal(t, 3, res.Attempts, "Result.Attempts")
	require.Equal(t, at(0), res.Started, "Result.Started")
	require.Equal(t, at(3*time.Second), res.Finished, "Result.Finished")
	require.NoError(t, status(t, m, "web").LastErr, "Status.LastErr after success")

	t2 := trigger(t, m, "web", "v2")
	nextCall(ctx, t, d).Finish(errBoom)
	require.NoError(t, clock.WaitTimers(ctx, 1))
	got, _ := clock.Next()
	require.Equal(t, time.Second, got, "first wait of a new run")
	clock.AdvanceNext()
	nextCall(ctx, t, d).Finish(nil)
	res = await(ctx, t, t2)
	requireResult(t, res, "v2", "v2", dedup.Deployed)
	require.Equal(t, 2, res.Attempts, "Result.Attempts")
}

// A newer revision replaces a pending retry: it starts at once, and the
// failed revision's tickets settle with it.
func TestRetryReplacedByNewerRevision(t *testing.T) {
	tests := []struct {
		name   string
		during bool // v2 arrives while v1's failing attempt runs, not while it waits to retry
	}{
		{"while waiting to retry", false},
		{"while the failing attempt runs", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithClock(clock),
				dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Minute}))
			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			var t2 *dedup.Ticket
			if tt.during {
				t2 = trigger(t, m, "web", "v2")
				c1.Finish(errBoom)
			} else {
				c1.Finish(errBoom)
				require.NoError(t, clock.WaitTimers(ctx, 1), "retry timer")
				t2 = trigger(t, m, "web", "v2")
			}
			c2 := nextCall(ctx, t, d)
			requireCall(t, c2, "web", "v2")
			require.Equal(t, at(0), clock.Now(), "v2 waited for v1's backoff")
			require.Zero(t, clock.Timers(), "retry timer still armed")
			c2.Finish(nil)
			res := await(ctx, t, t1)
			requireResult(t, res, "v1", "v2", dedup.Superseded)
			require.Equal(t, 1, res.Attempts, "Result.Attempts of v2's run")
			requireResult(t, await(ctx, t, t2), "v2", "v2", dedup.Deployed)
			require.Equal(t, []dedup.Revision{"v1", "v2"}, d.Revisions("web"))
		})
	}
}

func TestTimeout(t *testing.T) {
	const timeout = 5 * time.Second
	tests := []struct {
		name  string
		retry dedup.RetryPolicy
	}{
		{"fails", dedup.RetryPolicy{}},
		{"retries", dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithClock(clock), dedup.WithTimeout(timeout), dedup.WithRetry(tt.retry))
			tk := trigger(t, m, "web", "v1")
			c := nextCall(ctx, t, d)
			require.NoError(t, clock.WaitTimers(ctx, 1), "timeout timer")
			clock.Advance(timeout - 1)
			require.NoError(t, c.Context().Err(), "attempt's context before the timeout")
			clock.Advance(1)
			require.ErrorIs(t, c.Context().Err(), context.DeadlineExceeded, "attempt's context after the timeout")
			require.ErrorIs(t, c.Err(), context.DeadlineExceeded, "what the deploy returned")

			if tt.retry.MaxAttempts == 0 {
				res := await(ctx, t, tk)
				requireResult(t, res, "v1", "v1", dedup.Failed)
				require.ErrorIs(t, res.Err, context.DeadlineExceeded, "Result.Err")
				require.Equal(t, at(timeout), res.Finished, "Result.Finished")
				require.Zero(t, clock.Timers(), "timers left armed")
				return
			}
			require.NoError(t, clock.WaitTimers(ctx, 1), "retry timer")
			clock.AdvanceNext()
			c = nextCall(ctx, t, d)
			require.NoError(t, c.Context().Err(), "second attempt's context")
			c.Finish(nil)
			res := await(ctx, t, tk)
			requireResult(t, res, "v1", "v1", dedup.Deployed)
			require.Equal(t, 2, res.Attempts)
			require.Zero(t, clock.Timers(), "the finished attempt's timeout timer is still armed")
		})
	}
}

func TestCancelInProgress(t *testing.T) {
	tests := []struct {
		name    string
		cancel  bool
		timeout time.Duration
	}{
		{"off", false, 0},
		{"on", true, 0},
		{"on, with a timeout", true, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			d := new(deduptest.Deployer)
			rec := newRecorder()
			clock := new(deduptest.Clock)
			opts := []dedup.Option{dedup.WithObserver(rec.observe), dedup.WithClock(clock), dedup.WithTimeout(tt.timeout)}
			if tt.cancel {
				opts = append(opts, dedup.WithCancelInProgress())
			}
			// The canceled deploy returns only when the test says so, so
			// that v3 surely arrives while it winds down.
			d.IgnoreCancel = true
			m := newManager(t, d, opts...)
			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			trigger(t, m, "web", "v1") // joining the running revision cancels nothing
			require.NoError(t, c1.Context().Err(), "context after a trigger of the running revision")

			t2 := trigger(t, m, "web", "v2")
			if !tt.cancel {
				require.NoError(t, c1.Context().Err(), "context of the running deploy")
				c1.Finish(nil)
				c2 := nextCall(ctx, t, d)
				requireCall(t, c2, "web", "v2")
				c2.Finish(nil)
				requireResult(t, await(ctx, t, t1), "v1", "v1", dedup.Deployed)
				requireResult(t, await(ctx, t, t2), "v2", "v2", dedup.Deployed)
				return
			}
			require.ErrorIs(t, c1.Context().Err(), context.Canceled, "context of the running deploy")
			t3 := trigger(t, m, "web", "v3")
			c1.Finish(c1.Context().Err())
			c2 := nextCall(ctx, t, d)
			requireCall(t, c2, "web", "v3")
			require.NoError(t, c2.Context().Err(), "context of the newer deploy")
			c2.Finish(nil)
			requireResult(t, await(ctx, t, t1), "v1", "v3", dedup.Superseded)
			requireResult(t, await(ctx, t, t2), "v2", "v3", dedup.Superseded)
			requireResult(t, await(ctx, t, t3), "v3", "v3", dedup.Deployed)
			e := rec.waitFor(ctx, t, "canceled", func(e dedup.Event) bool { return e.Kind == dedup.EventCanceled })
			require.Equal(t, dedup.Revision("v1"), e.Replaced, "EventCanceled.Replaced")
			require.Equal(t, dedup.Revision("v2"), e.Revision, "EventCanceled.Revision")
			require.Equal(t, []dedup.Revision{"v1", "v3"}, d.Revisions("web"))
		})
	}
}

// With cancel-in-progress, a newer revision that arrives while the Store is
// read for the key's first deploy means the older one is never deployed.
func TestCancelInProgressBeforeTheFirstAttempt(t *testing.T) {
	ctx := testContext(t)
	store := &blockingStore{loading: make(chan string, 1), release: make(chan struct{})}
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithStore(store), dedup.WithCancelInProgress())
	t1 := trigger(t, m, "web", "v1")
	<-store.loading
	t2 := trigger(t, m, "web", "v2")
	close(store.release)
	c := nextCall(ctx, t, d)
	requireCall(t, c, "web", "v2")
	c.Finish(nil)
	requireResult(t, await(ctx, t, t1), "v1", "v2", dedup.Superseded)
	requireResult(t, await(ctx, t, t2), "v2", "v2", dedup.Deployed)
	require.Equal(t, []dedup.Revision{"v2"}, d.Revisions("web"))
}

func TestMaxConcurrent(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithMaxConcurrent(2))
	ta := trigger(t, m, "a", "v1")
	tb := trigger(t, m, "b", "v1")
	calls := map[string]*deduptest.Call{}
	for range 2 {
		c := nextCall(ctx, t, d)
		calls[c.Key] = c
	}
	require.Contains(t, calls, "a")
	require.Contains(t, calls, "b")

	// d and c wait for a slot, in that order, and keep coalescing.
	td := trigger(t, m, "d", "v1")
	tc := []*dedup.Ticket{trigger(t, m, "c", "v1"), trigger(t, m, "c", "v2"), trigger(t, m, "c", "v3")}
	for _, key := range []string{"c", "d"} {
		s := status(t, m, key)
		require.Truef(t, s.Queued, "Status(%q).Queued", key)
		require.Emptyf(t, s.Running, "Status(%q).Running", key)
	}
	require.Equal(t, dedup.Revision("v3"), status(t, m, "c").Pending)

	calls["b"].Finish(nil)
	c := nextCall(ctx, t, d)
	requireCall(t, c, "d", "v1") // first in, first started
	require.False(t, status(t, m, "d").Queued, "Status(d).Queued after it started")
	calls["a"].Finish(nil)
	c2 := nextCall(ctx, t, d)
	requireCall(t, c2, "c", "v3")
	c.Finish(nil)
	c2.Finish(nil)

	requireResult(t, await(ctx, t, ta), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, tb), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, td), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, tc[0]), "v1", "v3", dedup.Superseded)
	requireResult(t, await(ctx, t, tc[1]), "v2", "v3", dedup.Superseded)
	requireResult(t, await(ctx, t, tc[2]), "v3", "v3", dedup.Deployed)
	require.Equal(t, []dedup.Revision{"v3"}, d.Revisions("c"), "deploys of c")
	require.Equal(t, 2, d.MaxRunning(), "MaxRunning")
}

// A key whose follow-up becomes ready when its own run ends queues behind
// the keys already waiting.
func TestMaxConcurrentIsFair(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithMaxConcurrent(1))
	trigger(t, m, "a", "v1")
	ca := nextCall(ctx, t, d)
	trigger(t, m, "b", "v1")
	trigger(t, m, "a", "v2")
	ca.Finish(nil)
	cb := nextCall(ctx, t, d)
	requireCall(t, cb, "b", "v1")
	require.True(t, status(t, m, "a").Queued, "Status(a).Queued")
	cb.Finish(nil)
	ca = nextCall(ctx, t, d)
	requireCall(t, ca, "a", "v2")
	ca.Finish(nil)
	require.Equal(t, 1, d.MaxRunning())
}

// A revision that waits for its start (debounce, minimum interval, a slot)
// and is replaced by the live revision is Unchanged: nothing to deploy.
func TestPendingBackToLive(t *testing.T) {
	tests := []struct {
		name string
		opts []dedup.Option
	}{
		{"debounce", []dedup.Option{dedup.WithDebounce(time.Second, 0)}},
		{"min interval", []dedup.Option{dedup.WithMinInterval(time.Minute)}},
		{"slot", []dedup.Option{dedup.WithMaxConcurrent(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, append(tt.opts, dedup.WithClock(clock))...)
			t1 := trigger(t, m, "web", "v1")
			for clock.Timers() > 0 {
				clock.AdvanceNext()
			}
			nextCall(ctx, t, d).Finish(nil)
			await(ctx, t, t1)

			// Another key holds the only slot, if there is a limit.
			t0 := trigger(t, m, "other", "x")
			for clock.Timers() > 0 {
				clock.AdvanceNext()
			}
			other := nextCall(ctx, t, d)
			requireCall(t, other, "other", "x")

			t2 := trigger(t, m, "web", "v2")
			requireNotStarted(t, m, "web", "v2 before its start")
			t3 := trigger(t, m, "web", "v1")
			clock.Advance(time.Hour)
			other.Finish(nil)
			await(ctx, t, t0)
			requireResult(t, await(ctx, t, t2), "v2", "v1", dedup.Superseded)
			requireResult(t, await(ctx, t, t3), "v1", "v1", dedup.Unchanged)
			requireIdle(t, m, "web")
			require.Equal(t, []dedup.Revision{"v1"}, d.Revisions("web"), "deploys")
			require.Zero(t, clock.Timers(), "timers left armed")
		})
	}
}

// A key that waits for a slot and gets a new trigger leaves no timer behind
// once it ran, so Close does not wait for one.
func TestMaxConcurrentWithDebounceLeavesNoTimer(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithMaxConcurrent(1), dedup.WithDebounce(10*time.Second, 0))
	ta := trigger(t, m, "a", "v1")
	clock.Advance(10 * time.Second)
	ca := nextCall(ctx, t, d)
	tb := trigger(t, m, "b", "v1")
	clock.Advance(10 * time.Second)
	require.True(t, status(t, m, "b").Queued, "Status(b).Queued")
	tb2 := trigger(t, m, "b", "v2")
	clock.Advance(time.Second)
	ca.Finish(nil)
	await(ctx, t, ta)
	// b may start now or once its new quiet period passed.
	for status(t, m, "b").Running == "" && clock.Timers() > 0 {
		clock.AdvanceNext()
	}
	cb := nextCall(ctx, t, d)
	requireCall(t, cb, "b", "v2")
	cb.Finish(nil)
	requireResult(t, await(ctx, t, tb), "v1", "v2", dedup.Superseded)
	requireResult(t, await(ctx, t, tb2), "v2", "v2", dedup.Deployed)
	requireIdle(t, m, "b")
	n := clock.Timers()
	for clock.Timers() > 0 { // so that a failure below does not hang Close too
		clock.AdvanceNext()
	}
	require.Zero(t, n, "timers left armed after a queued key ran")
	closed, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	require.NoError(t, m.Close(closed), "Close")
}

func TestKeyPolicy(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	var mu sync.Mutex
	calls := map[string]int{}
	m := newManager(t, d, dedup.WithClock(clock),
		// The default policy, which the key policy replaces.
		dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 9}),
		dedup.WithKeyPolicy(func(key string) dedup.Policy {
			mu.Lock()
			calls[key]++
			mu.Unlock()
			switch key {
			case "critical":
				return dedup.Policy{Quiet: 10 * time.Second, Retry: dedup.RetryPolicy{MaxAttempts: 2, Initial: time.Minute}}
			}
			return dedup.Policy{}
		}))

	tc := trigger(t, m, "critical", "v1")
	to := trigger(t, m, "other", "v1")
	c := nextCall(ctx, t, d)
	requireCall(t, c, "other", "v1") // no debounce
	requireNotStarted(t, m, "critical", "debounced key")
	c.Finish(errBoom)
	res := await(ctx, t, to)
	requireResult(t, res, "v1", "v1", dedup.Failed)
	require.Equal(t, 1, res.Attempts, "Attempts of the key without retry")

	clock.Advance(10 * time.Second)
	c = nextCall(ctx, t, d)
	requireCall(t, c, "critical", "v1")
	c.Finish(errBoom)
	require.NoError(t, clock.WaitTimers(ctx, 1), "retry timer")
	got, _ := clock.Next()
	require.Equal(t, time.Minute, got, "retry wait of the critical key")
	clock.AdvanceNext()
	nextCall(ctx, t, d).Finish(errBoom)
	res = await(ctx, t, tc)
	requireResult(t, res, "v1", "v1", dedup.Failed)
	require.Equal(t, 2, res.Attempts, "Attempts of the critical key")

	trigger(t, m, "critical", "v2")
	trigger(t, m, "other", "v2")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"critical": 1, "other": 1}, calls, "key policy calls per key")
}

// The key policy function runs with no lock held: a slow one for a new key
// blocks no trigger of another key.
func TestKeyPolicyHoldsNoLock(t *testing.T) {
	ctx := testContext(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	m := newManager(t, instant(), dedup.WithKeyPolicy(func(key string) dedup.Policy {
		if key == "slow" {
			close(entered)
			<-release
		}
		return dedup.Policy{}
	}))
	slow := make(chan error, 1)
	go func() {
		tk, err := m.Trigger("slow", "v1")
		if err == nil {
			_, err = tk.Wait(ctx)
		}
		slow <- err
	}()
	<-entered
	within(ctx, t, "Trigger of another key while a key policy runs", func() {
		_, _ = m.Deploy(ctx, "fast", "v1")
	})
	close(release)
	select {
	case err := <-slow:
		require.NoError(t, err, "Trigger(slow)")
	case <-ctx.Done():
		t.Fatal("Trigger(slow) did not return")
	}
}

func TestObserverSeesEveryChange(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	var m *dedup.Manager
	m = newManager(t, d, dedup.WithClock(clock), dedup.WithObserver(func(e dedup.Event) {
		rec.observe(e)
		// The observer holds no lock of the Manager's.
		_, _ = m.Status(e.Key)
	}))
	trigger(t, m, "web", "v1")
	c1 := nextCall(ctx, t, d)
	trigger(t, m, "web", "v1")
	trigger(t, m, "web", "v2")
	trigger(t, m, "web", "v3")
	trigger(t, m, "web", "v3")
	clock.Advance(3 * time.Second)
	c1.Finish(nil)
	c2 := nextCall(ctx, t, d)
	clock.Advance(2 * time.Second)
	c2.Finish(errBoom)
	rec.waitFor(ctx, t, "failed", ofKind(dedup.EventFailed, "v3"))
	trigger(t, m, "web", "v1")
	require.NoError(t, m.Close(ctx))

	type ev struct {
		Kind              dedup.EventKind
		Revision, Replace dedup.Revision
		Attempt           int
		Duration          time.Duration
		Err               bool
		At                time.Duration
	}
	var got []ev
	for _, e := range rec.events() {
		require.Equal(t, "web", e.Key, "Event.Key")
		got = append(got, ev{e.Kind, e.Revision, e.Replaced, e.Attempt, e.Duration, e.Err != nil, e.Time.Sub(deduptest.Epoch)})
	}
	require.Equal(t, []ev{
		{Kind: dedup.EventQueued, Revision: "v1"},
		{Kind: dedup.EventStarted, Revision: "v1", Attempt: 1},
		{Kind: dedup.EventCoalesced, Revision: "v1", Attempt: 1},
		{Kind: dedup.EventQueued, Revision: "v2"},
		{Kind: dedup.EventCoalesced, Revision: "v3", Replace: "v2"},
		{Kind: dedup.EventCoalesced, Revision: "v3"},
		{Kind: dedup.EventSucceeded, Revision: "v1", Attempt: 1, Duration: 3 * time.Second, At: 3 * time.Second},
		{Kind: dedup.EventStarted, Revision: "v3", Attempt: 1, At: 3 * time.Second},
		{Kind: dedup.EventFailed, Revision: "v3", Attempt: 1, Duration: 2 * time.Second, Err: true, At: 5 * time.Second},
		{Kind: dedup.EventUnchanged, Revision: "v1", At: 5 * time.Second},
	}, got, "events")
}

// The events of one key reach the observer in the order they happened: an
// attempt's end never before its start. The observer yields while it sees
// the events of a trigger, to give a deploy that ends at once the chance to
// overtake them.
func TestEventsOfAKeyInOrder(t *testing.T) {
	const keys = 200
	ctx := testContext(t)
	rec := newRecorder()
	m := newManager(t, instant(), dedup.WithObserver(func(e dedup.Event) {
		if e.Kind == dedup.EventQueued {
			for range 10 {
				runtime.Gosched()
			}
		}
		rec.observe(e)
	}))
	var tickets []*dedup.Ticket
	for i := range keys {
		tickets = append(tickets, trigger(t, m, fmt.Sprintf("k%03d", i), "v1"))
	}
	for _, tk := range tickets {
		await(ctx, t, tk)
	}
	require.NoError(t, m.Close(ctx))
	order := map[string][]dedup.EventKind{}
	for _, e := range rec.events() {
		order[e.Key] = append(order[e.Key], e.Kind)
	}
	want := []dedup.EventKind{dedup.EventQueued, dedup.EventStarted, dedup.EventSucceeded}
	var wrong []string
	for key, kinds := range order {
		require.ElementsMatchf(t, want, kinds, "events of %q", key)
		if !slices.Equal(want, kinds) {
			wrong = append(wrong, fmt.Sprintf("%s: %v", key, kinds))
		}
	}
	require.Len(t, order, keys, "keys with events")
	if len(wrong) > 0 {
		t.Fatalf("events of a key delivered out of order for %d of %d keys, e.g. %s", len(wrong), keys, wrong[0])
	}
}

func TestObserverOnClose(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m := newManager(t, d, dedup.WithObserver(rec.observe))
	trigger(t, m, "web", "v1")
	nextCall(ctx, t, d)
	trigger(t, m, "web", "v2")
	ended, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, m.Close(ended), context.Canceled)

	var kinds []dedup.EventKind
	for _, e := range rec.events() {
		kinds = append(kinds, e.Kind)
	}
	require.Contains(t, kinds, dedup.EventAborted, "events %v", kinds)
	if !slices.Contains(kinds, dedup.EventCanceled) {
		t.Fatalf("Close canceled a running deploy without EventCanceled; events %v", kinds)
	}
}

func TestEnumStrings(t *testing.T) {
	for k, want := range map[dedup.EventKind]string{
		dedup.EventQueued: "queued", dedup.EventCoalesced: "coalesced", dedup.EventStarted: "started",
		dedup.EventSucceeded: "succeeded", dedup.EventFailed: "failed", dedup.EventRetrying: "retrying",
		dedup.EventCanceled: "canceled", dedup.EventUnchanged: "unchanged", dedup.EventAborted: "aborted",
		dedup.EventStoreFailed: "store-failed", dedup.EventSlow: "slow", 0: "event(0)", 200: "event(200)",
	} {
		require.Equalf(t, want, k.String(), "EventKind(%d).String()", k)
	}
	for o, want := range map[dedup.Outcome]string{
		dedup.Deployed: "deployed", dedup.Superseded: "superseded", dedup.Unchanged: "unchanged",
		dedup.Failed: "failed", dedup.Aborted: "aborted", 0: "outcome(0)", 9: "outcome(9)",
	} {
		require.Equalf(t, want, o.String(), "Outcome(%d).String()", o)
	}
	for a, want := range map[dedup.Action]string{
		dedup.ActionStarted: "started", dedup.ActionQueued: "queued", dedup.ActionJoinedRunning: "joined-running",
		dedup.ActionJoinedPending: "joined-pending", dedup.ActionUnchanged: "unchanged", 0: "action(0)", 6: "action(6)",
	} {
		require.Equalf(t, want, a.String(), "Action(%d).String()", a)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.b.String()), "\n")
}

func TestLogger(t *testing.T) {
	ctx := testContext(t)
	var buf syncBuffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithLogger(slog.New(h)))
	t1 := trigger(t, m, "web", "v1")
	c := nextCall(ctx, t, d)
	trigger(t, m, "web", "v2")
	trigger(t, m, "web", "v3")
	c.Finish(nil)
	await(ctx, t, t1)
	nextCall(ctx, t, d).Finish(errors.New("exit status 1"))
	require.NoError(t, m.Close(ctx))

	lines := buf.lines()
	for _, want := range []string{
		`level=INFO msg="dedup: started" key=web revision=v1 attempt=1`,
		`level=DEBUG msg="dedup: coalesced" key=web revision=v3 replaced=v2`,
		`level=INFO msg="dedup: succeeded" key=web revision=v1 attempt=1`,
		`level=WARN msg="dedup: failed" key=web revision=v3 attempt=1 err="exit status 1"`,
	} {
		require.Contains(t, lines, want, "log lines:\n%s", strings.Join(lines, "\n"))
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
