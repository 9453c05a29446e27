package poller_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

func constant(rev dedup.Revision) poller.Source {
	return poller.SourceFunc(func(context.Context) (dedup.Revision, error) { return rev, nil })
}

func TestNewNilTriggerPanics(t *testing.T) {
	defer func() {
		v := recover()
		require.NotNil(t, v, "New(nil) did not panic")
		require.True(t, strings.HasPrefix(fmt.Sprint(v), "poller: "), "panic %q lacks the package prefix", v)
	}()
	poller.New(nil)
}

func TestNewBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  poller.Option
	}{
		{"nil option", nil},
		{"nil clock", poller.WithClock(nil)},
		{"nil observer", poller.WithObserver(nil)},
		{"nil logger", poller.WithLogger(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := poller.New(new(recorder), tc.opt)
			err := p.Watch("web", constant("r1"))
			require.ErrorIsf(t, err, dedup.ErrInvalid, "Watch after New(%s) = %v", tc.name, err)
			err = p.Run(testContext(t))
			require.ErrorIsf(t, err, dedup.ErrInvalid, "Run after New(%s) = %v", tc.name, err)
		})
	}
}

func TestWatchInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		src  poller.Source
		opts []poller.WatchOption
	}{
		{"empty key", "", constant("r"), nil},
		{"control character in key", "we\nb", constant("r"), nil},
		{"nil source", "web", nil, nil},
		{"nil SourceFunc", "web", poller.SourceFunc(nil), nil},
		{"nil option", "web", constant("r"), []poller.WatchOption{nil}},
		{"zero Every", "web", constant("r"), []poller.WatchOption{poller.Every(0)}},
		{"negative Every", "web", constant("r"), []poller.WatchOption{poller.Every(-time.Second)}},
		{"negative Jitter", "web", constant("r"), []poller.WatchOption{poller.Jitter(-0.1)}},
		{"Jitter 1", "web", constant("r"), []poller.WatchOption{poller.Jitter(1)}},
		{"Jitter NaN", "web", constant("r"), []poller.WatchOption{poller.Jitter(math.NaN())}},
		{"negative Timeout", "web", constant("r"), []poller.WatchOption{poller.Timeout(-1)}},
		{"zero MaxBackoff", "web", constant("r"), []poller.WatchOption{poller.MaxBackoff(0)}},
		{"git remote option", "web", poller.Git("--upload-pack=touch /tmp/x", "main"), nil},
		{"git ref option", "web", poller.Git("/srv/repo", "--output=/tmp/x"), nil},
		{"git empty ref", "web", poller.Git("/srv/repo", ""), nil},
		{"git ref pattern", "web", poller.Git("/srv/repo", "v*"), nil},
		{"http scheme", "web", poller.HTTP("ftp://example.com/x"), nil},
		{"http relative", "web", poller.HTTP("/x"), nil},
		{"http method", "web", &poller.HTTPSource{URL: "http://example.com", Method: "POST"}, nil},
		{"empty file", "web", poller.File(""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := poller.New(new(recorder))
			err := p.Watch(tc.key, tc.src, tc.opts...)
			require.ErrorIsf(t, err, dedup.ErrInvalid, "Watch(%q, %s) = %v", tc.key, tc.name, err)
			_, ok := p.Status(tc.key)
			require.False(t, ok, "Status of a key whose Watch failed")
		})
	}
}

func TestWatchValidOptions(t *testing.T) {
	p := poller.New(new(recorder))
	err := p.Watch("web", constant("r"), poller.Every(time.Second), poller.Jitter(0), poller.Jitter(0.99),
		poller.Timeout(0), poller.MaxBackoff(time.Millisecond))
	require.NoError(t, err, "Watch with valid options")
}

