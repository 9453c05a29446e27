package pgdedup

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
)

type fenceKey struct{}

// Fence returns the fencing token of the attempt whose context ctx is (or
// derives from): a number that strictly increases with every attempt of
// the key, across all replicas. A Deployer hands it to a target that can
// check it (a label compared on write, a conditional update) so that a
// stale replica, one that lost its lease while it stalled, can never
// overwrite what a newer attempt wrote. ok is false outside an attempt.
func Fence(ctx context.Context) (int64, bool) {
	f, ok := ctx.Value(fenceKey{}).(int64)
	return f, ok
}

// claim is an attempt this replica claimed: it holds the key's lease with
// this fence.
type claim struct {
	key     string
	rev     dedup.Revision
	fence   int64
	attempt int
	sent    time.Time // when the claiming transaction began: the lease ends ttl after, at the latest
	pol     *policy   // the key's policy the claim was made under
}

// attempt is a running attempt of this replica.
type attempt struct {
	fence     int64
	abandoned atomic.Bool   // tests: stop renewing, as a replica that hangs
	poke      chan struct{} // renew now: a notification said it may be canceled
	cancel    context.CancelCauseFunc
	// leaseFrom is when the last successful claim or renewal was sent:
	// the lease ends ttl after it, at the latest. Written by renew only,
	// read once renew has returned.
	leaseFrom time.Time
}

// execute runs the attempt c and records its end. It holds a gate token
// (given by the claim), which it gives back then; an attempt that the
// recording claims next runs in a goroutine of its own.
func (m *Manager) execute(c claim) {
	defer m.gate.leave()
	m.runAttempt(c)
}

func (m *Manager) runAttempt(c claim) {
	// c.pol is the policy the claim was made under: the key policy
	// function is not asked again, so its Timeout is the one that
	// applies, and a function that fails now cannot leave the attempt
	// without one.
	pol := c.pol
	ctx, cancel := context.WithCancelCause(m.base)
	defer cancel(nil)
	ctx = context.WithValue(ctx, fenceKey{}, c.fence)
	var cancelTimeout context.CancelFunc = func() {}
	if pol.p.Timeout > 0 {
		ctx, cancelTimeout = context.WithTimeout(ctx, pol.p.Timeout)
	}
	a := &attempt{fence: c.fence, poke: make(chan struct{}, 1), cancel: cancel, leaseFrom: c.sent}
	m.mu.Lock()
	m.attempts[c.key] = a
	m.mu.Unlock()

	done := make(chan struct{})
	renewed := make(chan struct{})
	go m.renew(c, a, done, renewed)
	start := time.Now()
	err := m.callDeploy(ctx, c.key, c.rev)
	cancelTimeout()
	close(done)
	<-renewed
	m.mu.Lock()
	if m.attempts[c.key] == a {
		delete(m.attempts, c.key)
	}
	m.mu.Unlock()
	lost := errors.Is(context.Cause(ctx), ErrLeaseLost)
	// An attempt that failed because Close or the lease took its context
	// away did not fail on its own: its key is handed back, to run again.
	interrupted := err != nil && (m.base.Err() != nil || lost)
	dur := time.Since(start)

	if a.abandoned.Load() {
		return // tests: the replica died with it; another one takes the key over
	}

	// Record the end. The database may be unreachable for a while: keep
	// trying as long as the record can still matter (it is fenced, so a
	// late one is rejected, never harmful), then leave the key to the
	// replica that takes it over when the lease expires.
	giveUp := time.Now().Add(2 * m.cfg.lease)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		qctx, qcancel := context.WithTimeout(context.Background(), min(queryTimeout, m.cfg.lease))
		_, ferr := m.inKey(qctx, c.key, false, func(r *row, pol *policy) error {
			if !r.s.Running.Active() || r.fence != c.fence || r.owner != m.cfg.replica {
				return fmt.Errorf("%w: %q attempt %d with fence %d; the key is at fence %d", ErrFenced, c.key, c.attempt, c.fence, r.fence)
			}
			if interrupted {
				m.interrupt(r, pol)
				return nil
			}
			m.finish(r, pol, err, dur)
			return nil
		})
		qcancel()
		switch {
		case ferr == nil:
			return // a next attempt it claimed runs in a goroutine of its own
		case errors.Is(ferr, ErrFenced):
			m.deliver(dedup.Event{Kind: dedup.EventAborted, Key: c.key, Revision: c.rev, Attempt: c.attempt, Err: ferr, Duration: dur})
			return
		}
		if time.Now().After(giveUp) {
			m.deliver(dedup.Event{Kind: dedup.EventAborted, Key: c.key, Revision: c.rev, Attempt: c.attempt,
				Err: fmt.Errorf("pgdedup: the end of the attempt could not be recorded (lease lost: %v): %w", lost, ferr), Duration: dur})
			return
		}
		if m.base.Err() != nil && time.Now().After(a.leaseFrom.Add(m.cfg.lease)) {
			return // Close gave up and the lease has ended: another replica takes the key over
		}
		time.Sleep(wait) // backoff between attempts to reach the database
	}
}

