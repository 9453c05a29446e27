package dedup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/dedupdeploy/dedupdeploy/internal/clockctx"
)

// This file is the per-key state machine. A key holds at most one running
// run and one pending run. Every transition below is called with the lock
// of the key's shard held and never calls user code except the Clock.
//
//	request:  a trigger joins the pending or running revision, is found
//	          live already, replaces (supersedes) the pending revision, or
//	          becomes the pending revision.
//	schedule: the pending run starts once nothing of the key runs, its
//	          start time (debounce, min interval, retry backoff) has come
//	          and a concurrency slot is free; until then a timer or the
//	          FIFO queue of keys holds it.
//	begin:    an attempt of the running run gets its context and starts.
//	finish:   the attempt ended: the revision is live, or the failure is
//	          absorbed by a newer pending revision, retried, or final.
//	abort:    Close drops the pending run.

// keyState is the state of one key. An idle key holds only this struct.
type keyState struct {
	key     string
	shard   *shard  // whose lock guards this state
	policy  *Policy // interned: shared by every key with an equal policy
	live    Revision
	loaded  bool // live is known: the Store was read or a deploy succeeded
	queued  bool // in Manager.queue, waiting for a concurrency slot; guarded by slotMu
	unsaved bool // live was deployed but the Store's Save failed: only memory knows it

	// The deploy-time baseline (baseline.go), in what was padding.
	baseN    uint8   // successes, up to 255
	baseMean float32 // their weighted mean, in seconds

	running *run
	pending *run

	errs     *keyErrs // nil until the key's first error, second success or first slow watch
	runs     uint32   // attempts started
	deployed uint32
	failed   uint32 // attempts failed
	replaced uint32 // pending revisions superseded before they ran

	lastStarted  time.Time
	lastFinished time.Time
}

type keyErrs struct {
	last  error // of the last finished attempt
	store error // of the Store's last failed Load or Save

	recent recentDurations // the deploy-time baseline's window (baseline.go)
}

func (ks *keyState) err() *keyErrs {
	if ks.errs == nil {
		ks.errs = new(keyErrs)
	}
	return ks.errs
}

// run is one intended deploy of one revision: first pending, then running,
// then settled. Triggers that join it, and the revisions it superseded, hold
// tickets on it; runs it absorbed settle with it.
type run struct {
	rev      Revision
	attempts int32 // beside the flags: a run is allocated per deploy, keep it small
	force    bool
	needLoad bool // the Store must be read before the first attempt
	canceled bool // its context was canceled for a newer revision
	outcome  Outcome

	wait *runWait // nil while its policy needs no start time

	ctx     context.Context // nil: the Manager's base context
	cancel  context.CancelFunc
	started time.Time // first attempt; the running attempt's start is ks.lastStarted

	// Once settled: done is closed, and by is the run whose result this
	// run's tickets report (itself, or the newer run that absorbed it).
	done     chan struct{} // made when the first ticket waits on the run
	by       *run
	err      error
	finished time.Time
	absorbed []*run // runs whose tickets this run settles too
}

// runWait holds what a pending run needs to wait for its start time. It is
// made only for keys whose policy debounces, spaces or retries runs.
type runWait struct {
	first, last time.Time // first and latest trigger of the burst (debounce)
	retryAt     time.Time // earliest next attempt after a failure
	timer       Timer     // armed while pending and waiting for its start time
	timerAt     time.Time
	timerGen    uint32
}

func (r *run) w() *runWait {
	if r.wait == nil {
		r.wait = new(runWait)
	}
	return r.wait
}

// waiter returns r for a ticket to hold, making its done channel if needed.
func (r *run) waiter(wait bool) *run {
	if !wait {
		return nil
	}
	if r.done == nil {
		r.done = make(chan struct{})
	}
	return r
}

// settle gives r its final outcome, and the same to every run it absorbed.
func settle(r *run, o Outcome, err error, now *instant) {
	r.outcome, r.err, r.finished = o, err, now.get()
	if r.started.IsZero() {
		r.started = r.finished
	}
	r.by = r
	if r.done != nil {
		close(r.done)
	}
	for i, a := range r.absorbed { // flat: absorb moved theirs here
		a.by = r
		close(a.done)
		r.absorbed[i] = nil
	}
	r.absorbed = nil
}