// TestChanges: every poll's revision reaches the Trigger (level-triggered);
// the event says whether it changed.
func TestChanges(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0))
	h.run()

	steps := []struct {
		rev          dedup.Revision
		kind         poller.EventKind
		previous     dedup.Revision
		wantTriggers []dedup.Revision
	}{
		{"r1", poller.EventChanged, "", []dedup.Revision{"r1"}},
		{"r1", poller.EventPolled, "", []dedup.Revision{"r1", "r1"}},
		{"r2", poller.EventChanged, "r1", []dedup.Revision{"r1", "r1", "r2"}},
		{"r1", poller.EventChanged, "r2", []dedup.Revision{"r1", "r1", "r2", "r1"}}, // a rollback is a change too
	}
	for i, st := range steps {
		wait := time.Minute
		if i == 0 {
			wait = 0 // the first poll is immediate without jitter
		}
		h.fireNext(1, wait)
		src.next(h.ctx).reply(st.rev, nil)
		e := h.event()
		require.Equalf(t, st.kind, e.Kind, "step %d: event kind", i)
		require.Equal(t, "web", e.Key)
		require.Equal(t, st.rev, e.Revision)
		require.Equal(t, st.previous, e.Previous)
		require.Equal(t, time.Minute, e.Delay)
		require.Equalf(t, st.wantTriggers, h.trig.revs("web"), "step %d: triggered revisions", i)
	}
	st, ok := h.p.Status("web")
	require.True(t, ok)
	require.Equal(t, dedup.Revision("r1"), st.Revision)
	require.NoError(t, st.Err)
	require.Equal(t, h.clock.Now(), st.Polled)
}

func TestNotifyFunc(t *testing.T) {
	var got []string
	f := poller.NotifyFunc(func(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error {
		got = append(got, key+"@"+string(rev))
		return errBoom
	})
	require.ErrorIs(t, f.Notify("web", "r1"), errBoom)
	require.Equal(t, []string{"web@r1"}, got)
}

// TestSpacing: waits stay within the jitter band around Every, and the first
// poll within Jitter×Every.
func TestSpacing(t *testing.T) {
	for _, jitter := range []float64{0, 0.1, 0.5} {
		t.Run(fmt.Sprint(jitter), func(t *testing.T) {
			h := newHarness(t, nil)
			const every = 10 * time.Second
			h.watch("web", constant("r1"), poller.Every(every), poller.Jitter(jitter))
			h.run()
			lo, hi := time.Duration(float64(every)*(1-jitter)), time.Duration(float64(every)*(1+jitter))
			for i := range 20 {
				require.NoError(t, h.clock.WaitTimers(h.ctx, 1))
				d, _ := h.clock.Next()
				if i == 0 {
					require.GreaterOrEqual(t, d, time.Duration(0), "first wait")
					require.LessOrEqual(t, d, time.Duration(jitter*float64(every)), "first wait")
				} else {
					require.GreaterOrEqualf(t, d, lo, "wait %d", i)
					require.LessOrEqualf(t, d, hi, "wait %d", i)
				}
				st, _ := h.p.Status("web")
				require.Equal(t, h.clock.Now().Add(d), st.Next, "Status.Next")
				h.clock.Advance(d)
				h.event()
			}
		})
	}
}

// TestPollNowNoOverlap: PollNow during a poll waits for it, and any number
// of them make one more poll.
func TestPollNowNoOverlap(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	h.run()
	h.fireNext(1, 0)
	first := src.next(h.ctx)
	for range 3 {
		require.NoError(t, h.p.PollNow("web"))
	}
	st, _ := h.p.Status("web")
	require.True(t, st.Polling, "Status.Polling during a poll")
	first.reply("r1", nil)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	second := src.next(h.ctx) // without advancing the clock
	second.reply("r1", nil)
	require.Equal(t, poller.EventPolled, h.event().Kind)
	// The third PollNow was absorbed: the next poll is a regular one.
	h.fireNext(1, time.Minute)
	src.next(h.ctx).reply("r2", nil)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	require.Equal(t, int32(1), src.maxActive.Load(), "most polls of one key at once")

	// Idle: PollNow starts a poll at once and resets the interval.
	require.NoError(t, h.clock.WaitTimers(h.ctx, 1))
	h.clock.Advance(10 * time.Second)
	require.NoError(t, h.p.PollNow("web"))
	require.Equal(t, 0, h.clock.Timers(), "timers armed during a PollNow poll")
	src.next(h.ctx).reply("r2", nil)
	h.event()
	h.fireNext(1, time.Minute)
	src.next(h.ctx).reply("r2", nil)
	h.event()
}

// TestPollNowDuringPoll: in a synctest bubble, where synctest.Wait lets
// every goroutine run until it blocks, no PollNow starts a poll while one
// runs.
func TestPollNowDuringPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := poller.New(new(recorder))
		src := newScripted(t)
		require.NoError(t, p.Watch("web", src, poller.Every(time.Hour), poller.Jitter(0)))
		ctx := testContext(t)
		stop := runBubble(t, p)
		noPoll := func(when string) {
			t.Helper()
			synctest.Wait()
			require.Zerof(t, len(src.calls), "polls started %s", when)
			require.Equalf(t, int32(1), src.active.Load(), "polls running %s", when)
		}
		first := src.next(ctx)
		for range 3 {
			require.NoError(t, p.PollNow("web"))
		}
		noPoll("by PollNow during a poll")
		start := time.Now()
		first.reply("r1", nil)
		second := src.next(ctx) // the PollNows' one poll
		require.Equal(t, start, time.Now(), "time of the poll asked for by PollNow")
		noPoll("besides the one asked for by PollNow")
		second.reply("r1", nil)
		synctest.Wait()
		require.Zero(t, len(src.calls), "polls after the one asked for by PollNow")
		require.NoError(t, stop())
	})
}

