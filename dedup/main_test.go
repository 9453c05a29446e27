package dedup_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait of a test, so that a bug fails the test
// instead of hanging it.
const testTimeout = 10 * time.Second

var errBoom = errors.New("boom")

// testContext returns a context that ends after testTimeout or when the test
// ends.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newManager returns a Manager that is closed when the test ends. The
// cleanup closes it with an ended context, so a deploy the test left running
// is canceled rather than awaited.
func newManager(t *testing.T, d dedup.Deployer, opts ...dedup.Option) *dedup.Manager {
	t.Helper()
	m, err := dedup.New(d, opts...)
	require.NoError(t, err, "New")
	require.NotNil(t, m, "New")
	t.Cleanup(func() { closeNow(t, m) })
	return m
}

// closeNow closes m with a context that has ended, and fails the test if
// Close does not return.
func closeNow(t *testing.T, m *dedup.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Close(ctx)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Errorf("Close with an ended context did not return within %v", testTimeout)
	}
}

// trigger calls m.Trigger and fails the test on an error.
func trigger(t *testing.T, m *dedup.Manager, key string, rev dedup.Revision, opts ...dedup.TriggerOption) *dedup.Ticket {
	t.Helper()
	tk, err := m.Trigger(key, rev, opts...)
	require.NoErrorf(t, err, "Trigger(%q, %q)", key, rev)
	require.NotNilf(t, tk, "Trigger(%q, %q) ticket", key, rev)
	return tk
}

// await waits until tk is settled and returns its Result, checking the
// invariants every Result keeps.
func await(ctx context.Context, t *testing.T, tk *dedup.Ticket) dedup.Result {
	t.Helper()
	select {
	case <-tk.Done():
	case <-ctx.Done():
		t.Fatalf("ticket not settled: %v", ctx.Err())
	}
	res := tk.Result()
	checkResult(t, res)
	return res
}

// checkResult checks what holds for every settled Result.
func checkResult(t *testing.T, res dedup.Result) {
	t.Helper()
	failed := res.Outcome == dedup.Failed || res.Outcome == dedup.Aborted
	require.Equalf(t, failed, res.Err != nil, "Result %+v: Err must be non-nil exactly when Outcome is failed or aborted", res)
	require.NotEmptyf(t, res.Key, "Result %+v: Key", res)
	require.NotEmptyf(t, res.Requested, "Result %+v: Requested", res)
	require.NotEmptyf(t, res.Revision, "Result %+v: Revision", res)
	require.Falsef(t, res.Finished.Before(res.Started), "Result %+v: Finished before Started", res)
	if res.Outcome == dedup.Superseded {
		require.NotEqualf(t, res.Requested, res.Revision, "Result %+v: superseded by itself", res)
	}
	if res.Outcome == dedup.Deployed || res.Outcome == dedup.Unchanged {
		require.Equalf(t, res.Requested, res.Revision, "Result %+v", res)
	}
}

// requireResult checks the parts of a Result that a scenario decides.
func requireResult(t *testing.T, res dedup.Result, requested, rev dedup.Revision, o dedup.Outcome) {
	t.Helper()
	require.Equalf(t, requested, res.Requested, "Result %+v: Requested", res)
	require.Equalf(t, rev, res.Revision, "Result %+v: Revision", res)
	require.Equalf(t, o, res.Outcome, "Result %+v: Outcome", res)
}

func requireSettled(t *testing.T, tk *dedup.Ticket, what string) {
	t.Helper()
	select {
	case <-tk.Done():
	default:
		t.Fatalf("%s: ticket not settled; want settled", what)
	}
}

func requireNotSettled(t *testing.T, tk *dedup.Ticket, what string) {
	t.Helper()
	select {
	case <-tk.Done():
		t.Fatalf("%s: ticket settled with %+v; want not settled", what, tk.Result())
	default:
	}
	require.Equalf(t, dedup.Result{}, tk.Result(), "%s: Result before Done", what)
}

// nextCall returns the next deploy that d started.
func nextCall(ctx context.Context, t *testing.T, d *deduptest.Deployer) *deduptest.Call {
	t.Helper()
	c, err := d.Next(ctx)
	require.NoError(t, err, "Deployer.Next: no deploy started")
	return c
}

// requireCall checks that c deploys rev of key.
func requireCall(t *testing.T, c *deduptest.Call, key string, rev dedup.Revision) {
	t.Helper()
	require.Equalf(t, key, c.Key, "deploy call key (revision %q)", c.Revision)
	require.Equalf(t, rev, c.Revision, "deploy call revision of %q", c.Key)
}

func status(t *testing.T, m *dedup.Manager, key string) dedup.Status {
	t.Helper()
	s, ok := m.Status(key)
	require.Truef(t, ok, "Status(%q) ok = false; want true", key)
	return s
}

// requireIdle checks that key neither runs nor waits. A run starts under the
// Manager's lock, so this is exact once the tickets of the last run settled.
func requireIdle(t *testing.T, m *dedup.Manager, key string) {
	t.Helper()
	s := status(t, m, key)
	require.Emptyf(t, s.Running, "Status(%q).Running", key)
	require.Emptyf(t, s.Pending, "Status(%q).Pending", key)
}

// within runs f and fails the test if f does not return before ctx ends.
func within(ctx context.Context, t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%s blocked: %v", what, ctx.Err())
	}
}

// recorder records the Events of a Manager.
type recorder struct {
	mu      sync.Mutex
	evs     []dedup.Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) observe(e dedup.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) events() []dedup.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dedup.Event(nil), r.evs...)
}

// waitFor waits until an event matching ok was observed, and returns it.
func (r *recorder) waitFor(ctx context.Context, t *testing.T, what string, ok func(dedup.Event) bool) dedup.Event {
	t.Helper()
	for {
		r.mu.Lock()
		for _, e := range r.evs {
			if ok(e) {
				r.mu.Unlock()
				return e
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no %s event: %v; events: %v", what, ctx.Err(), r.events())
		}
	}
}

// ofKind reports whether an event has kind k and revision rev.
func ofKind(k dedup.EventKind, rev dedup.Revision) func(dedup.Event) bool {
	return func(e dedup.Event) bool { return e.Kind == k && e.Revision == rev }
}

// instant is a Deployer that succeeds at once, except for revisions in fail.
func instant(fail ...dedup.Revision) dedup.DeployFunc {
	return func(_ context.Context, _ string, rev dedup.Revision) error {
		for _, f := range fail {
			if rev == f {
				return errBoom
			}
		}
		return nil
	}
}

// at is a time on the fake clock, relative to deduptest.Epoch.
func at(d time.Duration) time.Time { return deduptest.Epoch.Add(d) }
