package poller_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait of a test, so that a bug fails the test
// instead of hanging it.
const testTimeout = 10 * time.Second

var errBoom = errors.New("boom")

// testContext returns a context that ends after testTimeout or when the test
// ends.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// triggered is one call of a recorder.
type triggered struct {
	key string
	rev dedup.Revision
}

// recorder is a Trigger that records what it is handed. It returns err (nil
// by default) from every call.
type recorder struct {
	mu    sync.Mutex
	calls []triggered
	err   error
}

func (r *recorder) record(c triggered) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	return r.err
}

func (r *recorder) Notify(key string, rev dedup.Revision, _ ...dedup.TriggerOption) error {
	return r.record(triggered{key: key, rev: rev})
}

func (r *recorder) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// revs returns the revisions handed over for key, in order.
func (r *recorder) revs(key string) []dedup.Revision {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []dedup.Revision
	for _, c := range r.calls {
		if c.key == key {
			out = append(out, c.rev)
		}
	}
	return out
}

func (r *recorder) all() []triggered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]triggered(nil), r.calls...)
}

// scripted is a Source whose every call is handed to the test, which answers
// it. It fails the test if two calls overlap.
type scripted struct {
	t            testing.TB
	ignoreCancel bool // wait for the answer even after ctx is done
	calls        chan *pollCall
	active       atomic.Int32
	maxActive    atomic.Int32
}

func newScripted(t testing.TB) *scripted {
	return &scripted{t: t, calls: make(chan *pollCall, 16)}
}

type pollCall struct {
	ctx    context.Context
	answer chan answer
}

type answer struct {
	rev dedup.Revision
	err error
}

func (s *scripted) Latest(ctx context.Context) (dedup.Revision, error) {
	n := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.maxActive.Load()
		if n <= m || s.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	c := &pollCall{ctx: ctx, answer: make(chan answer, 1)}
	s.calls <- c
	if s.ignoreCancel {
		a := <-c.answer
		return a.rev, a.err
	}
	select {
	case a := <-c.answer:
		return a.rev, a.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// next waits for the next call of Latest.
func (s *scripted) next(ctx context.Context) *pollCall {
	s.t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-ctx.Done():
		s.t.Fatalf("Latest was not called: %v", ctx.Err())
		return nil
	}
}

// reply makes the call return rev and err.
func (c *pollCall) reply(rev dedup.Revision, err error) {
	c.answer <- answer{rev, err}
}

// harness runs a Poller on a fake clock, records its events and stops it
// when the test ends.
type harness struct {
	t      *testing.T
	ctx    context.Context
	clock  *deduptest.Clock
	trig   *recorder
	p      *poller.Poller
	events chan poller.Event
	stop   func()
}

func newHarness(t *testing.T, trig poller.Trigger, opts ...poller.Option) *harness {
	t.Helper()
	h := &harness{t: t, ctx: testContext(t), clock: new(deduptest.Clock), events: make(chan poller.Event, 256)}
	return h.with(trig, opts...)
}

// newManagerHarness returns a harness whose Poller drives a real Manager on
// the harness's clock, the Manager, and its Deployer.
func newManagerHarness(t *testing.T) (*harness, *dedup.Manager, *deduptest.Deployer) {
	t.Helper()
	h := &harness{t: t, ctx: testContext(t), clock: new(deduptest.Clock), events: make(chan poller.Event, 256)}
	d := new(deduptest.Deployer)
	m, err := dedup.New(d, dedup.WithClock(h.clock))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a deploy the test left running is canceled
		_ = m.Close(ctx)
	})
	return h.with(m), m, d
}

// with makes the harness's Poller, handing revisions to trig (a recorder
// if nil).
func (h *harness) with(trig poller.Trigger, opts ...poller.Option) *harness {
	if trig == nil {
		h.trig = new(recorder)
		trig = h.trig
	}
	opts = append([]poller.Option{poller.WithClock(h.clock), poller.WithObserver(func(e poller.Event) { h.events <- e })}, opts...)
	h.p = poller.New(trig, opts...)
	return h
}

// run starts Run in a goroutine; the test's end stops it and checks that it
// returned nil and left no timer.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.p.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("Run = %v; want nil", err)
				}
			case <-time.After(testTimeout):
				h.t.Errorf("Run did not return within %v of its context ending", testTimeout)
			}
			if n := h.clock.Timers(); n != 0 {
				h.t.Errorf("%d timers armed after Run returned; want 0", n)
			}
		})
	}
	h.t.Cleanup(h.stop)
}

func (h *harness) watch(key string, src poller.Source, opts ...poller.WatchOption) {
	h.t.Helper()
	require.NoErrorf(h.t, h.p.Watch(key, src, opts...), "Watch(%q)", key)
}

// event waits for the next event.
func (h *harness) event() poller.Event {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-h.ctx.Done():
		h.t.Fatalf("no event: %v", h.ctx.Err())
		return poller.Event{}
	}
}

// fireNext waits until n timers are armed, checks that the earliest is due
// after want, and fires it.
func (h *harness) fireNext(n int, want time.Duration) {
	h.t.Helper()
	require.NoError(h.t, h.clock.WaitTimers(h.ctx, n), "WaitTimers")
	got, ok := h.clock.Next()
	require.True(h.t, ok, "Next")
	require.Equal(h.t, want, got, "wait before the next poll")
	h.clock.Advance(got)
}

// advance waits until a timer is armed and fires the earliest one.
func (h *harness) advance() {
	h.t.Helper()
	require.NoError(h.t, h.clock.WaitTimers(h.ctx, 1), "WaitTimers")
	_, ok := h.clock.AdvanceNext()
	require.True(h.t, ok, "AdvanceNext")
}
