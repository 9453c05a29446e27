package pgdedup_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
)

func TestNewInvalid(t *testing.T) {
	s := server(t)
	pool := s.Pool(t)
	ctx := context.Background()
	d := dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil })
	for _, tc := range []struct {
		name string
		pool bool
		d    dedup.Deployer
		opt  pgdedup.Option
	}{
		{"nil pool", false, d, nil},
		{"nil deployer", true, nil, nil},
		{"bad schema", true, d, pgdedup.WithSchema("Robert'); DROP TABLE students;--")},
		{"short lease", true, d, pgdedup.WithLease(time.Millisecond)},
		{"zero poll", true, d, pgdedup.WithPollInterval(0)},
		{"negative debounce", true, d, pgdedup.WithDebounce(-time.Second, 0)},
		{"bad retry", true, d, pgdedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Multiplier: 0.5})},
		{"nil observer", true, d, pgdedup.WithObserver(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool
			if !tc.pool {
				p = nil
			}
			var opts []pgdedup.Option
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			m, err := pgdedup.New(ctx, p, tc.d, opts...)
			if !errors.Is(err, dedup.ErrInvalid) {
				t.Errorf("New = %v, %v; want an error wrapping ErrInvalid", m, err)
			}
		})
	}
	m := newManager(t, s.Schema(t), d, pgdedup.WithKeyPolicy(func(key string) dedup.Policy {
		return dedup.Policy{Timeout: -time.Second}
	}))
	if err := m.Notify("k", "v1"); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("Notify with an invalid key policy = %v; want ErrInvalid", err)
	}
	for _, key := range []string{"", "a\nb", string(make([]byte, dedup.MaxLen+1))} {
		if _, err := m.Trigger(key, "v1"); !errors.Is(err, dedup.ErrInvalid) {
			t.Errorf("Trigger(%q) = %v; want ErrInvalid", key, err)
		}
	}
}

// TestStartAtOnce: replicas that start at the same moment on a fresh
// schema all create it without error, and share it.
func TestStartAtOnce(t *testing.T) {
	s := server(t)
	schema := s.Schema(t)
	g := newGated()
	var wg sync.WaitGroup
	ms := make([]*pgdedup.Manager, 6)
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i] = newManager(t, schema, g)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	tk, _ := ms[0].Trigger("k", "v1")
	g.next(t, 5*time.Second).finish <- nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tk.Wait(ctx)
	st, ok, err := ms[5].Status(ctx, "k")
	if err != nil || !ok || st.Live != "v1" || st.Deployed != 1 {
		t.Fatalf("Status on another replica = %+v, %v, %v; want v1 deployed once", st, ok, err)
	}
}

