package poller_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// TestFailedHeadDeployedAgain: a head whose deploy failed is deployed again
// at the next poll, though the source reports the same revision (issue 8,
// item 8: the poll path is level-triggered).
func TestFailedHeadDeployedAgain(t *testing.T) {
	h, m, d := newManagerHarness(t)
	h.watch("web", constant("r1"), poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	h.run()

	h.fireNext(1, 0)
	call, err := d.Next(h.ctx)
	require.NoError(t, err)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	call.Finish(errBoom)
	<-call.Returned()

	h.fireNext(1, time.Minute)
	require.Equal(t, poller.EventPolled, h.event().Kind, "same revision: no change")
	call, err = d.Next(h.ctx)
	require.NoError(t, err, "the failed head was not deployed again at the next poll")
	require.Equal(t, dedup.Revision("r1"), call.Revision)
	call.Finish(nil)
	<-call.Returned()

	// Live now: later polls deploy nothing.
	h.fireNext(1, time.Minute)
	require.Equal(t, poller.EventPolled, h.event().Kind)
	require.Equal(t, []dedup.Revision{"r1", "r1"}, d.Revisions("web"))
	st, _ := m.Status("web")
	require.Equal(t, dedup.Revision("r1"), st.Live)
}

// TestGoexit: a Source, a Trigger or an observer that calls runtime.Goexit
// (as t.FailNow does) fails the poll with ErrGoexit; the key goes on being
// polled, and Unwatch and Run return.
func TestGoexit(t *testing.T) {
	for _, where := range []string{"source", "trigger", "observer"} {
		t.Run(where, func(t *testing.T) {
			var polls atomic.Int32
			src := poller.SourceFunc(func(context.Context) (dedup.Revision, error) {
				if polls.Add(1) == 1 && where == "source" {
					runtime.Goexit()
				}
				return "r1", nil
			})
			var notified atomic.Int32
			trig := triggerFunc(func(string, dedup.Revision) error {
				if notified.Add(1) == 1 && where == "trigger" {
					runtime.Goexit()
				}
				return nil
			})
			events := make(chan poller.Event, 16)
			var observed atomic.Int32
			h := newHarness(t, trig, poller.WithObserver(func(e poller.Event) {
				if observed.Add(1) == 1 && where == "observer" {
					runtime.Goexit()
				}
				events <- e
			}))
			h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
			h.run()
			h.fireNext(1, 0)
			next := func() poller.Event {
				select {
				case e := <-events:
					return e
				case <-h.ctx.Done():
					t.Fatal("no event")
					return poller.Event{}
				}
			}
			switch where {
			case "source":
				e := next()
				require.Equal(t, poller.EventError, e.Kind)
				require.ErrorIs(t, e.Err, poller.ErrGoexit)
				st, _ := h.p.Status("web")
				require.ErrorIs(t, st.Err, poller.ErrGoexit, "Status.Err")
			case "trigger":
				e := next()
				require.Equal(t, poller.EventTriggerFailed, e.Kind)
				require.ErrorIs(t, e.Err, poller.ErrGoexit)
			}
			// The key is polled again, and this time all goes well.
			h.fireNext(1, time.Minute)
			e := next()
			require.Contains(t, []poller.EventKind{poller.EventChanged, poller.EventPolled}, e.Kind)
			require.NoError(t, e.Err)
			h.p.Unwatch("web")
			h.stop()
		})
	}
}

// TestGoexitUnwatchDuringTrigger: Unwatch waits for a Trigger that calls
// Goexit, and returns.
func TestGoexitUnwatchDuringTrigger(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	trig := triggerFunc(func(string, dedup.Revision) error {
		close(entered)
		<-release
		runtime.Goexit()
		return nil
	})
	h := newHarness(t, trig)
	h.watch("web", constant("r1"), poller.Jitter(0))
	h.run()
	h.advance()
	<-entered
	unwatched := make(chan struct{})
	go func() {
		h.p.Unwatch("web")
		close(unwatched)
	}()
	close(release)
	select {
	case <-unwatched:
	case <-h.ctx.Done():
		t.Fatal("Unwatch did not return after the Trigger called Goexit")
	}
}

// Whoever sees a poll's event finds the key's next poll scheduled already:
// a test (or an operator's observer) that advances time on an event does
// not outrun the Poller.
func TestEventAfterTheNextPollIsScheduled(t *testing.T) {
	var h *harness
	unscheduled := make(chan poller.Status, 16)
	h = newHarness(t, nil, poller.WithObserver(func(e poller.Event) {
		if st, ok := h.p.Status(e.Key); !ok || st.Polling || st.Next.IsZero() {
			unscheduled <- st
		}
		h.events <- e
	}))
	for _, key := range []string{"a", "b"} {
		h.watch(key, constant("r1"), poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	}
	h.run()
	for round := range 3 {
		h.fireNext(1, time.Duration(min(round, 1))*time.Minute)
		for range 2 {
			require.NoError(t, h.event().Err)
		}
	}
	select {
	case st := <-unscheduled:
		t.Fatalf("an observer saw the event of %q before its next poll was scheduled: %+v", st.Key, st)
	default:
	}
}

// An observer that panics is recovered and logged; the key goes on being
// polled.
func TestObserverPanicIsRecovered(t *testing.T) {
	var calls atomic.Int32
	seen := make(chan struct{}, 16)
	var log syncBuffer
	h := newHarness(t, nil, poller.WithObserver(func(poller.Event) {
		seen <- struct{}{}
		if calls.Add(1) == 1 {
			panic("observer exploded")
		}
	}), poller.WithLogger(slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelError}))))
	h.watch("web", constant("r1"), poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	h.run()
	for i, want := range []time.Duration{0, time.Minute, time.Minute} {
		h.fireNext(1, want) // the key is scheduled again, also after the panic
		select {
		case <-seen:
		case <-h.ctx.Done():
			t.Fatalf("poll %d: no event (%d observer calls)", i+1, calls.Load())
		}
	}
	h.stop() // Run returns once every poll, its panic logged, has ended
	require.Contains(t, log.String(), "observer exploded")
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

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Events of a key come one at a time: while the observer holds one, the
// key's next poll waits, however far the clock moves, and follows when the
// observer returns. In a synctest bubble, so that "nothing else happened"
// can be checked.
func TestEventsOfAKeyOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inside, overlaps atomic.Int32
		entered, release := make(chan struct{}), make(chan struct{})
		seen := make(chan poller.Event, 64)
		var calls atomic.Int32
		h := newHarness(t, nil, poller.WithObserver(func(e poller.Event) {
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inside.Add(-1)
			if calls.Add(1) == 1 {
				close(entered)
				<-release
			}
			seen <- e
		}))
		h.watch("web", constant("r1"), poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
		h.run()
		h.fireNext(1, 0)
		<-entered
		h.fireNext(1, time.Minute) // the next poll falls due while the observer holds the first event
		h.clock.Advance(5 * time.Minute)
		synctest.Wait()
		require.Equal(t, int32(1), calls.Load(), "observer calls while it holds the first event")
		require.Zero(t, h.clock.Timers(), "timers while the key waits for its observer")
		close(release)
		synctest.Wait()
		require.Len(t, seen, 2, "events: the held one, then one poll for every interval that passed")
		require.Zero(t, overlaps.Load(), "observer calls for one key at once")
		require.Equal(t, 1, h.clock.Timers(), "the key scheduled again")
	})
}
