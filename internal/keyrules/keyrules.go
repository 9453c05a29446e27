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
// Each step also exists as a method of *State that changes the State in
// place (State.Request, State.Schedule, State.StoreLoaded, ...); the
// functions are those methods on a copy. A caller that keeps its own
// representation of a key builds a State once per locked section, passes
// its address through the steps, and copies the changes back: the
// in-memory dedup.Manager does so (in a scratch State per lock, not on a
// small goroutine stack), keeping its pointer-based runs
// (an idle key stays small) and doing only the mechanics itself (locks,
// tickets, timers, concurrency slots, contexts, events, the Store).
// Neither Manager writes a rule of its own, and internal/refmodel, the
// reference model both model tests use, checks them alike.
//
// A key holds at most one running run and one pending run. A run is one
// intended deploy of one revision, and the callers' tickets wait on it.
// The steps, in the order a run meets them:
//
//	Request:  a trigger joins the pending or running revision, is found
//	          live already, supersedes the pending revision in place, or
//	          becomes the pending revision (cancelling the running attempt
//	          with CancelInProgress). A forced trigger that joins a run
//	          whose Store is being read (Run.Loading) makes it forced.
//	Schedule: the pending run is due (the caller starts it when it has a
//	          slot), waits for its start time (debounce, min interval,
//	          retry backoff: arm a timer), or went back to the live
//	          revision (its tickets settle Unchanged).
//	Start:    the pending run becomes the running run.
//	Loaded:   before a key's first deploy, what the Store holds is known
//	          (a revision beside ok=false means nothing).
//	Begin:    an attempt of the running run starts.
//	Finish:   the attempt ended: the revision is live, or the failure is
//	          absorbed by a newer pending revision, retried, or final.
//	Abort:    Close drops the pending run.
//
// Example (a trigger with nothing running, then the end of its attempt):
//
//	s, _ = keyrules.Request(s, &pol, now, "v2", false) // the ticket joins s.Pending
//	s, sch := keyrules.Schedule(s, &pol, now)
//	if sch.Kind == keyrules.Due {
//		s, _ = keyrules.Start(s)
//		s = keyrules.Begin(s, now)
//		// ... deploy s.Running.Rev, then:
//		s, fin := keyrules.Finish(s, &pol, now, keyrules.Attempt{})
//		// ... settle the tickets as fin.Outcome says
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