// TestCloseHandsOver: a replica closing with an expired context cancels its
// attempt and hands the key back at once: another replica runs it again
// without waiting for the lease, and the closing replica's ticket is
// aborted while the other replica's ticket gets the result.
func TestCloseHandsOver(t *testing.T) {
	schema := server(t).Schema(t)
	ga, gb := newGated(), newGated()
	ctx := context.Background()
	a, err := pgdedup.New(ctx, server(t).Pool(t), ga, pgdedup.WithSchema(schema), pgdedup.WithLease(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b := newManager(t, schema, gb, pgdedup.WithLease(time.Hour))
	ta, _ := a.Trigger("k", "v1")
	ga.next(t, 5*time.Second)
	tb, _ := b.Trigger("k", "v1")
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Close(expired); !errors.Is(err, context.Canceled) {
		t.Errorf("Close(expired) = %v; want context.Canceled", err)
	}
	if r := ta.Result(); r.Outcome != dedup.Aborted || !errors.Is(r.Err, dedup.ErrClosed) {
		t.Errorf("closing replica's ticket: %+v; want aborted with ErrClosed", r)
	}
	c := gb.next(t, 5*time.Second) // well within the hour-long lease
	if c.rev != "v1" || c.fence != 2 {
		t.Fatalf("b runs %q with fence %d; want v1 with fence 2", c.rev, c.fence)
	}
	c.finish <- nil
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if r, err := tb.Wait(wctx); err != nil || r.Outcome != dedup.Deployed {
		t.Fatalf("b's ticket: %+v, %v; want deployed", r, err)
	}
	if _, err := a.Trigger("k", "v2"); !errors.Is(err, dedup.ErrClosed) {
		t.Errorf("Trigger after Close = %v; want ErrClosed", err)
	}
}

// TestCancelWithoutListen: with notifications off, cancel-in-progress
// still reaches the attempt on another replica, at its next renewal.
func TestCancelWithoutListen(t *testing.T) {
	schema := server(t).Schema(t)
	ga, gb := newGated(), newGated()
	a := newManager(t, schema, ga, pgdedup.WithCancelInProgress(), pgdedup.WithoutListen(), pgdedup.WithLease(600*time.Millisecond))
	b := newManager(t, schema, gb, pgdedup.WithCancelInProgress(), pgdedup.WithoutListen(), pgdedup.WithLease(600*time.Millisecond))
	a.Notify("k", "v1")
	c1 := ga.next(t, 5*time.Second)
	canceled := time.Now()
	if err := b.Notify("k", "v2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c1.ret:
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt on a was not canceled")
	}
	if d := time.Since(canceled); d > 600*time.Millisecond {
		t.Errorf("canceled after %v; want within a third of the lease plus a query", d)
	}
	var next *call
	select {
	case next = <-ga.started:
	case next = <-gb.started:
	case <-time.After(5 * time.Second):
		t.Fatal("v2 did not start")
	}
	if next.rev != "v2" {
		t.Fatalf("next deploy %q; want v2", next.rev)
	}
	next.finish <- nil
}

// TestDebounceAcrossReplicas: triggers on two replicas within the quiet
// time make one deploy, of the newest revision.
func TestDebounceAcrossReplicas(t *testing.T) {
	schema := server(t).Schema(t)
	g := newGated()
	a := newManager(t, schema, g, pgdedup.WithDebounce(300*time.Millisecond, 0))
	b := newManager(t, schema, g, pgdedup.WithDebounce(300*time.Millisecond, 0))
	t1, _ := a.Trigger("k", "v1")
	t2, _ := b.Trigger("k", "v2")
	t3, _ := a.Trigger("k", "v3")
	if t1.Action() != dedup.ActionQueued || t3.Replaced() != "v2" {
		t.Fatalf("actions %v, %v, %v replacing %q; want queued, debounced", t1.Action(), t2.Action(), t3.Action(), t3.Replaced())
	}
	c := g.next(t, 5*time.Second)
	if c.rev != "v3" {
		t.Fatalf("deployed %q; want only v3", c.rev)
	}
	c.finish <- nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tk := range []*pgdedup.Ticket{t1, t2, t3} {
		if r, err := tk.Wait(ctx); err != nil || r.Revision != "v3" {
			t.Errorf("ticket %q: %+v, %v; want settled by v3", r.Requested, r, err)
		}
	}
	select {
	case c := <-g.started:
		t.Errorf("a second deploy %q started", c.rev)
	default:
	}
}

// TestRetryElsewhere: a failed attempt is retried after its backoff by
// whichever replica claims it, and the ticket counts the attempts.
func TestRetryElsewhere(t *testing.T) {
	schema := server(t).Schema(t)
	g := newGated()
	retry := pgdedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: 50 * time.Millisecond})
	a := newManager(t, schema, g, retry)
	newManager(t, schema, g, retry)
	tk, _ := a.Trigger("k", "v1")
	g.next(t, 5*time.Second).finish <- errors.New("flaky")
	g.next(t, 5*time.Second).finish <- errors.New("flaky")
	c := g.next(t, 5*time.Second)
	st, _, _ := a.Status(context.Background(), "k")
	if st.Running != "v1" || st.Attempt != 3 || st.Failures != 2 {
		t.Errorf("Status = running %q attempt %d failures %d; want v1, 3, 2", st.Running, st.Attempt, st.Failures)
	}
	if c.fence != 3 {
		t.Errorf("third attempt's fence %d; want 3", c.fence)
	}
	c.finish <- nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := tk.Wait(ctx); err != nil || r.Outcome != dedup.Deployed || r.Attempts != 3 {
		t.Fatalf("ticket: %+v, %v; want deployed after 3 attempts", r, err)
	}
}
