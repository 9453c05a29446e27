package deduptest

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Epoch is where a zero Clock starts: a fixed, non-zero time, so that
// results are the same on every run.
var Epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock is a fake dedup.Clock: time moves only when the test calls Advance,
// AdvanceNext or Set, and due timers fire then, in the goroutine of that
// call, in order of their deadlines (timers due at the same instant in the
// order they were armed), each with Now at its deadline.
//
// Unlike time.AfterFunc, the callbacks run synchronously: when Advance
// returns, every timer due by then has fired and its callback has returned.
// A timer armed with a duration of zero or less fires at the next Advance,
// AdvanceNext or Set, never inside AfterFunc.
//
// The zero Clock starts at Epoch and is ready to use. A Clock is safe for
// concurrent use; the calls that move time should come from one goroutine.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	started bool
	seq     uint64
	timers  []*fakeTimer // armed, in no particular order
	changed notifier     // timers armed or stopped
}

var _ dedup.Clock = (*Clock)(nil)

// NewClock returns a Clock that starts at t.
func NewClock(t time.Time) *Clock {
	return &Clock{now: t, started: true}
}

func (c *Clock) init() {
	if !c.started {
		c.now, c.started = Epoch, true
	}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	return c.now
}

// Since returns the fake time elapsed since t.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// AfterFunc arms a timer that calls f once the fake time has advanced by d.
// It never calls f itself.
func (c *Clock) AfterFunc(d time.Duration, f func()) dedup.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	c.seq++
	t := &fakeTimer{c: c, at: c.now.Add(max(d, 0)), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	c.changed.broadcast()
	return t
}

// Advance moves the fake time forward by d, firing the timers that fall due
// on the way. It blocks until their callbacks have returned. It panics if d
// is negative.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("deduptest: Clock.Advance with a negative duration")
	}
	c.mu.Lock()
	c.init()
	to := c.now.Add(d)
	c.mu.Unlock()
	c.advanceTo(to)
}

// Set moves the fake time to t and fires the timers due by then. Moving
// backwards fires nothing that was not due already.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.init()
	c.mu.Unlock()
	c.advanceTo(t)
}

// AdvanceNext moves the fake time to the deadline of the earliest armed timer
// and fires the timers due then. It returns how far time moved, and false if
// no timer was armed.
func (c *Clock) AdvanceNext() (time.Duration, bool) {
	c.mu.Lock()
	c.init()
	if len(c.timers) == 0 {
		c.mu.Unlock()
		return 0, false
	}
	next := c.earliest()
	from, to := c.now, later(c.now, next.at)
	c.mu.Unlock()
	c.advanceTo(to)
	return to.Sub(from), true
}

// Timers returns how many timers are armed.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next returns how long until the earliest armed timer is due (zero or less
// if it is due already), and false if no timer is armed.
func (c *Clock) Next() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	if len(c.timers) == 0 {
		return 0, false
	}
	return c.earliest().at.Sub(c.now), true
}

// WaitTimers blocks until at least n timers are armed, or ctx is done. Use
// it to wait for the code under test to arm the timer the test will fire.
func (c *Clock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed.wait()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// advanceTo fires the due timers one at a time, without holding the lock,
// so that callbacks may use the clock.
func (c *Clock) advanceTo(to time.Time) {
	for {
		c.mu.Lock()
		var due *fakeTimer
		if len(c.timers) > 0 {
			if t := c.earliest(); !t.at.After(to) {
				due = t
			}
		}
		if due == nil {
			c.now = to
			c.mu.Unlock()
			return
		}
		c.remove(due)
		c.now = later(c.now, due.at)
		c.mu.Unlock()
		due.f()
	}
}

func (c *Clock) earliest() *fakeTimer {
	return slices.MinFunc(c.timers, func(a, b *fakeTimer) int {
		if n := a.at.Compare(b.at); n != 0 {
			return n
		}
		return cmp.Compare(a.seq, b.seq)
	})
}

func (c *Clock) remove(t *fakeTimer) bool {
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.changed.broadcast()
	return true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type fakeTimer struct {
	c   *Clock
	at  time.Time
	seq uint64
	f   func()
}

// Stop disarms the timer and reports whether it was armed.
func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.c.remove(t)
}

// notifier wakes everyone waiting for a change. Its methods are called
// with the owner's lock held.
type notifier struct{ ch chan struct{} }

func (n *notifier) wait() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