// runBubble starts p.Run in a goroutine of the synctest bubble of t. The
// returned stop ends it and returns what Run returned; the test's cleanup
// calls it too, so that no goroutine is left in the bubble when a check
// fails.
func runBubble(t *testing.T, p *poller.Poller) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestPollNowNotWatched(t *testing.T) {
	p := poller.New(new(recorder))
	require.ErrorIs(t, p.PollNow("web"), poller.ErrNotWatched)
	require.NoError(t, p.Watch("web", constant("r1")))
	p.Unwatch("web")
	require.ErrorIs(t, p.PollNow("web"), poller.ErrNotWatched)
}

// TestWatchBeforeRun: nothing happens until Run; a PollNow before Run polls
// as soon as Run starts, without waiting for a timer.
func TestWatchBeforeRun(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("a", src, poller.Every(time.Hour))
	h.watch("b", constant("rb"), poller.Every(time.Hour), poller.Jitter(0))
	require.NoError(t, h.p.PollNow("a"))
	require.Equal(t, 0, h.clock.Timers(), "timers armed before Run")
	st, _ := h.p.Status("b")
	require.Zero(t, st.Next, "Status.Next before Run")

	h.run()
	src.next(h.ctx).reply("ra", nil) // no clock advance: PollNow
	require.Equal(t, poller.EventChanged, h.event().Kind)
	h.fireNext(1, 0) // b's first poll
	e := h.event()
	require.Equal(t, "b", e.Key)
	require.Equal(t, []dedup.Revision{"ra"}, h.trig.revs("a"))
	require.Equal(t, []dedup.Revision{"rb"}, h.trig.revs("b"))
}

// TestErrorBackoff: failures back off exponentially up to the cap, are
// reported, and a success resets the wait.
func TestErrorBackoff(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("web", src, poller.Every(10*time.Second), poller.Jitter(0), poller.MaxBackoff(35*time.Second))
	h.run()
	h.fireNext(1, 0)
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 35 * time.Second, 35 * time.Second} {
		src.next(h.ctx).reply("", errBoom)
		e := h.event()
		require.Equalf(t, poller.EventError, e.Kind, "failure %d", i+1)
		require.ErrorIs(t, e.Err, errBoom)
		require.Equal(t, i+1, e.Failures)
		require.Equal(t, want, e.Delay)
		st, _ := h.p.Status("web")
		require.ErrorIs(t, st.Err, errBoom, "Status.Err")
		require.Equal(t, i+1, st.Failures, "Status.Failures")
		h.fireNext(1, want)
	}
	src.next(h.ctx).reply("r1", nil)
	e := h.event()
	require.Equal(t, poller.EventChanged, e.Kind)
	require.Equal(t, 10*time.Second, e.Delay, "wait after a success")
	st, _ := h.p.Status("web")
	require.NoError(t, st.Err)
	require.Zero(t, st.Failures)
	require.Equal(t, []dedup.Revision{"r1"}, h.trig.revs("web"), "errors are never revisions")
}

