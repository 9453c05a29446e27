// Package keyrules is the per-key state machine of dedupdeploy, written once
// for every Manager: the in-memory dedup.Manager applies it under a shard
// lock, pgdedup applies it inside a transaction that holds the key's row
// lock. Each function takes a key's State (a value) and what happened, and
// returns the new State and what the caller must do: start an attempt,
// settle or move tickets, arm a timer, cancel the running attempt.
//
// Nothing here locks, reads a clock, draws a random number or does I/O: the
// caller passes the time and the jitter, so one input gives one output, and
// no function allocates.
//
// A key holds at most one running run and one pending run. A run is one
// intended deploy of one revision, and the callers' tickets wait on it.
// The steps, in the order a run meets them:
//
//	Request:  a trigger joins the pending or running revision, is found
//	          live already, supersedes the pending revision in place, or
//	          becomes the pending revision (cancelling the running attempt
//	          with CancelInProgress).
//	Schedule: the pending run is due (the caller starts it when it has a
//	          slot), waits for its start time (debounce, min interval,
//	          retry backoff: arm a timer), or went back to the live
//	          revision (its tickets settle Unchanged).
//	Start:    the pending run becomes the running run.
//	Loaded:   before a key's first deploy, what the Store holds is known.
//	Begin:    an attempt of the running run starts.
//	Finish:   the attempt ended: the revision is live, or the failure is
//	          absorbed by a newer pending revision, retried, or final.
//	Abort:    Close drops the pending run.
//
// Example (a trigger with nothing running, then the end of its attempt):
//
//	s, eff := keyrules.Request(s, &pol, now, "v2", false)
//	s, sch := keyrules.Schedule(s, &pol, now)
//	if sch.Kind == keyrules.Due {
//		s, _ = keyrules.Start(s)
//		s = keyrules.Begin(s, now)
//		// ... deploy s.Running.Rev, then:
//		s, fin := keyrules.Finish(s, &pol, now, keyrules.Attempt{})
//	}
package keyrules

import (
	"math"
	"time"
)

// Policy is the part of a key's policy the rules need. Retry fields are
// used as given: the caller fills in defaults first.
type Policy struct {
	Quiet            time.Duration // debounce: start only after this long without a trigger
	MaxDelay         time.Duration // debounce bound after the first trigger of a burst; 0: none
	MinInterval      time.Duration // least time between the starts of two attempts
	MaxAttempts      int           // attempts of a run in all; 0 and 1: no retry
	RetryInitial     time.Duration // wait after the first failure
	RetryMax         time.Duration // cap of a wait
	RetryMultiplier  float64       // growth of the wait per failure
	RetryJitter      float64       // in [0, 1]: a wait is cut by up to this fraction
	CancelInProgress bool          // a newer revision cancels the running attempt
}

// Backoff is the wait after the given number of failed attempts (at least
// 1), cut by jitter (in [0, 1), the caller's random draw) times RetryJitter.
func (p *Policy) Backoff(failures int, jitter float64) time.Duration {
	d := float64(p.RetryInitial) * math.Pow(p.RetryMultiplier, float64(failures-1))
	delay := time.Duration(d)
	if d > float64(p.RetryMax) || math.IsInf(d, 0) || math.IsNaN(d) {
		delay = p.RetryMax
	}
	if p.RetryJitter > 0 {
		delay -= time.Duration(p.RetryJitter * jitter * float64(delay))
	}
	return delay
}

// Run is one intended deploy of one revision. Its zero value (empty Rev)
// means no run.
type Run struct {
	Rev      string // the revision; empty: no run
	Force    bool   // deploy even if Rev is live
	Attempts int    // attempts started so far
	Canceled bool   // its attempt's context was canceled for a newer revision

	// First and Last are the first and latest trigger of the burst the
	// pending run collects (debounce); RetryAt is the earliest next
	// attempt after a failure.
	First, Last, RetryAt time.Time
}

// Active reports whether r is a run.
func (r *Run) Active() bool { return r.Rev != "" }

// State is the state of one key.
type State struct {
	Live        string    // the last deployed revision; empty: none known
	Loaded      bool      // Live is known (the Store was read, or a deploy succeeded)
	Running     Run       // the running run; its attempt runs
	Pending     Run       // the pending run, waiting for the running one or its start time
	LastStarted time.Time // start of the last attempt; zero: none yet
}

// Action is what a trigger did, as dedup.Action says it (same values).
type Action uint8

// The actions of Request; Schedule turns ActionQueued into ActionStarted or
// ActionUnchanged.
const (
	ActionStarted Action = iota + 1
	ActionQueued
	ActionJoinedRunning
	ActionJoinedPending
	ActionUnchanged
)