// absorb makes the tickets of run a settle with run r: a was superseded by
// r (a failed or canceled attempt replaced by r's newer revision, or a
// pending revision that r deployed already). A run that no ticket waits on
// is dropped, and what a absorbed moves to r: the list stays flat and holds
// only runs that tickets wait on, so a key's memory is bounded by the
// tickets held, not by how many runs failed before, and settling needs no
// recursion.
func absorb(r, a *run) {
	r.absorbed = append(r.absorbed, a.absorbed...)
	clear(a.absorbed)
	a.absorbed = nil
	if a.done != nil {
		r.absorbed = append(r.absorbed, a)
	}
}

// request handles a trigger of rev for ks. It returns the run a ticket
// should hold (nil when rev is live already, or when the caller does not
// wait), a run the caller must execute, and what the trigger did.
func (m *Manager) request(ks *keyState, rev Revision, force, wait bool, now *instant, evs *events) (ticket, start *run, _ did) {
	// Join: rev is where the key is heading.
	if p := ks.pending; p != nil && p.rev == rev {
		p.force = p.force || force
		if ks.policy.Quiet > 0 {
			p.w().last = now.get()
		}
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Attempt = int(p.attempts)
		}
		return p.waiter(wait), nil, did{action: ActionJoinedPending}
	}
	if r := ks.running; ks.pending == nil && r != nil && !r.canceled && r.rev == rev {
		if r.needLoad {
			// The Store is being read: a forced trigger must not let
			// the run settle Unchanged if it says rev is live.
			r.force = r.force || force
		}
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Attempt = int(r.attempts)
		}
		return r.waiter(wait), nil, did{action: ActionJoinedRunning}
	}
	if ks.pending == nil && ks.running == nil && ks.loaded && ks.live == rev && !force {
		evs.add(EventUnchanged, ks.key, rev, now)
		return nil, nil, did{action: ActionUnchanged}
	}

	// Supersede: rev replaces the pending revision in place, and the
	// tickets of the old one move with it.
	if p := ks.pending; p != nil {
		old := p.rev
		p.rev, p.force = rev, force
		if ks.policy.Quiet > 0 {
			p.w().last = now.get()
		}
		ks.replaced++
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Replaced = old
		}
		if p.attempts > 0 {
			// It was a failed run waiting for its retry: the newer
			// revision replaces the retry and starts afresh.
			p.attempts, p.started = 0, time.Time{}
			p.w().retryAt = time.Time{}
			if ks.policy.Quiet > 0 {
				p.w().first = p.w().last
			}
			return m.scheduled(ks, p, wait, old, now, evs)
		}
		if ks.running == nil {
			// Waiting for its start time or a slot: it may have gone
			// back to the live revision.
			return m.scheduled(ks, p, wait, old, now, evs)
		}
		return p.waiter(wait), nil, did{action: ActionQueued, replaced: old}
	}

	// Queue: rev becomes the pending revision.
	p := &run{rev: rev, force: force}
	if ks.policy.Quiet > 0 {
		p.w().first = now.get()
		p.w().last = p.w().first
	}
	ks.pending = p
	evs.add(EventQueued, ks.key, rev, now)
	if r := ks.running; r != nil && ks.policy.CancelInProgress && !r.canceled {
		r.canceled = true
		if r.cancel != nil {
			r.cancel()
		}
		if ev := evs.add(EventCanceled, ks.key, rev, now); ev != nil {
			ev.Replaced, ev.Attempt = r.rev, int(r.attempts)
		}
	}
	return m.scheduled(ks, p, wait, "", now, evs)
}

// did is what a trigger did, for its Ticket.
type did struct {
	ks       *keyState
	action   Action
	replaced Revision
}

// scheduled schedules the pending run p of ks, which a trigger just queued
// or changed, and returns what request returns.
func (m *Manager) scheduled(ks *keyState, p *run, wait bool, replaced Revision, now *instant, evs *events) (ticket, start *run, d did) {
	ticket = p.waiter(wait)
	start = m.schedule(ks, now, evs)
	d = did{action: ActionQueued, replaced: replaced}
	switch {
	case start != nil:
		d.action = ActionStarted
	case ks.pending != p: // settled: the key went back to its live revision
		d.action = ActionUnchanged
	}
	return ticket, start, d
}

