package statuspage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 30 * time.Second

// hostile is a valid key that a page which does not escape would run.
const hostile = "<script>alert(1)</script>"

// scenario drives a real Manager on a fake clock to a known state:
//
//	db/main  d1 live (took 30s)
//	hostile  a revision that is HTML too, live (took 1s)
//	web      v1 live (took 1m), v2 running for 3m (slow: over 2×1m), v3 pending
//	api      a1 failed after 10s with a two-line error, its retry due in 10m
//
// The fake clock reads 4m31s past deduptest.Epoch then.
//
// It returns the Manager and its clock; both are cleaned up when t ends.
func scenario(t *testing.T) (*dedup.Manager, *deduptest.Clock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m, err := dedup.New(d, dedup.WithClock(clock), dedup.WithSlowDeploy(2, time.Minute),
		dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		_ = m.Close(done) // cancels what still runs
	})
	step := func(key string, rev dedup.Revision, took time.Duration, err error) {
		t.Helper()
		tk, terr := m.Trigger(key, rev)
		if terr != nil {
			t.Fatal(terr)
		}
		c, nerr := d.Next(ctx)
		if nerr != nil {
			t.Fatalf("no deploy of %s %s: %v", key, rev, nerr)
		}
		clock.Advance(took)
		c.Finish(err)
		if err == nil {
			if _, werr := tk.Wait(ctx); werr != nil {
				t.Fatal(werr)
			}
		}
	}
	step("db/main", "d1", 30*time.Second, nil)
	step(hostile, `"><img src=x onerror=alert(2)>`, time.Second, nil)
	step("web", "v1", time.Minute, nil)
	if _, err := m.Trigger("web", "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Trigger("web", "v3"); err != nil {
		t.Fatal(err)
	}
	step("api", "a1", 10*time.Second, errors.New("exit status 1\nerror: <b>image not found</b>"))
	// web's slow timer and api's retry timer.
	if err := clock.WaitTimers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3*time.Minute - 10*time.Second)
	st, _ := m.Status("web")
	if !st.Slow || st.Pending != "v3" {
		t.Fatalf("scenario: Status(web) = %+v; want slow, v3 pending", st)
	}
	st, _ = m.Status("api")
	if st.Pending != "a1" || st.LastErr == nil {
		t.Fatalf("scenario: Status(api) = %+v; want a1 waiting for its retry", st)
	}
	return m, clock
}