func TestDefaultBackoffCap(t *testing.T) {
	for _, tc := range []struct {
		every, want time.Duration
	}{
		{time.Second, 10 * time.Second},
		{time.Minute, 10 * time.Minute},
		{2 * time.Hour, 2 * time.Hour},
	} {
		t.Run(tc.every.String(), func(t *testing.T) {
			h := newHarness(t, nil)
			h.watch("web", poller.SourceFunc(func(context.Context) (dedup.Revision, error) { return "", errBoom }),
				poller.Every(tc.every), poller.Jitter(0), poller.Timeout(0))
			h.run()
			h.fireNext(1, 0)
			var last time.Duration
			for range 12 {
				last = h.event().Delay
				h.fireNext(1, last)
			}
			require.Equal(t, tc.want, last, "wait after many failures")
		})
	}
}

func TestBadRevisionsAndPanics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   poller.SourceFunc
		check func(t *testing.T, err error)
	}{
		{"empty revision", func(context.Context) (dedup.Revision, error) { return "", nil },
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"control character", func(context.Context) (dedup.Revision, error) { return "r\x00", nil },
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"panic", func(context.Context) (dedup.Revision, error) { panic(errBoom) },
			func(t *testing.T, err error) { require.ErrorIs(t, err, errBoom) }},
		{"panic with a string", func(context.Context) (dedup.Revision, error) { panic("oops") },
			func(t *testing.T, err error) { require.ErrorContains(t, err, "oops") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.watch("web", tc.src, poller.Jitter(0))
			h.run()
			for range 2 { // the poller goes on after the failure
				h.advance()
				e := h.event()
				require.Equal(t, poller.EventError, e.Kind)
				tc.check(t, e.Err)
			}
			require.Empty(t, h.trig.all(), "triggers")
		})
	}
}

func TestTriggerFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.trig.setErr(dedup.ErrClosed)
	h.watch("web", constant("r1"), poller.Every(time.Minute), poller.Jitter(0))
	h.run()
	h.fireNext(1, 0)
	e := h.event()
	require.Equal(t, poller.EventTriggerFailed, e.Kind)
	require.ErrorIs(t, e.Err, dedup.ErrClosed)
	require.Equal(t, time.Minute, e.Delay, "a refused trigger does not back off")
	st, _ := h.p.Status("web")
	require.ErrorIs(t, st.Err, dedup.ErrClosed, "Status.Err")
	require.Empty(t, st.Revision, "Status.Revision after a refused trigger")

	h.trig.setErr(nil)
	h.fireNext(1, time.Minute)
	require.Equal(t, poller.EventChanged, h.event().Kind, "the same revision is triggered again")
	require.Equal(t, []dedup.Revision{"r1", "r1"}, h.trig.revs("web"))
}

func TestTriggerPanics(t *testing.T) {
	trig := triggerFunc(func(string, dedup.Revision) error { panic("broken trigger") })
	h := newHarness(t, trig)
	h.watch("web", constant("r1"), poller.Jitter(0))
	h.run()
	h.advance()
	e := h.event()
	require.Equal(t, poller.EventTriggerFailed, e.Kind)
	require.ErrorContains(t, e.Err, "broken trigger")
}

type triggerFunc func(key string, rev dedup.Revision) error

func (f triggerFunc) Notify(key string, rev dedup.Revision, _ ...dedup.TriggerOption) error {
	return f(key, rev)
}

// TestTimeout: a source that does not answer within Timeout, on the
// Poller's clock, fails with context.DeadlineExceeded.
func TestTimeout(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(5*time.Second))
	h.run()
	h.fireNext(1, 0)
	c := src.next(h.ctx)
	h.fireNext(1, 5*time.Second) // the timeout timer
	<-c.ctx.Done()
	e := h.event()
	require.Equal(t, poller.EventError, e.Kind)
	require.ErrorIs(t, e.Err, context.DeadlineExceeded)
	require.Equal(t, 5*time.Second, e.Duration)
	require.Equal(t, time.Minute, e.Delay)

	// A poll that answers in time stops its timeout timer.
	h.fireNext(1, time.Minute)
	src.next(h.ctx).reply("r1", nil)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	h.fireNext(1, time.Minute)
}