// schedule starts the pending run of ks if nothing of ks runs and its policy
// and the concurrency limit allow it now. Otherwise it arms a timer for when
// the policy will allow it, or queues ks for a slot. It returns the run the
// caller must execute, if one started.
func (m *Manager) schedule(ks *keyState, now *instant, evs *events) *run {
	p := ks.pending
	if p == nil || ks.running != nil || m.closed.Load() {
		return nil
	}
	if ks.loaded && p.rev == ks.live && !p.force {
		// The key went back to the live revision (say, a rollback was
		// triggered and the newer run failed): nothing to deploy.
		ks.pending = nil
		m.disarm(p)
		m.dequeue(ks)
		evs.add(EventUnchanged, ks.key, p.rev, now)
		settle(p, Unchanged, nil, now)
		return nil
	}
	if at := ks.startAt(p); !at.IsZero() && at.After(now.get()) {
		m.arm(ks, p, at, now.get())
		return nil
	}
	m.disarm(p)
	if !m.takeSlot(ks) {
		return nil
	}
	return m.start(ks, now, evs)
}

// takeSlot takes a concurrency slot for ks, or queues ks for one.
func (m *Manager) takeSlot(ks *keyState) bool {
	if m.maxConcurrent == 0 {
		return true
	}
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	if m.slotHook != nil {
		m.slotHook(ks.key)
	}
	if m.active < m.maxConcurrent && len(m.queue) == 0 {
		m.active++
		return true
	}
	if !ks.queued {
		ks.queued = true
		m.queue = append(m.queue, ks)
	}
	return false
}

// dequeue takes ks out of the queue for a slot: it has nothing to start.
func (m *Manager) dequeue(ks *keyState) {
	if m.maxConcurrent == 0 {
		return
	}
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	if ks.queued {
		ks.queued = false
		if i := slices.Index(m.queue, ks); i >= 0 {
			m.queue = slices.Delete(m.queue, i, i+1)
		}
	}
}

// releaseSlot gives up the slot that key from held. If a key waits for
// one, the slot passes to it, and releaseSlot returns it for the caller to
// hand the slot over.
// Lock order: it may be called with a shard locked.
func (m *Manager) releaseSlot(from *keyState) *keyState {
	if m.maxConcurrent == 0 {
		return nil
	}
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	if m.slotHook != nil {
		m.slotHook(from.key)
	}
	if len(m.queue) > 0 {
		ks := m.queue[0]
		m.queue[0] = nil
		m.queue = m.queue[1:]
		ks.queued = false
		return ks
	}
	m.active--
	return nil
}

// handOver starts the pending run of ks with the slot passed to it. If ks
// has nothing to start any more, the slot passes on. It is called with no
// shard locked and returns the run the caller must execute.
func (m *Manager) handOver(ks *keyState, now *instant, evs *events) (*keyState, *run) {
	for ks != nil {
		if testHookHandOver != nil {
			testHookHandOver(ks.key)
		}
		sh := ks.shard
		sh.mu.Lock()
		if ks.pending != nil && ks.running == nil && !m.closed.Load() {
			// A trigger that took the lock since the slot was passed
			// may have queued ks again: it needs no place any more.
			m.dequeue(ks)
			r := m.start(ks, now, evs)
			sh.mu.Unlock()
			return ks, r
		}
		sh.mu.Unlock()
		ks = m.releaseSlot(ks)
	}
	return nil, nil
}

// testHookHandOver, if set, runs in handOver before it locks the shard of
// the key it passes a slot to: tests use it to trigger that key just then.
var testHookHandOver func(key string)

