package pgdedup

import (
	"context"
	"sync"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Ticket is a trigger's claim on the run that will cover it, whichever
// replica runs it; it is dedup.Ticket across replicas. It is safe for
// concurrent use. The replica that made it settles it when it learns how
// the run ended (by a notification, or within a poll interval), or Aborted
// when it closes first.
type Ticket struct {
	key       string
	requested dedup.Revision
	action    dedup.Action
	replaced  dedup.Revision

	run  int64 // the run it waits on; guarded by Manager.mu
	once sync.Once
	done chan struct{}
	res  dedup.Result
}

// Action returns what the trigger did when it was made.
func (t *Ticket) Action() dedup.Action { return t.action }

// Replaced returns the pending revision the trigger superseded, if any.
func (t *Ticket) Replaced() dedup.Revision { return t.replaced }

// Done returns a channel that is closed when the ticket is settled.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Result returns the result of the ticket: valid once Done is closed, the
// zero Result before.
func (t *Ticket) Result() dedup.Result {
	select {
	case <-t.done:
		return t.res
	default:
		return dedup.Result{}
	}
}

// Wait blocks until the ticket is settled or ctx is done. It returns the
// Result and Result.Err, or the zero Result and ctx.Err() if ctx ended
// first; the ticket stays valid.
func (t *Ticket) Wait(ctx context.Context) (dedup.Result, error) {
	select {
	case <-t.done:
		return t.res, t.res.Err
	case <-ctx.Done():
		return dedup.Result{}, ctx.Err()
	}
}

func (t *Ticket) settle(r dedup.Result) {
	t.once.Do(func() {
		t.res = r
		close(t.done)
	})
}