// TestTimeoutRealClock: with the default clock, the source's context
// carries the deadline.
func TestTimeoutRealClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		trig := new(recorder)
		events := make(chan poller.Event, 8)
		p := poller.New(trig, poller.WithObserver(func(e poller.Event) { events <- e }))
		var deadline time.Time
		src := poller.SourceFunc(func(ctx context.Context) (dedup.Revision, error) {
			deadline, _ = ctx.Deadline()
			<-ctx.Done()
			return "", ctx.Err()
		})
		require.NoError(t, p.Watch("web", src, poller.Jitter(0), poller.Timeout(3*time.Second)))
		start := time.Now()
		stop := runBubble(t, p)
		e := <-events
		require.Equal(t, poller.EventError, e.Kind)
		require.ErrorIs(t, e.Err, context.DeadlineExceeded)
		require.Equal(t, start.Add(3*time.Second), deadline, "deadline of the source's context")
		require.NoError(t, stop())
	})
}

// TestUnwatch: the timer stops, a running poll is canceled and its result
// dropped.
func TestUnwatch(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	// No Timeout: its timer would count among the clock's timers.
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	h.watch("other", constant("o1"), poller.Every(time.Minute), poller.Jitter(0))
	h.run()

	// Idle key. One timer serves both keys, and stays for the other.
	require.NoError(t, h.clock.WaitTimers(h.ctx, 1))
	h.p.Unwatch("other")
	require.Equal(t, 1, h.clock.Timers(), "timers after Unwatch of an idle key")
	_, ok := h.p.Status("other")
	require.False(t, ok, "Status after Unwatch")
	h.p.Unwatch("other") // again: nothing

	// Polling key.
	h.fireNext(1, 0)
	c := src.next(h.ctx)
	h.p.Unwatch("web")
	select {
	case <-c.ctx.Done():
	default:
		t.Fatal("the running poll was not canceled by Unwatch")
	}
	c.reply("stale", nil)
	require.Empty(t, h.p.Statuses(), "Statuses after Unwatch")

	// Watching again starts afresh once the old poll has ended.
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0))
	h.fireNext(1, 0)
	src.next(h.ctx).reply("r1", nil)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	require.Equal(t, []dedup.Revision{"r1"}, h.trig.revs("web"), "a poll of an unwatched key triggered")
	require.Empty(t, h.trig.revs("other"))
}

// TestWatchReplaces: Watch of a watched key replaces its source; the old
// poll is canceled, its result dropped, and the new source's first poll
// waits for it to end.
func TestWatchReplaces(t *testing.T) {
	h := newHarness(t, nil)
	oldSrc, newSrc := newScripted(t), newScripted(t)
	oldSrc.ignoreCancel = true // so that the old poll ends when the test says
	h.watch("web", oldSrc, poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(0))
	h.run()
	h.fireNext(1, 0)
	oldSrc.next(h.ctx).reply("r1", nil)
	require.Equal(t, poller.EventChanged, h.event().Kind)

	h.fireNext(1, time.Minute)
	c := oldSrc.next(h.ctx)
	h.watch("web", newSrc, poller.Every(time.Hour), poller.Jitter(0))
	require.Equal(t, 0, h.clock.Timers(), "the new source was scheduled while the old poll ran")
	<-c.ctx.Done()
	c.reply("r-old", nil)

	h.fireNext(1, 0)
	newSrc.next(h.ctx).reply("r1", nil)
	e := h.event()
	require.Equal(t, poller.EventChanged, e.Kind, "first revision of the new source")
	require.Empty(t, e.Previous)
	require.Equal(t, time.Hour, e.Delay, "the new options apply")
	require.Equal(t, []dedup.Revision{"r1", "r1"}, h.trig.revs("web"))
}

