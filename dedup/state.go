package dedup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
	"weak"

	"github.com/dedupdeploy/dedupdeploy/internal/clockctx"
	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
)

// This file applies the per-key state machine. A key holds at most one
// running run and one pending run. The rules (what a trigger joins or
// supersedes, when a pending run may start, what the end of an attempt
// does) are internal/keyrules, written once for this Manager and pgdedup's.
// A locked section builds the rules' view of its key once, in its shard's
// scratch State (keyState.view), and passes it through the transitions
// below; each calls the rule, copies what it changed back into the key
// (keyState.set) and performs what the rule said on the Manager's own
// objects: runs and their tickets, timers, concurrency slots, contexts,
// events. Every transition is called with the lock of the key's shard held
// and never calls user code except the Clock.
//
//	request:  keyrules.Request: a trigger joins the pending or running
//	          revision, is found live already, replaces (supersedes) the
//	          pending revision, or becomes the pending revision.
//	schedule: keyrules.Schedule: the pending run starts once nothing of
//	          the key runs, its start time (debounce, min interval, retry
//	          backoff) has come and a concurrency slot is free; until then
//	          a timer or the FIFO queue of keys holds it.
//	start:    keyrules.Start: the pending run becomes the running run.
//	loaded:   keyrules.Loaded (manager.go): what the Store said before the
//	          key's first deploy.
//	begin:    keyrules.Begin: an attempt of the running run gets its
//	          context and starts.
//	finish:   keyrules.Finish: the attempt ended: the revision is live, or
//	          the failure is absorbed by a newer pending revision, retried,
//	          or final.
//	abort:    keyrules.Abort: Close drops the pending run.

// keyState is the state of one key. An idle key holds only this struct.
type keyState struct {
	key     string
	shard   *shard  // whose lock guards this state
	policy  *policy // interned: shared by keys with an equal policy (see Manager.intern)
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
	absorbed []weak.Pointer[run] // runs whose tickets this run settles too, while a ticket holds them
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
	if r.attempts == 0 {
		// Settled without an attempt of its revision (a failed run that
		// waited for its retry and was superseded starts afresh, at 0).
		r.started = r.finished
	}
	r.by = r
	if r.done != nil {
		close(r.done)
	}
	for _, w := range r.absorbed { // flat: absorb moved theirs here
		if a := w.Value(); a != nil {
			a.by = r
			close(a.done)
		}
	}
	r.absorbed = nil
}

// absorb makes the tickets of run a settle with run r: a was superseded by
// r (a failed or canceled attempt replaced by r's newer revision, or a
// pending revision that r deployed already). The list stays flat (what a
// absorbed moves to r, the shorter list onto the longer), so settling needs
// no recursion. It holds runs weakly: a run that no ticket waits on is not
// kept, and one whose tickets were all dropped is collected, so a key's
// memory is bounded by the tickets held, not by how many runs failed before
// (Trigger-and-drop callers included). Dead entries are compacted away
// whenever the list reaches a power of two.
func absorb(r, a *run) {
	if len(a.absorbed) > len(r.absorbed) {
		r.absorbed, a.absorbed = a.absorbed, r.absorbed
	}
	r.absorbed = append(r.absorbed, a.absorbed...)
	a.absorbed = nil
	if a.done == nil {
		return
	}
	r.absorbed = append(r.absorbed, weak.Make(a))
	if n := len(r.absorbed); n >= 16 && n&(n-1) == 0 {
		r.absorbed = slices.DeleteFunc(r.absorbed, func(w weak.Pointer[run]) bool { return w.Value() == nil })
	}
}

