package pgdedup_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
)

// gated is a Deployer whose calls block until the test releases them, and
// which records every call with its fence.
type gated struct {
	mu      sync.Mutex
	calls   []*call
	started chan *call
}

type call struct {
	key     string
	rev     dedup.Revision
	fence   int64
	ctx     context.Context
	finish  chan error
	ret     chan struct{}
	replica int
}

func newGated() *gated { return &gated{started: make(chan *call, 1000)} }

func (g *gated) Deploy(ctx context.Context, key string, rev dedup.Revision) error {
	f, _ := pgdedup.Fence(ctx)
	c := &call{key: key, rev: rev, fence: f, ctx: ctx, finish: make(chan error, 1), ret: make(chan struct{})}
	defer close(c.ret)
	g.mu.Lock()
	g.calls = append(g.calls, c)
	g.mu.Unlock()
	g.started <- c
	select {
	case err := <-c.finish:
		if errors.Is(err, errPanic) {
			panic(err)
		}
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

var errPanic = errors.New("panic please")

// next returns the next call started, or fails after d.
func (g *gated) next(t testing.TB, d time.Duration) *call {
	t.Helper()
	select {
	case c := <-g.started:
		return c
	case <-time.After(d):
		t.Fatalf("no deploy started within %v", d)
		return nil
	}
}

func newManager(t testing.TB, schema string, d dedup.Deployer, opts ...pgdedup.Option) *pgdedup.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := server(t)
	m, err := pgdedup.New(ctx, s.Pool(t), d, append([]pgdedup.Option{pgdedup.WithSchema(schema), pgdedup.WithLease(2 * time.Second),
		pgdedup.WithPollInterval(200 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func TestOneReplica(t *testing.T) {
	schema := server(t).Schema(t)
	g := newGated()
	m := newManager(t, schema, g)

	t1, err := m.Trigger("app", "v1")
	if err != nil || t1.Action() != dedup.ActionStarted {
		t.Fatalf("Trigger(v1) = %v, %v; want started", t1, err)
	}
	c1 := g.next(t, 5*time.Second)
	if c1.rev != "v1" || c1.fence != 1 {
		t.Fatalf("deploy %q fence %d; want v1 fence 1", c1.rev, c1.fence)
	}
	t2, _ := m.Trigger("app", "v2")
	t3, _ := m.Trigger("app", "v3")
	t4, _ := m.Trigger("app", "v1")
	if t2.Action() != dedup.ActionQueued || t3.Action() != dedup.ActionQueued || t3.Replaced() != "v2" || t4.Replaced() != "v3" {
		t.Fatalf("actions %v, %v (replaced %q), %v (replaced %q)", t2.Action(), t3.Action(), t3.Replaced(), t4.Action(), t4.Replaced())
	}
	st, ok, err := m.Status(context.Background(), "app")
	if !ok || err != nil || st.Running != "v1" || st.Pending != "v1" || st.Lease.Owner != m.ID() || st.Lease.Fence != 1 {
		t.Fatalf("Status = %+v, %v, %v; want v1 running, v1 pending, owned here with fence 1", st, ok, err)
	}
	// The server runs on this machine, so its clock is ours: a running
	// attempt's lease ends in the future, within the lease of 2s.
	if now := time.Now(); !st.Lease.Until.After(now) || st.Lease.Until.After(now.Add(3*time.Second)) {
		t.Errorf("Status.Lease.Until = %v; want within 2s after %v", st.Lease.Until, now)
	}
	if sts, err := m.Statuses(context.Background()); err != nil || len(sts) != 1 || !sts[0].Lease.Until.Equal(st.Lease.Until) {
		t.Errorf("Statuses() = %+v, %v; want one key with lease %+v", sts, err, st.Lease)
	}
	if vs := m.View().Statuses(); len(vs) != 1 || vs[0].Key != "app" || vs[0].Running != "v1" {
		t.Errorf("View().Statuses() = %+v; want app running v1", vs)
	}
	if _, ok := m.View().Status("nope"); ok {
		t.Error("View().Status(never triggered) reported ok")
	}
	c1.finish <- nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tk := range []*pgdedup.Ticket{t1, t2, t3, t4} {
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		want := dedup.Deployed
		if r.Requested != "v1" {
			want = dedup.Superseded
		}
		if r.Revision != "v1" || r.Outcome != want {
			t.Errorf("ticket %q: %v %q; want %v v1", r.Requested, r.Outcome, r.Revision, want)
		}
	}
	r, err := m.Deploy(ctx, "app", "v1")
	if err != nil || r.Outcome != dedup.Unchanged {
		t.Fatalf("Deploy(v1 again) = %+v, %v; want unchanged", r, err)
	}
	if st, _, err := m.Status(ctx, "app"); err != nil || !st.Lease.Until.IsZero() || st.Lease.Owner != "" {
		t.Errorf("Status after the run = %+v, %v; want no lease", st.Lease, err)
	}
	// A failure, and a panic.
	t5, _ := m.Trigger("app", "v5")
	g.next(t, 5*time.Second).finish <- errors.New("boom")
	if r, err := t5.Wait(ctx); r.Outcome != dedup.Failed || err == nil || err.Error() != "boom" {
		t.Fatalf("failed deploy: %+v, %v", r, err)
	}
	t6, _ := m.Trigger("app", "v6")
	c6 := g.next(t, 5*time.Second)
	if c6.fence != 3 {
		t.Errorf("third attempt's fence %d; want 3", c6.fence)
	}
	c6.finish <- errPanic
	var pe *dedup.PanicError
	if _, err := t6.Wait(ctx); !errors.As(err, &pe) {
		t.Fatalf("panicking deploy: %v; want a *dedup.PanicError", err)
	}
	if err := m.Notify("app", ""); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("Notify(empty revision) = %v; want ErrInvalid", err)
	}
}

// Submit says what a trigger did, as a Ticket would, without one.
func TestSubmit(t *testing.T) {
	schema := server(t).Schema(t)
	g := newGated()
	m := newManager(t, schema, g)
	var running *call
	for _, step := range []struct {
		rev      dedup.Revision
		action   dedup.Action
		replaced dedup.Revision
	}{
		{"v1", dedup.ActionStarted, ""},
		{"v2", dedup.ActionQueued, ""},
		{"v3", dedup.ActionQueued, "v2"},
		{"v3", dedup.ActionJoinedPending, ""},
	} {
		action, replaced, err := m.Submit("app", step.rev)
		if err != nil || action != step.action || replaced != step.replaced {
			t.Fatalf("Submit(%q) = %v, %q, %v; want %v, %q", step.rev, action, replaced, err, step.action, step.replaced)
		}
		if step.rev == "v1" {
			g.next(t, 5*time.Second).finish <- nil
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if r, err := m.Deploy(ctx, "app", "v1"); err != nil || r.Revision != "v1" { // waits for v1's run
				t.Fatalf("Deploy(v1) = %+v, %v", r, err)
			}
			action, _, err := m.Submit("app", "v1")
			if err != nil || action != dedup.ActionUnchanged {
				t.Fatalf("Submit(live v1) = %v, %v; want unchanged", action, err)
			}
			// From here a deploy runs, so later revisions queue.
			if _, _, err := m.Submit("app", "v0"); err != nil {
				t.Fatal(err)
			}
			running = g.next(t, 5*time.Second)
		}
	}
	running.finish <- nil
	if c := g.next(t, 5*time.Second); c.rev != "v3" {
		t.Fatalf("the follow-up deployed %q; want v3, the newest", c.rev)
	} else {
		c.finish <- nil
	}
}

func TestCrossReplica(t *testing.T) {
	schema := server(t).Schema(t)
	ga, gb := newGated(), newGated()
	a := newManager(t, schema, ga, pgdedup.WithCancelInProgress())
	b := newManager(t, schema, gb, pgdedup.WithCancelInProgress())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ta, _ := a.Trigger("k", "v1")
	ca := ga.next(t, 5*time.Second)
	tb, err := b.Trigger("k", "v1")
	if err != nil || tb.Action() != dedup.ActionJoinedRunning {
		t.Fatalf("b.Trigger(v1) = %v, %v; want joined the run on a", tb.Action(), err)
	}
	// v2 on b cancels a's attempt; v2 then runs on a (the finishing
	// replica claims it), and both tickets settle.
	tb2, _ := b.Trigger("k", "v2")
	select {
	case <-ca.ret:
	case <-time.After(5 * time.Second):
		t.Fatal("a's attempt not canceled within 5s")
	}
	c2 := ga.next(t, 5*time.Second)
	if c2.rev != "v2" || c2.fence != 2 {
		t.Fatalf("follow-up %q fence %d; want v2 fence 2", c2.rev, c2.fence)
	}
	c2.finish <- nil
	for _, tk := range []*pgdedup.Ticket{ta, tb, tb2} {
		r, err := tk.Wait(ctx)
		if err != nil || r.Revision != "v2" {
			t.Errorf("ticket %q: %+v, %v; want settled by v2", r.Requested, r, err)
		}
	}
}

// TestKeyPolicyFailsAfterClaim: the attempt runs under the policy its
// claim was made with, so a key policy function that fails when asked
// again never makes it run without its Timeout.
func TestKeyPolicyFailsAfterClaim(t *testing.T) {
	schema := server(t).Schema(t)
	g := newGated()
	var calls atomic.Int32
	m := newManager(t, schema, g, pgdedup.WithLease(500*time.Millisecond), pgdedup.WithKeyPolicy(func(string) dedup.Policy {
		if calls.Add(1) == 1 {
			return dedup.Policy{Timeout: 100 * time.Millisecond}
		}
		return dedup.Policy{Timeout: -1} // invalid
	}))
	if err := m.Notify("k", "v1"); err != nil {
		t.Fatal(err)
	}
	c := g.next(t, 5*time.Second)
	if _, ok := c.ctx.Deadline(); !ok {
		t.Fatal("the attempt's context has no deadline; want the 100ms Timeout of the claim's policy")
	}
	select {
	case <-c.ret:
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt did not end at its Timeout")
	}
	if !errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("attempt context: %v; want DeadlineExceeded", c.ctx.Err())
	}
}