// startAt is the earliest time the pending run p may start.
func (ks *keyState) startAt(p *run) time.Time {
	pol := ks.policy
	var at time.Time
	if p.wait != nil {
		at = p.wait.retryAt
	}
	if pol.MinInterval > 0 && !ks.lastStarted.IsZero() {
		at = later(at, ks.lastStarted.Add(pol.MinInterval))
	}
	if pol.Quiet > 0 {
		quiet := p.wait.last.Add(pol.Quiet)
		if pol.MaxDelay > 0 {
			if bound := p.wait.first.Add(pol.MaxDelay); bound.Before(quiet) {
				quiet = bound
			}
		}
		at = later(at, quiet)
	}
	return at
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// start moves the pending run of ks to running and takes a concurrency slot.
func (m *Manager) start(ks *keyState, now *instant, evs *events) *run {
	p := ks.pending
	m.disarm(p) // it may have waited for a slot and a timer at once
	ks.pending = nil
	ks.running = p
	if !ks.loaded {
		p.needLoad = true // the goroutine reads the Store, then begins
		return p
	}
	m.begin(ks, p, now, evs)
	return p
}

// begin starts an attempt of the running run r.
func (m *Manager) begin(ks *keyState, r *run, now *instant, evs *events) {
	r.attempts++
	ks.lastStarted = now.get()
	if r.attempts == 1 {
		r.started = ks.lastStarted
	}
	ks.runs++
	r.ctx, r.cancel = m.attemptContext(ks.policy)
	if r.canceled && r.cancel != nil {
		r.cancel() // a newer revision arrived while the Store was read
	}
	if ev := evs.add(EventStarted, ks.key, r.rev, now); ev != nil {
		ev.Attempt = int(r.attempts)
	}
	m.watchSlow(ks, r)
}

// attemptContext returns the context of one attempt. Runs that need no
// timeout and no cancel-in-progress share the Manager's base context, so
// they cost no allocation.
func (m *Manager) attemptContext(pol *Policy) (context.Context, context.CancelFunc) {
	switch {
	case pol.Timeout > 0:
		if _, system := m.clock.(SystemClock); system {
			return context.WithTimeout(m.base, pol.Timeout)
		}
		return clockctx.WithTimeout(m.base, pol.Timeout, m.afterFunc, m.wg.Add)
	case pol.CancelInProgress:
		return context.WithCancel(m.base)
	}
	return nil, nil
}

func (m *Manager) afterFunc(d time.Duration, f func()) func() bool {
	return m.clock.AfterFunc(d, f).Stop
}

// finish records the end of an attempt of the running run r, which returned
// err.
func (m *Manager) finish(ks *keyState, r *run, err error, now *instant, evs *events) {
	ks.running = nil
	ks.lastFinished = now.get()
	dur := ks.lastFinished.Sub(ks.lastStarted)
	r.ctx, r.cancel = nil, nil
	m.unwatchSlow(ks)
	if err == nil {
		ks.live, ks.loaded = r.rev, true
		if ks.errs != nil {
			ks.errs.last = nil
		}
		ks.deployed++
		ks.recordSuccess(dur)
		if ev := evs.add(EventSucceeded, ks.key, r.rev, now); ev != nil {
			ev.Attempt, ev.Duration = int(r.attempts), dur
		}
		if p := ks.pending; p != nil && p.rev == r.rev && !p.force {
			// Triggered again while it ran: this run covers it.
			ks.pending = nil
			m.disarm(p)
			absorb(r, p)
		}
		settle(r, Deployed, nil, now)
		return
	}

	ks.err().last = err
	ks.failed++
	switch {
	case m.closed.Load():
		o := Failed
		if m.base.Err() != nil { // Close canceled it
			o, err = Aborted, fmt.Errorf("%w: %w", ErrClosed, err)
			if ev := evs.add(EventAborted, ks.key, r.rev, now); ev != nil {
				ev.Attempt, ev.Err, ev.Duration = int(r.attempts), err, dur
			}
		} else {
			evs.failed(ks, r, err, dur, now)
		}
		settle(r, o, err, now)
	case ks.pending != nil:
		// A newer revision is pending: it replaces any retry, and the
		// tickets of r settle with it.
		evs.failed(ks, r, err, dur, now)
		absorb(ks.pending, r)
	case int(r.attempts) < ks.policy.Retry.MaxAttempts:
		delay := ks.policy.Retry.backoff(int(r.attempts))
		if j := ks.policy.Retry.Jitter; j > 0 {
			delay -= time.Duration(j * rand.Float64() * float64(delay))
		}
		r.w().retryAt = now.get().Add(delay)
		r.canceled = false
		ks.pending = r
		if ev := evs.add(EventRetrying, ks.key, r.rev, now); ev != nil {
			ev.Attempt, ev.Err, ev.Duration, ev.Delay = int(r.attempts), err, dur, delay
		}
	default:
		evs.failed(ks, r, err, dur, now)
		settle(r, Failed, err, now)
	}
}

// finishUnchanged ends the running run r without an attempt: the Store says
// its revision is live already.
func (m *Manager) finishUnchanged(ks *keyState, r *run, now *instant, evs *events) {
	ks.running = nil
	evs.add(EventUnchanged, ks.key, r.rev, now)
	if p := ks.pending; p != nil && p.rev == r.rev && !p.force {
		ks.pending = nil
		m.disarm(p)
		absorb(r, p)
	}
	settle(r, Unchanged, nil, now)
}

// abort drops the pending run of ks (Close).
func (m *Manager) abort(ks *keyState, now *instant, evs *events) {
	p := ks.pending
	if p == nil {
		return
	}
	ks.pending = nil
	m.disarm(p)
	if ev := evs.add(EventAborted, ks.key, p.rev, now); ev != nil {
		ev.Attempt = int(p.attempts)
	}
	settle(p, Aborted, ErrClosed, now)
}

// arm makes sure a timer fires for ks's pending run p no later than at.
func (m *Manager) arm(ks *keyState, p *run, at, now time.Time) {
	w := p.w()
	if w.timer != nil {
		if !w.timerAt.After(at) {
			return // it fires in time, and fire schedules again
		}
		if !w.timer.Stop() {
			return // firing right now: fire schedules again
		}
		m.wg.Done()
	}
	w.timerGen++
	gen := w.timerGen
	w.timerAt = at
	m.wg.Add(1)
	w.timer = m.clock.AfterFunc(at.Sub(now), func() { m.fire(ks, p, gen) })
}

func (m *Manager) disarm(p *run) {
	w := p.wait
	if w == nil {
		return
	}
	if w.timer != nil && w.timer.Stop() {
		m.wg.Done()
	}
	w.timer = nil
}

// fire is the timer callback of a pending run that waited for its start.
func (m *Manager) fire(ks *keyState, p *run, gen uint32) {
	defer m.wg.Done()
	evs := events{on: m.notify, seq: &m.seq}
	ks.shard.mu.Lock()
	if w := p.wait; w.timer == nil || w.timerGen != gen || ks.pending != p {
		ks.shard.mu.Unlock()
		return
	}
	p.wait.timer = nil
	now := instant{c: m.clock}
	r := m.schedule(ks, &now, &evs)
	if r != nil {
		m.wg.Add(1)
	}
	ks.shard.mu.Unlock()
	if r != nil {
		defer m.spawn(ks, r) // also if an observer calls runtime.Goexit
	}
	m.emit(&evs)
}

// status is the Status of ks.
func (m *Manager) status(ks *keyState) Status {
	s := Status{
		Key: ks.key, Live: ks.live,
		Runs: int(ks.runs), Deployed: int(ks.deployed), Failures: int(ks.failed), Superseded: int(ks.replaced),
		LastStarted: ks.lastStarted, LastFinished: ks.lastFinished,
		Baseline: ks.baseline(), Slow: ks.slowNow(),
	}
	if ks.errs != nil {
		s.LastErr, s.StoreErr = ks.errs.last, ks.errs.store
	}
	if r := ks.running; r != nil {
		s.Running, s.Attempt = r.rev, int(r.attempts)
	}
	if p := ks.pending; p != nil {
		s.Pending = p.rev
		if m.maxConcurrent > 0 {
			m.slotMu.Lock()
			s.Queued = ks.queued
			m.slotMu.Unlock()
		}
		if ks.running == nil {
			s.Attempt = int(p.attempts)
			s.NextStart = ks.startAt(p)
		}
	}
	return s
}

// Status is a snapshot of one key.
type Status struct {
	Key     string   // the key this is the state of
	Live    Revision // last successfully deployed; empty until known
	Running Revision // empty when no deploy runs
	Pending Revision // empty when nothing waits; a failed revision waiting for its retry is pending
	LastErr error    // error of the last finished attempt; nil after a success

	// Attempt is the attempt of the running deploy, or the attempts made
	// so far by a pending revision waiting for its retry.
	Attempt    int
	Queued     bool      // the pending revision waits for a slot (WithMaxConcurrent)
	NextStart  time.Time // earliest start of the pending revision by its policy (debounce, min interval, retry); zero or past when due
	Runs       int       // attempts started
	Deployed   int       // attempts that succeeded
	Failures   int       // attempts that failed
	Superseded int       // pending revisions replaced by a newer one before they ran
	StoreErr   error     // last error of the Store for this key, if any

	LastStarted  time.Time // start of the last attempt
	LastFinished time.Time // end of the last attempt

	Baseline Baseline // how long the key's successful deploys took
	Slow     bool     // the running attempt was reported slow (WithSlowDeploy)
}