// view returns the rules' view of ks, built in its shard's scratch State
// (shard.rules): the caller holds the shard's lock, and passes the view
// through the transitions of its locked section, which keep it and ks in
// step.
//
// The runs' times matter only to a timed policy (keyrules.Policy.Timed):
// for any other, they are zero in every run and no rule sets them. So a
// view for such a key leaves them alone, unless the view before was for a
// timed key (shard.rulesTimed) and may have left some set.
func (ks *keyState) view() *keyrules.State {
	sh := ks.shard
	s := &sh.rules
	s.Live, s.Loaded, s.LastStarted = string(ks.live), ks.loaded, ks.lastStarted
	if ks.policy.timed || sh.rulesTimed {
		ks.running.view(&s.Running)
		ks.pending.view(&s.Pending)
		sh.rulesTimed = ks.policy.timed
		return s
	}
	ks.running.viewUntimed(&s.Running)
	ks.pending.viewUntimed(&s.Pending)
	return s
}

// view fills v with the rules' view of r (nil: no run), field by field: a
// composite literal goes through a temporary whose copy stalls the store
// forwarding, and costs more than the rest of a trigger.
func (r *run) view(v *keyrules.Run) {
	if r == nil {
		*v = keyrules.Run{}
		return
	}
	v.Rev, v.Force, v.Attempts, v.Canceled, v.Loading = string(r.rev), r.force, int(r.attempts), r.canceled, r.needLoad
	if w := r.wait; w != nil {
		v.First, v.Last, v.RetryAt = w.first, w.last, w.retryAt
	} else {
		v.First, v.Last, v.RetryAt = time.Time{}, time.Time{}, time.Time{}
	}
}

// viewUntimed is view for a run of a key whose policy is not timed: its
// times are zero already.
func (r *run) viewUntimed(v *keyrules.Run) {
	if r == nil {
		v.Rev, v.Force, v.Attempts, v.Canceled, v.Loading = "", false, 0, false, false
		return
	}
	v.Rev, v.Force, v.Attempts, v.Canceled, v.Loading = string(r.rev), r.force, int(r.attempts), r.canceled, r.needLoad
}

// set copies the state s that a rule returned back into ks, whose running
// and pending runs the caller has already moved as the rule said.
func (ks *keyState) set(s *keyrules.State) {
	ks.live, ks.loaded, ks.lastStarted = Revision(s.Live), s.Loaded, s.LastStarted
	ks.setRunning(s)
	ks.setPending(s)
}

// setRunning copies the running run of s back into ks: all that Request
// may change when it forces or cancels the running run.
func (ks *keyState) setRunning(s *keyrules.State) {
	r := ks.running
	if r == nil {
		return
	}
	// The deploy goroutine reads the running run's revision and needLoad
	// without the lock: a running run's revision never changes, and
	// needLoad is written only when it does.
	v := &s.Running
	if r.needLoad != v.Loading {
		r.needLoad = v.Loading
	}
	r.force, r.attempts, r.canceled = v.Force, int32(v.Attempts), v.Canceled
	r.setTimes(v, ks.policy)
}

// setPending copies the pending run of s back into ks: all that Request
// changes when it joins, supersedes or queues a pending revision.
func (ks *keyState) setPending(s *keyrules.State) {
	p := ks.pending
	if p == nil {
		return
	}
	v := &s.Pending
	p.rev, p.force, p.attempts, p.canceled, p.needLoad = Revision(v.Rev), v.Force, int32(v.Attempts), v.Canceled, v.Loading
	p.setTimes(v, ks.policy)
}

// setTimes copies the times of v back into r.wait, made only when the
// policy debounces or the run waits for its retry.
func (r *run) setTimes(v *keyrules.Run, pol *policy) {
	if r.wait != nil || pol.Quiet > 0 || !v.RetryAt.IsZero() {
		w := r.w()
		w.first, w.last, w.retryAt = v.First, v.Last, v.RetryAt
	}
}

