package deduptest_test

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

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClockFiresInOrderWithNowAtDeadline(t *testing.T) {
	c := new(deduptest.Clock)
	if got := c.Now(); !got.Equal(deduptest.Epoch) {
		t.Fatalf("zero Clock Now() = %v; want Epoch %v", got, deduptest.Epoch)
	}
	var fired []string
	at := func(name string) func() {
		return func() { fired = append(fired, name+"@"+c.Since(deduptest.Epoch).String()) }
	}
	c.AfterFunc(3*time.Second, at("c"))
	c.AfterFunc(time.Second, at("a"))
	c.AfterFunc(3*time.Second, at("d")) // same instant as c: armed later, fires later
	stopped := c.AfterFunc(2*time.Second, at("stopped"))
	c.AfterFunc(0, at("zero"))
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop() = false on an armed timer, or true twice")
	}
	if n := c.Timers(); n != 4 {
		t.Fatalf("Timers() = %d; want 4", n)
	}
	c.Advance(2 * time.Second)
	c.AfterFunc(time.Second, at("b")) // due at 3s, armed after c and d
	c.Advance(5 * time.Second)
	want := []string{"zero@0s", "a@1s", "c@3s", "d@3s", "b@3s"}
	if len(fired) != len(want) {
		t.Fatalf("fired %v; want %v", fired, want)
	}
	for i := range want {
		if fired[i] != want[i] {
			t.Fatalf("fired %v; want %v", fired, want)
		}
	}
	if got := c.Since(deduptest.Epoch); got != 7*time.Second {
		t.Errorf("after Advance(2s), Advance(5s): %v elapsed; want 7s", got)
	}
}

func TestClockTimerArmedByCallbackFiresInSameAdvance(t *testing.T) {
	c := deduptest.NewClock(time.Unix(1000, 0))
	var n int
	var tick func()
	tick = func() {
		n++
		c.AfterFunc(time.Second, tick)
	}
	c.AfterFunc(time.Second, tick)
	c.Advance(5 * time.Second)
	if n != 5 {
		t.Errorf("a 1s ticker fired %d times in 5s; want 5", n)
	}
}

func TestClockAdvanceNextAndSet(t *testing.T) {
	c := new(deduptest.Clock)
	if _, ok := c.AdvanceNext(); ok {
		t.Fatal("AdvanceNext() = true with no timer")
	}
	fired := 0
	c.AfterFunc(90*time.Second, func() { fired++ })
	if d, ok := c.Next(); !ok || d != 90*time.Second {
		t.Fatalf("Next() = %v, %v; want 1m30s, true", d, ok)
	}
	if d, ok := c.AdvanceNext(); !ok || d != 90*time.Second || fired != 1 {
		t.Fatalf("AdvanceNext() = %v, %v (fired %d); want 1m30s, true, 1", d, ok, fired)
	}
	c.AfterFunc(time.Hour, func() { fired++ })
	c.Set(deduptest.Epoch.Add(2 * time.Hour))
	if fired != 2 || c.Timers() != 0 {
		t.Errorf("after Set past the deadline: fired %d, %d timers; want 2, 0", fired, c.Timers())
	}
}

func TestClockWaitTimers(t *testing.T) {
	ctx := testContext(t)
	c := new(deduptest.Clock)
	done := make(chan error)
	go func() { done <- c.WaitTimers(ctx, 2) }()
	c.AfterFunc(time.Second, func() {})
	c.AfterFunc(time.Second, func() {})
	if err := <-done; err != nil {
		t.Fatalf("WaitTimers(2) = %v", err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.WaitTimers(short, 3); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitTimers(canceled ctx, 3) = %v; want context.Canceled", err)
	}
}

func TestClockAdvanceNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Advance(-1) did not panic")
		}
	}()
	new(deduptest.Clock).Advance(-1)
}

func TestDeployerCallsBlockUntilFinished(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	errs := make(chan error, 2)
	go func() { errs <- d.Deploy(ctx, "web", "v1") }()
	go func() { errs <- d.Deploy(ctx, "api", "v7") }()
	first, err := d.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := d.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Running() != 2 || d.MaxRunning() != 2 || d.MaxRunningPerKey() != 1 {
		t.Fatalf("Running, MaxRunning, MaxRunningPerKey = %d, %d, %d; want 2, 2, 1", d.Running(), d.MaxRunning(), d.MaxRunningPerKey())
	}
	boom := errors.New("boom")
	first.Finish(boom)
	first.Finish(nil) // only the first Finish counts
	second.Finish(nil)
	got := []error{<-errs, <-errs}
	if !(errors.Is(got[0], boom) || errors.Is(got[1], boom)) || (got[0] != nil && got[1] != nil) {
		t.Errorf("Deploy returned %v; want boom and nil", got)
	}
	if err := first.Err(); !errors.Is(err, boom) {
		t.Errorf("first.Err() = %v; want boom", err)
	}
	if revs := d.Revisions("web"); len(revs) != 1 || revs[0] != "v1" {
		t.Errorf("Revisions(web) = %v; want [v1]", revs)
	}
	if n := len(d.Calls()); n != 2 {
		t.Errorf("len(Calls()) = %d; want 2", n)
	}
}

func TestDeployerHonorsCancel(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		ctx := testContext(t)
		d := &deduptest.Deployer{IgnoreCancel: ignore}
		callCtx, cancel := context.WithCancel(ctx)
		errs := make(chan error, 1)
		go func() { errs <- d.Deploy(callCtx, "web", "v1") }()
		c, err := d.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		<-c.Context().Done()
		if ignore {
			select {
			case <-c.Returned():
				t.Fatal("IgnoreCancel: Deploy returned on cancel")
			default:
			}
			c.Finish(nil)
		}
		err = <-errs
		if want := map[bool]error{false: context.Canceled, true: nil}[ignore]; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("IgnoreCancel=%v: Deploy = %v; want %v", ignore, err, want)
		}
	}
}

func TestDeployerNextHonorsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := new(deduptest.Deployer).Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next(canceled) = %v; want context.Canceled", err)
	}
}

var _ dedup.Deployer = (*deduptest.Deployer)(nil)