// Timed reports whether the rules read the time for this policy: with
// debounce, a minimum interval or retries. When it is false, Request and
// Schedule do not depend on now (Request records it in the pending run's
// First and Last, which only debounce reads), so a caller for which reading
// the clock costs may pass the zero time to them. Begin and Finish record
// now whatever the policy, in LastStarted only: given the zero time for
// Request and Schedule, no step sets a run's First, Last or RetryAt for
// such a policy.
func (p *Policy) Timed() bool {
	return p.Quiet > 0 || p.MinInterval > 0 || p.MaxAttempts > 1
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
	// Loading: the running run waits for the Store to be read before its
	// first attempt (Start said needLoad; Loaded not called yet). A forced
	// trigger that joins it then makes it forced, so that the Store
	// cannot turn it into Unchanged.
	Loading bool

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

// Action is what a trigger did. dedup.Action takes its values from these.
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
//
// Request changes the pending run (when it joins, supersedes or queues a
// revision) and the running run only when it joins it (ActionJoinedRunning)
// or cancels it (Requested.Cancel); never Live, Loaded or LastStarted. A
// caller that copies the State back into structures of its own may copy
// only those.
func Request(s State, p *Policy, now time.Time, rev string, force bool) (State, Requested) {
	q := s.Request(p, now, rev, force)
	return s, q
}

// Request is the function Request applied to s in place: callers that
// keep a State in a struct of their own, or build one per transition, save
// the copies in and out.
func (s *State) Request(p *Policy, now time.Time, rev string, force bool) Requested {
	// Join: rev is where the key is heading.
	if s.Pending.Active() && s.Pending.Rev == rev {
		// Not a new trigger for the debounce: a poller hands every poll's
		// revision over, and must not keep the quiet period from ending.
		s.Pending.Force = s.Pending.Force || force
		return Requested{Action: ActionJoinedPending}
	}
	if !s.Pending.Active() && s.Running.Active() && !s.Running.Canceled && s.Running.Rev == rev {
		if s.Running.Loading {
			// The Store is being read: a forced trigger must not let
			// the run settle Unchanged if it says rev is live.
			s.Running.Force = s.Running.Force || force
		}
		return Requested{Action: ActionJoinedRunning}
	}
	if !s.Pending.Active() && !s.Running.Active() && s.Loaded && s.Live == rev && !force {
		return Requested{Action: ActionUnchanged}
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
		return q
	}

	// Queue: rev becomes the pending revision.
	s.Pending = Run{Rev: rev, Force: force, First: now, Last: now}
	q := Requested{Action: ActionQueued}
	if s.Running.Active() && p.CancelInProgress && !s.Running.Canceled {
		s.Running.Canceled = true
		q.Cancel = true
	}
	return q
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
	sch := s.Schedule(p, now)
	return s, sch
}

// Schedule is the function Schedule applied to s in place.
func (s *State) Schedule(p *Policy, now time.Time) Scheduled {
	if s.Idle() {
		return Scheduled{} // small enough to inline: the common answer costs no call
	}
	return s.schedule(p, now)
}

// Idle reports whether Schedule would find nothing to do: nothing is
// pending, or a run is running. A caller on a hot path may skip Schedule
// then.
func (s *State) Idle() bool { return s.Pending.Rev == "" || s.Running.Rev != "" }

func (s *State) schedule(p *Policy, now time.Time) Scheduled {
	if s.Loaded && s.Pending.Rev == s.Live && !s.Pending.Force {
		rev := s.Pending.Rev
		s.Pending = Run{}
		return Scheduled{Kind: BackToLive, Rev: rev}
	}
	if at := s.StartAt(p); !at.IsZero() && at.After(now) {
		return Scheduled{Kind: Wait, At: at}
	}
	return Scheduled{Kind: Due}
}

// StartAt is the earliest time the pending run may start (zero: at once).
func StartAt(s State, p *Policy) time.Time { return s.StartAt(p) }

// StartAt is the function StartAt of s.
func (s *State) StartAt(p *Policy) time.Time {
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
	needLoad = s.Start()
	return s, needLoad
}

// Start is the function Start applied to s in place.
func (s *State) Start() (needLoad bool) {
	s.Running = s.Pending
	s.Pending = Run{}
	s.Running.Loading = !s.Loaded
	return !s.Loaded
}

// Begin starts an attempt of the running run.
func Begin(s State, now time.Time) State {
	s.Begin(now)
	return s
}

// Begin is the function Begin applied to s in place.
func (s *State) Begin(now time.Time) {
	s.Running.Loading = false // also for a caller that skips Loaded
	s.Running.Attempts++
	s.LastStarted = now
}

// Loaded records what the Store said before the key's first deploy (ok:
// it knew the key, and rev is its live revision; failed: reading it failed,
// the key stays not loaded). Without ok, or with failed, rev is ignored. If
// the running run turns out live already (and is not forced), it ends:
// Finished.Outcome is Unchanged. If a newer revision canceled it meanwhile,
// its tickets go to the pending run (Finished.IntoPending). Otherwise the
// caller calls Begin.
func Loaded(s State, rev string, ok, failed bool) (State, Finished) {
	f := s.StoreLoaded(rev, ok, failed)
	return s, f
}

// StoreLoaded is the function Loaded applied to s in place (a method
// cannot share the name of the field Loaded).
func (s *State) StoreLoaded(rev string, ok, failed bool) Finished {
	s.Running.Loading = false
	if !failed {
		s.Loaded = true
		if ok {
			s.Live = rev
		}
	}
	if s.Loaded && s.Live == s.Running.Rev && !s.Running.Force {
		var f Finished
		f.AbsorbPending = s.absorb()
		s.Running = Run{}
		f.Outcome = Unchanged
		return f
	}
	if s.Running.Canceled && s.Pending.Active() {
		s.Running = Run{}
		return Finished{IntoPending: true}
	}
	return Finished{Begin: true}
}

// Outcome is how the running run's tickets settle (dedup.Outcome takes its
// values from these); zero: they do not settle.
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
	f := s.Finish(p, now, a)
	return s, f
}

// Finish is the function Finish applied to s in place.
func (s *State) Finish(p *Policy, now time.Time, a Attempt) Finished {
	var f Finished
	if !a.Failed {
		s.Live, s.Loaded = s.Running.Rev, true
		f.AbsorbPending = s.absorb()
		s.Running = Run{}
		f.Outcome = Deployed
		return f
	}
	r := s.Running
	s.Running = Run{}
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
	return f
}

// absorb drops a pending run of the running revision that is not forced.
func (s *State) absorb() bool {
	if s.Pending.Active() && s.Pending.Rev == s.Running.Rev && !s.Pending.Force {
		s.Pending = Run{}
		return true
	}
	return false
}

// Abort drops the pending run (Close): its tickets settle Aborted with the
// returned run's revision. ok is false when nothing was pending.
func Abort(s State) (_ State, dropped Run, ok bool) {
	dropped, ok = s.Abort()
	return s, dropped, ok
}

// Abort is the function Abort applied to s in place.
func (s *State) Abort() (dropped Run, ok bool) {
	if !s.Pending.Active() {
		return Run{}, false
	}
	dropped, s.Pending = s.Pending, Run{}
	return dropped, true
}

// Interrupt takes back the running run whose attempt was lost without an
// end (its replica died, or Close gave it up): if a newer revision is
// pending, the interrupted run's tickets move to it (IntoPending);
// otherwise the interrupted run becomes the pending run again, to run anew,
// keeping its attempts and tickets. Call Schedule next.
func Interrupt(s State) (State, Finished) {
	f := s.Interrupt()
	return s, f
}

// Interrupt is the function Interrupt applied to s in place.
func (s *State) Interrupt() Finished {
	r := s.Running
	s.Running = Run{}
	if !r.Active() {
		return Finished{}
	}
	if s.Pending.Active() {
		return Finished{IntoPending: true}
	}
	if !r.Loading {
		r.Attempts = max(r.Attempts-1, 0) // the lost attempt does not count
	}
	r.Canceled, r.Loading = false, false
	r.RetryAt = time.Time{}
	s.Pending = r
	return Finished{Retry: true}
}
