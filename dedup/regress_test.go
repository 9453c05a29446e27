package dedup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// A key waiting for a slot whose pending revision went back to the live one
// leaves the queue: a later burst of that key serves its own debounce.
func TestQueuedKeyBackToLiveLeavesTheQueue(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithClock(clock), dedup.WithMaxConcurrent(1), dedup.WithDebounce(10*time.Second, time.Minute))
	trigger(t, m, "b", "v0")
	clock.Advance(10 * time.Second)
	c := nextCall(ctx, t, d)
	c.Finish(nil)
	<-c.Returned()
	trigger(t, m, "a", "v1")
	clock.Advance(10 * time.Second)
	ca := nextCall(ctx, t, d)
	trigger(t, m, "b", "v1")
	clock.Advance(10 * time.Second)
	require.True(t, status(t, m, "b").Queued, "Status(b).Queued while a runs")
	requireResult(t, await(ctx, t, trigger(t, m, "b", "v0")), "v0", "v0", dedup.Unchanged)
	require.False(t, status(t, m, "b").Queued, "Status(b).Queued once back to live")

	trigger(t, m, "b", "v2") // a new burst
	burst := clock.Now()
	ca.Finish(nil)
	<-ca.Returned()
	for clock.Timers() > 0 && status(t, m, "b").Running == "" {
		clock.AdvanceNext()
	}
	cb := nextCall(ctx, t, d)
	requireCall(t, cb, "b", "v2")
	if got := clock.Since(burst); got < 10*time.Second {
		t.Errorf("b v2 started %v after its trigger; want its 10s debounce", got)
	}
	cb.Finish(nil)
}

// panicStore panics in Load or Save.
type panicStore struct{ inLoad bool }

func (s panicStore) Load(context.Context, string) (dedup.Revision, bool, error) {
	if s.inLoad {
		panic("load exploded")
	}
	return "", false, nil
}

func (s panicStore) Save(context.Context, string, dedup.Revision) error {
	panic("save exploded")
}

// A panicking Store is reported like a failing one; the host goes on.
func TestStorePanicIsAnError(t *testing.T) {
	for _, inLoad := range []bool{true, false} {
		ctx := testContext(t)
		m := newManager(t, instant(), dedup.WithStore(panicStore{inLoad: inLoad}))
		res := await(ctx, t, trigger(t, m, "web", "v1"))
		requireResult(t, res, "v1", "v1", dedup.Deployed)
		var pe *dedup.PanicError
		if err := status(t, m, "web").StoreErr; !errors.As(err, &pe) {
			t.Errorf("inLoad=%v: Status.StoreErr = %v; want a *PanicError", inLoad, err)
		}
	}
}
