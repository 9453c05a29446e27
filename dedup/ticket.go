package dedup

import (
	"context"
	"time"

	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
)

// Outcome says how a ticket was settled.
type Outcome uint8

// The outcomes of a ticket. Their values are the per-key rules' own
// (internal/keyrules), which both Managers apply.
const (
	// Deployed: the requested revision was deployed by the run that
	// settled the ticket.
	Deployed Outcome = Outcome(keyrules.Deployed)
	// Superseded: another revision of the key was triggered before the
	// requested one was deployed (before it started, or while its failed
	// attempt waited for a retry or was canceled), and the run that covered
	// it, named in Result.Revision, succeeded or found that revision live
	// already.
	Superseded Outcome = Outcome(keyrules.Superseded)
	// Unchanged: the requested revision was already live; nothing ran.
	Unchanged Outcome = Outcome(keyrules.Unchanged)
	// Failed: the run that settled the ticket failed (Result.Err), after
	// its retries.
	Failed Outcome = Outcome(keyrules.Failed)
	// Aborted: the ticket was settled without a run, because the Manager
	// was closed (Result.Err wraps ErrClosed).
	Aborted Outcome = Outcome(keyrules.Aborted)
)

var outcomeNames = [...]string{"", "deployed", "superseded", "unchanged", "failed", "aborted"}

func (o Outcome) String() string { return enumName(outcomeNames[:], uint8(o), "outcome") }

// Result is the answer to one trigger.
type Result struct {
	Key       string   // the key triggered
	Requested Revision // what the trigger asked for
	Revision  Revision // what the run that settled the ticket deployed; newer than Requested when superseded
	Outcome   Outcome  // how the ticket was settled
	Err       error    // non-nil exactly when Outcome is Failed or Aborted
	Attempts  int      // attempts of the run that settled the ticket; 0 if nothing ran
	// Started is when the first attempt of the run that settled the
	// ticket began, Finished when that run was settled. For a ticket
	// settled without a deploy (Unchanged, Aborted) both are the time it
	// was settled.
	Started  time.Time
	Finished time.Time
}

// Action is what a trigger did to its key at the moment it was made; the
// Result says how it ended. Ticket.Replaced says, beside it, which pending
// revision the trigger superseded.
type Action uint8

// The actions of a trigger, with the per-key rules' values.
const (
	// ActionStarted: a deploy of the requested revision started at once.
	// Before a key's first deploy (also after Forget), a Manager with a
	// Store first reads the live revision from it, and settles the run
	// Unchanged if that is the requested one.
	ActionStarted Action = Action(keyrules.ActionStarted)
	// ActionQueued: the requested revision became the key's pending
	// revision. It starts when the key's running deploy ends, or when
	// its policy (debounce, min interval, retry backoff) or a concurrency
	// slot allows.
	ActionQueued Action = Action(keyrules.ActionQueued)
	// ActionJoinedRunning: the requested revision was deploying already,
	// with nothing pending after it; the ticket waits for that deploy.
	ActionJoinedRunning Action = Action(keyrules.ActionJoinedRunning)
	// ActionJoinedPending: the requested revision was pending already;
	// the ticket waits for its deploy.
	ActionJoinedPending Action = Action(keyrules.ActionJoinedPending)
	// ActionUnchanged: the requested revision was live already, with
	// nothing running or pending (or the trigger took the key back to its
	// live revision); nothing deploys. The ticket is settled.
	ActionUnchanged Action = Action(keyrules.ActionUnchanged)
)

var actionNames = [...]string{"", "started", "queued", "joined-running", "joined-pending", "unchanged"}

func (a Action) String() string { return enumName(actionNames[:], uint8(a), "action") }

// Ticket is a trigger's claim on the run that will cover it. It is safe for
// concurrent use; it is valid forever, also after the Manager is closed.
type Ticket struct {
	key       string
	requested Revision
	run       *run      // nil: settled at once as Unchanged
	at        time.Time // when settled at once
	replaced  Revision
	action    Action
}

// Action returns what the trigger did when it was made.
func (t *Ticket) Action() Action { return t.action }

// Replaced returns the pending revision that the trigger superseded: it
// will not deploy (or, if it was a failed run waiting for its retry, will
// not be retried), and its tickets settle with the requested revision's
// run. It is empty if the trigger replaced nothing.
func (t *Ticket) Replaced() Revision { return t.replaced }

// closed is the Done channel of tickets settled at once.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a channel that is closed when the ticket is settled. Keep
// the Ticket, not only this channel, while you wait on it (Wait does): the
// Manager holds a ticket whose revision was superseded only weakly, so
// that tickets nobody keeps cost nothing, and a channel alone does not keep
// its ticket.
func (t *Ticket) Done() <-chan struct{} {
	if t.run == nil {
		return closed
	}
	return t.run.done
}

// Result returns the result of the ticket. It is valid once Done is closed;
// before that it returns the zero Result.
func (t *Ticket) Result() Result {
	if t.run == nil {
		return Result{Key: t.key, Requested: t.requested, Revision: t.requested, Outcome: Unchanged, Started: t.at, Finished: t.at}
	}
	select {
	case <-t.run.done:
	default:
		return Result{}
	}
	r := t.run.by
	res := Result{Key: t.key, Requested: t.requested, Revision: r.rev, Outcome: r.outcome, Err: r.err,
		Attempts: int(r.attempts), Started: r.started, Finished: r.finished}
	if t.requested != r.rev && (r.outcome == Deployed || r.outcome == Unchanged) {
		res.Outcome = Superseded
	}
	return res
}

// Wait blocks until the ticket is settled or ctx is done. It returns the
// Result and Result.Err, or the zero Result and ctx.Err() if ctx ended first;
// the ticket stays valid and may be waited on again.
func (t *Ticket) Wait(ctx context.Context) (Result, error) {
	select {
	case <-t.Done():
		r := t.Result()
		return r, r.Err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}
