package dedup_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// closeAsync calls m.Close(ctx) in a goroutine and returns what it returns.
func closeAsync(ctx context.Context, m *dedup.Manager) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- m.Close(ctx) }()
	return ch
}

func receive(ctx context.Context, t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		t.Fatalf("%s did not return: %v", what, ctx.Err())
		return nil
	}
}

func requireAborted(t *testing.T, res dedup.Result, requested dedup.Revision) {
	t.Helper()
	require.Equalf(t, requested, res.Requested, "Result %+v: Requested", res)
	require.Equalf(t, dedup.Aborted, res.Outcome, "Result %+v: Outcome", res)
	require.Truef(t, errors.Is(res.Err, dedup.ErrClosed), "Result %+v: Err = %v; want ErrClosed", res, res.Err)
}

// Close aborts what waits and lets what runs finish.
func TestCloseLetsRunningDeploysFinish(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	t1 := trigger(t, m, "web", "v1")
	c1 := nextCall(ctx, t, d)
	t2 := trigger(t, m, "web", "v2")
	t3 := trigger(t, m, "web", "v3")

	closed := closeAsync(ctx, m)
	res2 := await(ctx, t, t2) // aborted by Close at once
	requireAborted(t, res2, "v2")
	require.Equal(t, dedup.Revision("v3"), res2.Revision, "Result.Revision of a superseded, aborted ticket")
	requireAborted(t, await(ctx, t, t3), "v3")
	requireNotSettled(t, t1, "the running deploy during Close")
	require.NoError(t, c1.Context().Err(), "Close canceled a running deploy before its context ended")

	c1.Finish(nil)
	require.NoError(t, receive(ctx, t, closed, "Close"), "Close")
	requireResult(t, await(ctx, t, t1), "v1", "v1", dedup.Deployed)
	require.Equal(t, []dedup.Revision{"v1"}, d.Revisions("web"), "deploys")
	s := status(t, m, "web")
	require.Equal(t, dedup.Revision("v1"), s.Live, "Status after Close")
	require.Empty(t, s.Pending, "Status.Pending after Close")
}

// When Close's context ends first, Close cancels the running deploys, waits
// for them and returns the context's error; their tickets are Aborted.
func TestCloseCancelsWhenItsContextEnds(t *testing.T) {
	tests := []struct {
		name string
		ctx  func(context.Context) (context.Context, context.CancelFunc)
		want error
	}{
		{"already canceled", func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"already expired", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithDeadline(ctx, time.Unix(0, 0))
		}, context.DeadlineExceeded},
		{"expiring", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			d := new(deduptest.Deployer)
			m := newManager(t, d)
			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			t2 := trigger(t, m, "web", "v2")
			ta := trigger(t, m, "api", "a1")
			nextCall(ctx, t, d)

			closeCtx, cancel := tt.ctx(ctx)
			defer cancel()
			err := receive(ctx, t, closeAsync(closeCtx, m), "Close")
			require.ErrorIs(t, err, tt.want, "Close")
			require.ErrorIs(t, c1.Context().Err(), context.Canceled, "context of the running deploy")
			requireAborted(t, await(ctx, t, t2), "v2")
			for _, tk := range []*dedup.Ticket{t1, ta} {
				res := await(ctx, t, tk)
				requireAborted(t, res, res.Requested)
				require.ErrorIs(t, res.Err, context.Canceled, "Result.Err keeps the deploy's error")
				require.Equal(t, 1, res.Attempts, "Result.Attempts")
			}
		})
	}
}

// Close with an ending context while it already waits.
func TestCloseContextEndsWhileWaiting(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	t1 := trigger(t, m, "web", "v1")
	c1 := nextCall(ctx, t, d)
	t2 := trigger(t, m, "web", "v2")
	closeCtx, cancel := context.WithCancel(ctx)
	closed := closeAsync(closeCtx, m)
	await(ctx, t, t2) // Close is past aborting, waiting for v1
	require.NoError(t, c1.Context().Err(), "deploy canceled before Close's context ended")
	cancel()
	require.ErrorIs(t, receive(ctx, t, closed, "Close"), context.Canceled, "Close")
	require.ErrorIs(t, c1.Err(), context.Canceled, "what the deploy returned")
	requireAborted(t, await(ctx, t, t1), "v1")
}

func TestCloseRefusesTriggers(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, instant())
	_, err := m.Deploy(ctx, "web", "v1")
	require.NoError(t, err)
	require.NoError(t, m.Close(ctx), "Close")

	tk, err := m.Trigger("web", "v2")
	require.Nil(t, tk, "Trigger after Close")
	require.ErrorIsf(t, err, dedup.ErrClosed, "Trigger(%q) after Close = %v; want ErrClosed", "web", err)
	_, err = m.Trigger("new", "v1")
	require.ErrorIs(t, err, dedup.ErrClosed, "Trigger of a new key after Close")
	_, err = m.Trigger("web", "v1")
	require.ErrorIs(t, err, dedup.ErrClosed, "Trigger of the live revision after Close")
	_, err = m.Deploy(ctx, "web", "v2")
	require.ErrorIs(t, err, dedup.ErrClosed, "Deploy after Close")
	require.ErrorIs(t, m.Notify("web", "v2"), dedup.ErrClosed, "Notify after Close")

	// Bad input is still reported as such.
	_, err = m.Trigger("", "v1")
	require.ErrorIs(t, err, dedup.ErrInvalid, "Trigger with an empty key after Close")

	require.Equal(t, dedup.Revision("v1"), status(t, m, "web").Live, "Status after Close")
	require.Len(t, m.Statuses(), 1, "Statuses after Close")
}