// TestUnwatchWaitsForTrigger: when Unwatch returns, a revision being handed
// to the Trigger has been handed, and no later one will be.
func TestUnwatchWaitsForTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		var calls atomic.Int32
		trig := triggerFunc(func(string, dedup.Revision) error {
			calls.Add(1)
			close(entered)
			<-release
			return nil
		})
		p := poller.New(trig)
		var n atomic.Int32 // a new revision at every poll: any poll after Unwatch would trigger
		src := poller.SourceFunc(func(context.Context) (dedup.Revision, error) {
			return dedup.Revision(fmt.Sprint("r", n.Add(1))), nil
		})
		require.NoError(t, p.Watch("web", src, poller.Every(time.Second), poller.Jitter(0)))
		stop := runBubble(t, p)
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before stop
		<-entered
		unwatched := make(chan struct{})
		go func() {
			p.Unwatch("web")
			close(unwatched)
		}()
		synctest.Wait()
		select {
		case <-unwatched:
			t.Fatal("Unwatch returned while the Trigger was being called")
		default:
		}
		releaseOnce.Do(func() { close(release) })
		<-unwatched
		<-time.After(time.Hour) // bubble time: many intervals pass, with no poll
		require.Equal(t, int32(1), calls.Load(), "Trigger calls")
		require.Equal(t, int32(1), n.Load(), "polls")
		require.NoError(t, stop())
	})
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, nil)
	h.watch("web", constant("r1"), poller.Every(time.Minute), poller.Jitter(0))
	h.run()
	h.fireNext(1, 0)
	require.Equal(t, poller.EventChanged, h.event().Kind)
	require.ErrorIs(t, h.p.Run(h.ctx), poller.ErrRunning, "second Run while the first runs")
	h.stop()

	// Run again after it returned: polls resume, the revision is remembered.
	h.run()
	h.fireNext(1, 0)
	require.Equal(t, poller.EventPolled, h.event().Kind)
	require.Equal(t, []dedup.Revision{"r1", "r1"}, h.trig.revs("web"))
}

func TestRunEndedContext(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("web", src, poller.Jitter(0))
	require.NoError(t, h.p.PollNow("web"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.p.Run(ctx))
	require.Equal(t, 0, h.clock.Timers())
	select {
	case <-src.calls:
		t.Fatal("Run with an ended context polled")
	default:
	}
}

// TestRunStops: Run cancels a running poll and returns once it returned,
// leaving no timer (checked by the harness) and no goroutine (goleak).
func TestRunStops(t *testing.T) {
	h := newHarness(t, nil)
	src := newScripted(t)
	h.watch("a", src, poller.Every(time.Minute), poller.Jitter(0))
	h.watch("b", constant("r1"), poller.Every(time.Minute), poller.Jitter(0), poller.Timeout(time.Second))
	h.run()
	h.fireNext(1, 0)
	c := src.next(h.ctx)
	h.event()
	require.NoError(t, h.clock.WaitTimers(h.ctx, 1)) // b's next poll
	h.stop()
	select {
	case <-c.ctx.Done():
	default:
		t.Fatal("Run returned while a poll's context was live")
	}
	for _, st := range h.p.Statuses() {
		require.Falsef(t, st.Polling, "%s polling after Run returned", st.Key)
		require.Zerof(t, st.Next, "%s Next after Run returned", st.Key)
	}
	select {
	case e := <-h.events:
		t.Fatalf("event %v for a poll canceled by the end of Run", e)
	default:
	}
}

// TestWithManager: the Poller drives a real Manager; an unchanged source
// deploys nothing.
func TestWithManager(t *testing.T) {
	h, _, d := newManagerHarness(t) // the Manager's clock drives the Poller too
	src := newScripted(t)
	h.watch("web", src, poller.Every(time.Minute), poller.Jitter(0))
	h.run()

	h.fireNext(1, 0)
	src.next(h.ctx).reply("r1", nil)
	call, err := d.Next(h.ctx)
	require.NoError(t, err)
	require.Equal(t, dedup.Revision("r1"), call.Revision)
	call.Finish(nil)
	<-call.Returned()
	h.event()
	for range 3 {
		h.fireNext(1, time.Minute)
		src.next(h.ctx).reply("r1", nil)
		require.Equal(t, poller.EventPolled, h.event().Kind)
	}
	h.fireNext(1, time.Minute)
	src.next(h.ctx).reply("r2", nil)
	call, err = d.Next(h.ctx)
	require.NoError(t, err)
	call.Finish(nil)
	<-call.Returned()
	require.Equal(t, []dedup.Revision{"r1", "r2"}, d.Revisions("web"))
}

// TestLogger: failures are logged at Warn with the key and the error.
func TestLogger(t *testing.T) {
	logs := &recordHandler{}
	h := newHarness(t, nil, poller.WithLogger(slog.New(logs)))
	src := newScripted(t)
	h.watch("web", src, poller.Jitter(0))
	h.run()
	h.advance()
	src.next(h.ctx).reply("", errBoom)
	h.event()
	h.advance()
	src.next(h.ctx).reply("r1", nil)
	h.event()

	recs := logs.all()
	require.Len(t, recs, 2)
	require.Equal(t, slog.LevelWarn, recs[0].Level)
	require.Equal(t, "poller: error", recs[0].Message)
	attrs := map[string]slog.Value{}
	recs[0].Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
	require.Equal(t, "web", attrs["key"].String())
	require.ErrorIs(t, attrs["err"].Any().(error), errBoom)
	require.Equal(t, slog.LevelInfo, recs[1].Level)
	require.Equal(t, "poller: changed", recs[1].Message)
}

type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }
func (h *recordHandler) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

