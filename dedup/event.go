package dedup

import (
	"context"
	"log/slog"
	"strconv"
	"time"
)

// EventKind names a state change of a key.
type EventKind uint8

// The kinds of Event.
const (
	// EventQueued: a revision became the pending revision of a key that
	// had none.
	EventQueued EventKind = iota + 1
	// EventCoalesced: a trigger joined the pending or running revision
	// (Replaced empty), or replaced the pending revision (Replaced holds
	// the superseded one).
	EventCoalesced
	// EventStarted: an attempt started (Attempt counts from 1).
	EventStarted
	// EventSucceeded: an attempt succeeded and Revision is live.
	EventSucceeded
	// EventFailed: a run failed for good, or its failed attempt was
	// replaced by a newer pending revision (Err holds why).
	EventFailed
	// EventRetrying: an attempt failed and another one is scheduled after
	// Delay.
	EventRetrying
	// EventCanceled: the running deploy's context was canceled because a
	// newer revision (Revision; the canceled one is Replaced) arrived with
	// cancel-in-progress, or because Close's context ended (Revision is the
	// canceled one).
	EventCanceled
	// EventUnchanged: a revision was found live already; nothing ran.
	EventUnchanged
	// EventAborted: Close dropped a pending revision, or canceled a
	// running deploy that then failed (Err).
	EventAborted
	// EventStoreFailed: the Store failed to load or save (Err). A failed
	// Save does not undo the deploy.
	EventStoreFailed
	// EventSlow: the running attempt (Attempt) has run for Duration, longer
	// than WithSlowDeploy allows for the key's Baseline.P90 (Baseline). It
	// goes on running; this is reported once per attempt.
	EventSlow
)

var kindNames = [...]string{"", "queued", "coalesced", "started", "succeeded", "failed", "retrying", "canceled", "unchanged", "aborted", "store-failed", "slow"}

func (k EventKind) String() string { return enumName(kindNames[:], uint8(k), "event") }

// Event is a state change of one key, passed to the observer set with
// WithObserver and logged by the logger set with WithLogger.
type Event struct {
	Kind EventKind // what happened
	// Action is what a trigger did (as Ticket.Action says), on the one
	// event each successful Trigger or Notify records first (EventQueued,
	// EventCoalesced or EventUnchanged); zero on every other event. It
	// lets an observer count triggers by what they did. (It sits beside
	// Kind, in what was padding.)
	Action Action

	Key      string        // to which key
	Revision Revision      // the revision it happened to
	Replaced Revision      // the superseded revision (EventCoalesced) or the canceled one (EventCanceled)
	Attempt  int           // the attempt started, finished or failed
	Err      error         // EventFailed, EventRetrying, EventStoreFailed
	Duration time.Duration // how long the attempt ran (EventSucceeded, EventFailed, EventRetrying), or has run so far (EventSlow)
	Delay    time.Duration // wait before the next attempt (EventRetrying)
	Time     time.Time     // when it happened, by the Manager's clock
	Baseline time.Duration // the key's Baseline.P90 that the attempt was judged against (EventSlow)

	// Seq numbers the events of a Manager in the order the state changed.
	// Events are delivered outside the Manager's locks, so two goroutines
	// (a trigger and the end of a deploy) may deliver theirs in the
	// other order; Seq restores it.
	Seq uint64
}

func (e Event) level() slog.Level {
	switch e.Kind {
	case EventFailed, EventRetrying, EventStoreFailed, EventSlow:
		return slog.LevelWarn
	case EventCoalesced:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func (e Event) log(l *slog.Logger) {
	lvl := e.level()
	ctx := context.Background()
	if !l.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("key", e.Key), slog.String("revision", string(e.Revision)))
	if e.Replaced != "" {
		attrs = append(attrs, slog.String("replaced", string(e.Replaced)))
	}
	if e.Attempt > 0 {
		attrs = append(attrs, slog.Int("attempt", e.Attempt))
	}
	if e.Duration > 0 {
		attrs = append(attrs, slog.Duration("duration", e.Duration))
	}
	if e.Delay > 0 {
		attrs = append(attrs, slog.Duration("delay", e.Delay))
	}
	if e.Baseline > 0 {
		attrs = append(attrs, slog.Duration("baseline", e.Baseline))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("err", e.Err))
	}
	l.LogAttrs(ctx, lvl, "dedup: "+e.Kind.String(), attrs...)
}

// enumName is the name of value v of an enumeration whose names are
// indexed by value (names[0] unused), or kind(v) for a value without one.
func enumName(names []string, v uint8, kind string) string {
	if int(v) < len(names) && v != 0 {
		return names[v]
	}
	return kind + "(" + strconv.Itoa(int(v)) + ")"
}