func TestCloseTwice(t *testing.T) {
	tests := []struct {
		name       string
		concurrent bool
	}{
		{"in turn", false},
		{"at once", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			d := new(deduptest.Deployer)
			m := newManager(t, d)
			t1 := trigger(t, m, "web", "v1")
			c1 := nextCall(ctx, t, d)
			if !tt.concurrent {
				c1.Finish(nil)
				require.NoError(t, m.Close(ctx), "first Close")
				require.NoError(t, m.Close(ctx), "second Close")
				requireResult(t, await(ctx, t, t1), "v1", "v1", dedup.Deployed)
				return
			}
			first, second := closeAsync(ctx, m), closeAsync(ctx, m)
			for _, ch := range []<-chan error{first, second} {
				select {
				case err := <-ch:
					t.Fatalf("Close returned %v while a deploy runs", err)
				default:
				}
			}
			c1.Finish(nil)
			require.NoError(t, receive(ctx, t, first, "first Close"))
			require.NoError(t, receive(ctx, t, second, "second Close"))
			requireResult(t, await(ctx, t, t1), "v1", "v1", dedup.Deployed)
		})
	}
}

// Close drops what waits for a timer (debounce, minimum interval, retry) and
// leaves no timer armed.
func TestCloseDropsTimers(t *testing.T) {
	tests := []struct {
		name string
		opts []dedup.Option
		fail bool // the first attempt fails
	}{
		{"debounce", []dedup.Option{dedup.WithDebounce(time.Minute, 0)}, false},
		{"min interval", []dedup.Option{dedup.WithMinInterval(time.Minute)}, false},
		{"retry", []dedup.Option{dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Minute})}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clock := new(deduptest.Clock)
			d := new(deduptest.Deployer)
			m := newManager(t, d, append(tt.opts, dedup.WithClock(clock))...)
			var tk *dedup.Ticket
			switch {
			case tt.fail:
				tk = trigger(t, m, "web", "v1")
				nextCall(ctx, t, d).Finish(errBoom)
			case tt.name == "min interval":
				await(ctx, t, func() *dedup.Ticket {
					t0 := trigger(t, m, "web", "v0")
					nextCall(ctx, t, d).Finish(nil)
					return t0
				}())
				tk = trigger(t, m, "web", "v1")
			default:
				tk = trigger(t, m, "web", "v1")
			}
			require.NoError(t, clock.WaitTimers(ctx, 1), "timer of the waiting revision")
			require.NoError(t, receive(ctx, t, closeAsync(ctx, m), "Close"), "Close")
			res := await(ctx, t, tk)
			requireAborted(t, res, "v1")
			require.Zero(t, clock.Timers(), "timers left armed after Close")
			clock.Advance(time.Hour)
			require.Zero(t, d.Running(), "deploys started after Close")
		})
	}
}

// Close while the Store is read before a key's first deploy: the deploy
// never starts.
func TestCloseWhileLoading(t *testing.T) {
	ctx := testContext(t)
	store := &blockingStore{loading: make(chan string, 1), release: make(chan struct{})}
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m := newManager(t, d, dedup.WithStore(store), dedup.WithObserver(rec.observe))
	tk := trigger(t, m, "web", "v1")
	<-store.loading
	ended, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, receive(ctx, t, closeAsync(ended, m), "Close"), context.Canceled)
	requireAborted(t, await(ctx, t, tk), "v1")
	require.Empty(t, d.Calls(), "deployed after Close")
	rec.waitFor(ctx, t, "aborted", ofKind(dedup.EventAborted, "v1"))
}

// Close of a Manager that never deployed, and the events a run delivers
// before Close returns.
func TestCloseDeliversEvents(t *testing.T) {
	ctx := testContext(t)
	var mu sync.Mutex
	var kinds []dedup.EventKind
	m := newManager(t, instant(), dedup.WithObserver(func(e dedup.Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}))
	tk := trigger(t, m, "web", "v1")
	require.NoError(t, m.Close(ctx))
	requireResult(t, await(ctx, t, tk), "v1", "v1", dedup.Deployed)
	mu.Lock()
	defer mu.Unlock()
	// Their order is TestEventsOfAKeyInOrder's business.
	require.ElementsMatch(t, []dedup.EventKind{dedup.EventQueued, dedup.EventStarted, dedup.EventSucceeded}, kinds,
		"events delivered when Close returned")

	unused, err := dedup.New(instant())
	require.NoError(t, err)
	require.NoError(t, unused.Close(ctx), "Close of an unused Manager")
}