// callDeploy runs the Deployer, turning a panic into a *dedup.PanicError.
func (m *Manager) callDeploy(ctx context.Context, key string, rev dedup.Revision) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &dedup.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return m.d.Deploy(ctx, key, rev)
}

// renew extends the lease of attempt c every third of the lease until done
// is closed. If the lease is lost (taken over), or cannot be renewed before
// it ends, it cancels the attempt; if cancel-in-progress asked for it, it
// cancels the attempt too but keeps the lease until the attempt returns.
func (m *Manager) renew(c claim, a *attempt, done <-chan struct{}, renewed chan<- struct{}) {
	defer close(renewed)
	ttl := m.cfg.lease
	// The lease ends ttl after the server handled the claim or renewal;
	// this replica counts from before it sent it, less a margin for clock
	// rate and timer delays, so its attempt is canceled before any other
	// replica may take the key over.
	margin := ttl / 10
	deadline := c.sent.Add(ttl - margin)
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	expire := time.NewTimer(time.Until(deadline))
	defer expire.Stop()
	interval := fmt.Sprintf("%d microseconds", ttl.Microseconds())
	for {
		select {
		case <-done:
			return
		case <-expire.C:
			a.cancel(ErrLeaseLost)
			return
		case <-tick.C:
		case <-a.poke:
		}
		if a.abandoned.Load() {
			continue
		}
		sent := time.Now()
		bound := sent.Add(ttl / 3)
		if deadline.Before(bound) {
			bound = deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), bound)
		var canceled bool
		err := m.pool.QueryRow(ctx, m.q.leaseRenew, c.key, c.fence, interval, m.cfg.replica).Scan(&canceled)
		cancel()
		switch {
		case err == nil:
			a.leaseFrom = sent
			deadline = sent.Add(ttl - margin)
			expire.Reset(time.Until(deadline))
			if canceled {
				a.cancel(errCanceledNewer)
			}
		case isNoRows(err):
			a.cancel(ErrLeaseLost) // taken over: a newer fence holds the key
			return
		}
	}
}

// finish applies the end of r's running attempt (err nil: it succeeded).
func (m *Manager) finish(r *row, pol *policy, err error, dur time.Duration) {
	rev, run, attempts, started := r.s.Running.Rev, r.runningRun, r.s.Running.Attempts, r.runningStarted
	var f keyrules.Finished
	r.s, f = keyrules.Finish(r.s, &pol.k, r.now, keyrules.Attempt{Failed: err != nil, Jitter: rand.Float64()})
	r.lastFinished = r.now
	r.owner, r.leaseUntil = "", time.Time{}
	errText := ""
	if err == nil {
		r.deployed++
		r.lastErr = ""
		r.event(m, dedup.Event{Kind: dedup.EventSucceeded, Revision: dedup.Revision(rev), Attempt: attempts, Duration: dur})
	} else {
		r.failures++
		errText = err.Error()
		r.lastErr = errText
	}
	switch {
	case f.Outcome != 0:
		r.results = append(r.results, result{run: run, rev: rev, outcome: dedup.Outcome(f.Outcome), err: errText, attempts: attempts, started: started})
		if err != nil {
			r.errs = map[int64]error{run: err}
			r.event(m, dedup.Event{Kind: dedup.EventFailed, Revision: dedup.Revision(rev), Attempt: attempts, Err: err, Duration: dur})
		}
		if f.AbsorbPending {
			r.results = append(r.results, result{run: r.pendingRun, by: run})
			r.pendingRun = 0
		}
	case f.IntoPending:
		r.results = append(r.results, result{run: run, by: r.pendingRun})
		r.event(m, dedup.Event{Kind: dedup.EventFailed, Revision: dedup.Revision(rev), Attempt: attempts, Err: err, Duration: dur})
	case f.Retry:
		r.pendingRun, r.pendingStarted = run, started
		r.event(m, dedup.Event{Kind: dedup.EventRetrying, Revision: dedup.Revision(rev), Attempt: attempts, Err: err, Duration: dur, Delay: f.Delay})
	}
	r.runningRun, r.runningStarted = 0, time.Time{}
	m.schedule(r, pol)
}

// interrupt gives back r's running attempt, lost without an end: its
// replica died (takeover) or closed.
func (m *Manager) interrupt(r *row, pol *policy) {
	run, started := r.runningRun, r.runningStarted
	rev, attempts := r.s.Running.Rev, r.s.Running.Attempts
	var f keyrules.Finished
	r.s, f = keyrules.Interrupt(r.s)
	r.owner, r.leaseUntil = "", time.Time{}
	switch {
	case f.IntoPending:
		r.results = append(r.results, result{run: run, by: r.pendingRun})
	case f.Retry:
		r.pendingRun, r.pendingStarted = run, started
	}
	r.runningRun, r.runningStarted = 0, time.Time{}
	r.event(m, dedup.Event{Kind: dedup.EventAborted, Revision: dedup.Revision(rev), Attempt: attempts, Err: ErrLeaseLost})
	m.schedule(r, pol)
}