// Requested is what Request did.
type Requested struct {
	Action   Action
	Replaced string // the pending revision it superseded (its tickets stay with the pending run)
	// Cancel: cancel the running attempt's context (CancelInProgress).
	Cancel bool
	// Reset: the pending run was a failed run waiting for its retry and
	// starts afresh as a new revision.
	Reset bool
}

// Request applies a trigger of rev (force: deploy even if live). The caller
// attaches the trigger's ticket to the run the Action names (none for
// ActionUnchanged: settle it at once), then calls Schedule.
func Request(s State, p *Policy, now time.Time, rev string, force bool) (State, Requested) {
	// Join: rev is where the key is heading.
	if s.Pending.Active() && s.Pending.Rev == rev {
		s.Pending.Force = s.Pending.Force || force
		s.Pending.Last = now
		return s, Requested{Action: ActionJoinedPending}
	}
	if !s.Pending.Active() && s.Running.Active() && !s.Running.Canceled && s.Running.Rev == rev {
		return s, Requested{Action: ActionJoinedRunning}
	}
	if !s.Pending.Active() && !s.Running.Active() && s.Loaded && s.Live == rev && !force {
		return s, Requested{Action: ActionUnchanged}
	}

	// Supersede: rev replaces the pending revision in place.
	if s.Pending.Active() {
		q := Requested{Action: ActionQueued, Replaced: s.Pending.Rev}
		s.Pending.Rev, s.Pending.Force, s.Pending.Last = rev, force, now
		if s.Pending.Attempts > 0 {
			// A failed run waiting for its retry: the newer revision
			// replaces the retry and starts afresh.
			s.Pending.Attempts, s.Pending.RetryAt, s.Pending.First = 0, time.Time{}, now
			q.Reset = true
		}
		return s, q
	}

	// Queue: rev becomes the pending revision.
	s.Pending = Run{Rev: rev, Force: force, First: now, Last: now}
	q := Requested{Action: ActionQueued}
	if s.Running.Active() && p.CancelInProgress && !s.Running.Canceled {
		s.Running.Canceled = true
		q.Cancel = true
	}
	return s, q
}

// ScheduleKind is what Schedule found.
type ScheduleKind uint8

// The results of Schedule.
const (
	// Idle: nothing pending, or a run is running.
	Idle ScheduleKind = iota
	// Due: the pending run may start now; the caller calls Start when it
	// has a slot for it.
	Due
	// Wait: the pending run may start at Scheduled.At; arm a timer.
	Wait
	// BackToLive: the pending revision is the live one (not forced): it
	// was dropped and its tickets settle Unchanged with Scheduled.Rev.
	BackToLive
)

// Scheduled is what Schedule found.
type Scheduled struct {
	Kind ScheduleKind
	At   time.Time // Wait
	Rev  string    // BackToLive: the dropped revision
}

// Schedule looks at the pending run when nothing of the key runs.
func Schedule(s State, p *Policy, now time.Time) (State, Scheduled) {
	if !s.Pending.Active() || s.Running.Active() {
		return s, Scheduled{}
	}
	if s.Loaded && s.Pending.Rev == s.Live && !s.Pending.Force {
		rev := s.Pending.Rev
		s.Pending = Run{}
		return s, Scheduled{Kind: BackToLive, Rev: rev}
	}
	if at := StartAt(s, p); !at.IsZero() && at.After(now) {
		return s, Scheduled{Kind: Wait, At: at}
	}
	return s, Scheduled{Kind: Due}
}