// request handles a trigger of rev for ks. It returns the run a ticket
// should hold (nil when rev is live already, or when the caller does not
// wait), a run the caller must execute, and what the trigger did.
func (m *Manager) request(ks *keyState, s *keyrules.State, rev Revision, force, wait bool, now *instant, evs *events) (ticket, start *run, _ did) {
	// The rules read the time only for a timed policy (keyrules.Policy.Timed),
	// and time.Now costs as much as the rest of a trigger: read it only then.
	var t time.Time
	if ks.policy.timed {
		t = now.get()
	}
	q := s.Request(&ks.policy.rules, t, string(rev), force)
	switch q.Action {
	// Request changes only the runs it names (keyrules' doc): copy back
	// only those, on the hottest path of the Manager.
	case keyrules.ActionJoinedPending:
		p := ks.pending
		ks.setPending(s)
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Attempt = int(p.attempts)
		}
		return p.waiter(wait), nil, did{action: ActionJoinedPending}
	case keyrules.ActionJoinedRunning:
		r := ks.running
		ks.setRunning(s) // forced, if the Store is being read
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Attempt = int(r.attempts)
		}
		return r.waiter(wait), nil, did{action: ActionJoinedRunning}
	case keyrules.ActionUnchanged:
		evs.add(EventUnchanged, ks.key, rev, now)
		return nil, nil, did{action: ActionUnchanged}
	}

	p := ks.pending
	replaced := Revision(q.Replaced)
	if p != nil {
		// Supersede: rev replaced the pending revision in place, and
		// the tickets of the old one stay with the run.
		ks.replaced++
		if ev := evs.add(EventCoalesced, ks.key, rev, now); ev != nil {
			ev.Replaced = replaced
		}
		ks.setPending(s)
		if s.Idle() { // behind a running deploy, the common case: no call
			return p.waiter(wait), nil, did{action: ActionQueued, replaced: replaced}
		}
		return m.scheduled(ks, s, p, wait, replaced, now, evs)
	}

	// Queue: rev became the pending revision.
	p = &run{}
	ks.pending = p
	ks.setPending(s)
	evs.add(EventQueued, ks.key, rev, now)
	if q.Cancel {
		ks.setRunning(s)
		r := ks.running
		if r.cancel != nil {
			r.cancel()
		}
		if ev := evs.add(EventCanceled, ks.key, rev, now); ev != nil {
			ev.Replaced, ev.Attempt = r.rev, int(r.attempts)
		}
	}
	return m.scheduled(ks, s, p, wait, "", now, evs)
}

// did is what a trigger did, for its Ticket.
type did struct {
	ks       *keyState
	action   Action
	replaced Revision
}