func TestStatuses(t *testing.T) {
	p := poller.New(new(recorder))
	for _, k := range []string{"c", "a", "b"} {
		require.NoError(t, p.Watch(k, constant("r")))
	}
	var keys []string
	for _, st := range p.Statuses() {
		keys = append(keys, st.Key)
	}
	require.Equal(t, []string{"a", "b", "c"}, keys)
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[poller.EventKind]string{
		poller.EventPolled: "polled", poller.EventChanged: "changed", poller.EventError: "error",
		poller.EventTriggerFailed: "trigger-failed", 0: "event(0)", 99: "event(99)",
	} {
		assert.Equalf(t, want, k.String(), "EventKind(%d).String()", k)
	}
}

// TestConcurrentUse: Watch, Unwatch and PollNow from many goroutines while
// Run runs on the real clock; polls of a key never overlap, and Run leaves
// nothing behind. Run with -race.
func TestConcurrentUse(t *testing.T) {
	trig := new(recorder)
	p := poller.New(trig)
	const keys = 8
	var active [keys]atomic.Int32
	var overlaps atomic.Int32
	src := func(i int) poller.Source {
		return poller.SourceFunc(func(ctx context.Context) (dedup.Revision, error) {
			if active[i].Add(1) > 1 {
				overlaps.Add(1)
			}
			defer active[i].Add(-1)
			return dedup.Revision(fmt.Sprintf("r%d", time.Now().UnixNano()%3)), nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := range 300 {
				i := (g + n) % keys
				key := fmt.Sprint("k", i)
				switch n % 4 {
				case 0, 1:
					if err := p.Watch(key, src(i), poller.Every(time.Millisecond), poller.Jitter(0.5)); err != nil {
						t.Errorf("Watch(%q) = %v", key, err)
					}
				case 2:
					if err := p.PollNow(key); err != nil && !errors.Is(err, poller.ErrNotWatched) {
						t.Errorf("PollNow(%q) = %v", key, err)
					}
				case 3:
					p.Unwatch(key)
				}
				p.Statuses()
			}
		})
	}
	wg.Wait()
	cancel()
	require.NoError(t, <-done)
	require.Zero(t, overlaps.Load(), "overlapping polls of one key")
}

// TestOneTimer: one timer of the clock serves every waiting key, armed for
// the earliest; it moves when that key goes, and polls come in order. In a
// synctest bubble, so that synctest.Wait says when every poll has settled.
func TestOneTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		for i, every := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute} {
			h.watch(fmt.Sprint("k", i+1), constant("r"), poller.Every(every), poller.Jitter(0), poller.Timeout(0))
		}
		h.run()
		h.fireNext(1, 0)
		for range 3 {
			h.event()
		}
		synctest.Wait()
		require.Equal(t, 1, h.clock.Timers(), "timers for three waiting keys")
		d, _ := h.clock.Next()
		require.Equal(t, time.Minute, d, "wait for the earliest key")
		h.p.Unwatch("k1")
		require.Equal(t, 1, h.clock.Timers(), "timers after the earliest key went")
		d, _ = h.clock.Next()
		require.Equal(t, 2*time.Minute, d, "wait for the next key")
		h.clock.Advance(d)
		require.Equal(t, "k2", h.event().Key)
		h.fireNext(1, time.Minute) // k3, at 3 minutes
		require.Equal(t, "k3", h.event().Key)
		h.stop()
	})
}