// StartAt is the earliest time the pending run may start (zero: at once).
func StartAt(s State, p *Policy) time.Time {
	at := s.Pending.RetryAt
	if p.MinInterval > 0 && !s.LastStarted.IsZero() {
		at = later(at, s.LastStarted.Add(p.MinInterval))
	}
	if p.Quiet > 0 {
		quiet := s.Pending.Last.Add(p.Quiet)
		if p.MaxDelay > 0 {
			if bound := s.Pending.First.Add(p.MaxDelay); bound.Before(quiet) {
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

// Start makes the pending run the running run. It reports needLoad when the
// live revision is not known yet: the caller reads its Store and calls
// Loaded; otherwise it calls Begin.
func Start(s State) (_ State, needLoad bool) {
	s.Running, s.Pending = s.Pending, Run{}
	return s, !s.Loaded
}

// Begin starts an attempt of the running run.
func Begin(s State, now time.Time) State {
	s.Running.Attempts++
	s.LastStarted = now
	return s
}

// Loaded records what the Store said before the key's first deploy (ok:
// it knew the key; failed: reading it failed, the key stays not loaded).
// If the running run turns out live already, it ends: Finished.Outcome is
// Unchanged. If a newer revision canceled it meanwhile, its tickets go to
// the pending run (Finished.IntoPending). Otherwise the caller calls Begin.
func Loaded(s State, rev string, ok, failed bool) (State, Finished) {
	if !failed {
		s.Loaded = true
		if ok {
			s.Live = rev
		}
	}
	if s.Loaded && rev == s.Running.Rev && !s.Running.Force {
		var f Finished
		s, f.AbsorbPending = absorb(s)
		s.Running = Run{}
		f.Outcome = Unchanged
		return s, f
	}
	if s.Running.Canceled && s.Pending.Active() {
		s.Running = Run{}
		return s, Finished{IntoPending: true}
	}
	return s, Finished{Begin: true}
}

// Outcome is how the running run's tickets settle, as dedup.Outcome says it
// (same values); zero: they do not settle.
type Outcome uint8

// The outcomes of Finish.
const (
	Deployed Outcome = iota + 1
	Superseded
	Unchanged
	Failed
	Aborted
)

// Attempt is how an attempt ended.
type Attempt struct {
	Failed bool // it returned an error
	// Closed: the Manager is closing, so nothing is retried; Aborted: and
	// Close canceled the attempt.
	Closed, Aborted bool
	Jitter          float64 // in [0, 1): the random draw for the retry's backoff jitter
}

// Finished is what an attempt's end did to the key's runs.
type Finished struct {
	// Outcome: the running run's tickets settle (Deployed, Failed,
	// Aborted, or Unchanged from Loaded) with its revision.
	Outcome Outcome
	// AbsorbPending: the pending run, the same revision triggered again
	// while it ran, was covered by it: its tickets settle with the
	// running run's result.
	AbsorbPending bool
	// IntoPending: the failed run's tickets move to the pending run and
	// settle with it.
	IntoPending bool
	// Retry: the failed run became the pending run again, to be retried
	// after Delay (Pending.RetryAt); its tickets stay with it.
	Retry bool
	Delay time.Duration
	// Begin (from Loaded only): the caller begins the attempt.
	Begin bool
}

// Finish records the end of the running attempt. Call Schedule next.
func Finish(s State, p *Policy, now time.Time, a Attempt) (State, Finished) {
	r := s.Running
	s.Running = Run{}
	var f Finished
	if !a.Failed {
		s.Live, s.Loaded = r.Rev, true
		s.Running = r
		s, f.AbsorbPending = absorb(s)
		s.Running = Run{}
		f.Outcome = Deployed
		return s, f
	}
	switch {
	case a.Closed:
		f.Outcome = Failed
		if a.Aborted {
			f.Outcome = Aborted
		}
	case s.Pending.Active():
		f.IntoPending = true
	case r.Attempts < p.MaxAttempts:
		f.Retry = true
		f.Delay = p.Backoff(r.Attempts, a.Jitter)
		r.RetryAt = now.Add(f.Delay)
		r.Canceled = false
		s.Pending = r
	default:
		f.Outcome = Failed
	}
	return s, f
}

// absorb drops a pending run of the running revision that is not forced.
func absorb(s State) (State, bool) {
	if s.Pending.Active() && s.Pending.Rev == s.Running.Rev && !s.Pending.Force {
		s.Pending = Run{}
		return s, true
	}
	return s, false
}

// Abort drops the pending run (Close): its tickets settle Aborted with the
// returned run's revision. ok is false when nothing was pending.
func Abort(s State) (_ State, dropped Run, ok bool) {
	if !s.Pending.Active() {
		return s, Run{}, false
	}
	dropped, s.Pending = s.Pending, Run{}
	return s, dropped, true
}

// Interrupt takes back the running run whose attempt was lost without an
// end (its replica died, or Close gave it up): if a newer revision is
// pending, the interrupted run's tickets move to it (IntoPending);
// otherwise the interrupted run becomes the pending run again, to run anew,
// keeping its attempts and tickets. Call Schedule next.
func Interrupt(s State) (State, Finished) {
	r := s.Running
	s.Running = Run{}
	if !r.Active() {
		return s, Finished{}
	}
	if s.Pending.Active() {
		return s, Finished{IntoPending: true}
	}
	r.Canceled = false
	r.RetryAt = time.Time{}
	r.Attempts = max(r.Attempts-1, 0) // the lost attempt does not count
	s.Pending = r
	return s, Finished{Retry: true}
}