// scheduled schedules the pending run p of ks, which a trigger just queued
// or changed, and returns what request returns.
func (m *Manager) scheduled(ks *keyState, s *keyrules.State, p *run, wait bool, replaced Revision, now *instant, evs *events) (ticket, start *run, d did) {
	ticket = p.waiter(wait)
	start = m.schedule(ks, s, now, evs)
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
// caller must execute, if one started. s is the rules' view of ks.
func (m *Manager) schedule(ks *keyState, s *keyrules.State, now *instant, evs *events) *run {
	if m.closed.Load() {
		return nil // nothing starts once Close began
	}
	var t time.Time
	if ks.policy.timed { // as in request
		t = now.get()
	}
	sch := s.Schedule(&ks.policy.rules, t)
	switch sch.Kind {
	case keyrules.BackToLive:
		// The key went back to the live revision (say, a rollback was
		// triggered and the newer run failed): nothing to deploy.
		p := ks.pending
		ks.pending = nil
		m.disarm(p)
		m.dequeue(ks)
		evs.add(EventUnchanged, ks.key, p.rev, now)
		settle(p, Unchanged, nil, now)
	case keyrules.Wait:
		m.arm(ks, ks.pending, sch.At, now.get())
	case keyrules.Due:
		m.disarm(ks.pending)
		if m.takeSlot(ks) {
			return m.start(ks, s, now, evs)
		}
	}
	return nil
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
			s := ks.view()
			r := m.start(ks, s, now, evs)
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

// start moves the pending run of ks, which has a slot, to running.
func (m *Manager) start(ks *keyState, s *keyrules.State, now *instant, evs *events) *run {
	needLoad := s.Start()
	p := ks.pending
	m.disarm(p) // it may have waited for a slot and a timer at once
	ks.pending, ks.running = nil, p
	ks.set(s)
	if needLoad {
		return p // the goroutine reads the Store, then begins
	}
	m.begin(ks, s, p, now, evs)
	return p
}

// begin starts an attempt of the running run r.
func (m *Manager) begin(ks *keyState, s *keyrules.State, r *run, now *instant, evs *events) {
	s.Begin(now.get())
	ks.set(s)
	if r.attempts == 1 {
		r.started = ks.lastStarted
	}
	ks.runs++
	r.ctx, r.cancel = m.attemptContext(&ks.policy.Policy)
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
func (m *Manager) finish(ks *keyState, s *keyrules.State, r *run, err error, now *instant, evs *events) {
	a := keyrules.Attempt{Failed: err != nil}
	if a.Failed {
		a.Closed = m.closed.Load()
		a.Aborted = a.Closed && m.base.Err() != nil // Close canceled it
		if ks.policy.Retry.Jitter > 0 {
			a.Jitter = rand.Float64()
		}
	}
	f := s.Finish(&ks.policy.rules, now.get(), a)
	ks.running = nil
	ks.lastFinished = now.get()
	dur := ks.lastFinished.Sub(ks.lastStarted)
	r.ctx, r.cancel = nil, nil
	m.unwatchSlow(ks)
	var covered *run
	if f.AbsorbPending {
		// Triggered again while it ran: this run covers it.
		covered, ks.pending = ks.pending, nil
		m.disarm(covered)
	}
	if f.Retry {
		ks.pending = r
	}
	ks.set(s)

	if !a.Failed {
		if ks.errs != nil {
			ks.errs.last = nil
		}
		ks.deployed++
		ks.recordSuccess(dur)
		if ev := evs.add(EventSucceeded, ks.key, r.rev, now); ev != nil {
			ev.Attempt, ev.Duration = int(r.attempts), dur
		}
		if covered != nil {
			absorb(r, covered)
		}
		settle(r, Deployed, nil, now)
		return
	}

	ks.err().last = err
	ks.failed++
	switch {
	case f.Outcome == keyrules.Aborted:
		err = fmt.Errorf("%w: %w", ErrClosed, err)
		if ev := evs.add(EventAborted, ks.key, r.rev, now); ev != nil {
			ev.Attempt, ev.Err, ev.Duration = int(r.attempts), err, dur
		}
		settle(r, Aborted, err, now)
	case f.Outcome == keyrules.Failed:
		evs.failed(ks, r, err, dur, now)
		settle(r, Failed, err, now)
	case f.IntoPending:
		// A newer revision is pending: it replaces any retry, and the
		// tickets of r settle with it.
		evs.failed(ks, r, err, dur, now)
		absorb(ks.pending, r)
	case f.Retry:
		if ev := evs.add(EventRetrying, ks.key, r.rev, now); ev != nil {
			ev.Attempt, ev.Err, ev.Duration, ev.Delay = int(r.attempts), err, dur, f.Delay
		}
	}
}

// abort drops the pending run of ks (Close).
func (m *Manager) abort(ks *keyState, now *instant, evs *events) {
	s := ks.view()
	dropped, ok := s.Abort()
	if !ok {
		return
	}
	p := ks.pending
	ks.pending = nil
	ks.set(s)
	m.disarm(p)
	if ev := evs.add(EventAborted, ks.key, p.rev, now); ev != nil {
		ev.Attempt = dropped.Attempts
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
	s := ks.view()
	r := m.schedule(ks, s, &now, &evs)
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
			v := ks.view()
			s.NextStart = v.StartAt(&ks.policy.rules)
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
