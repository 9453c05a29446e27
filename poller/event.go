package poller

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// EventKind names what one poll of a key found.
type EventKind uint8

// The kinds of Event.
const (
	// EventPolled: the source reported the revision seen before, and the
	// Trigger accepted it again (a Manager deploys it only if it is not
	// live, e.g. after a failed deploy).
	EventPolled EventKind = iota + 1
	// EventChanged: the source reported a revision different from the one
	// the Trigger last accepted (Previous; empty at the first poll) and the
	// Trigger accepted it.
	EventChanged
	// EventError: the source failed (Err). The next poll is after Delay,
	// which backs off with Failures.
	EventError
	// EventTriggerFailed: the source reported a revision but the Trigger
	// refused it (Err), e.g. because the Manager is closed. The revision is
	// handed over again at the next poll that sees it.
	EventTriggerFailed
)

var kindNames = [...]string{"", "polled", "changed", "error", "trigger-failed"}

// String returns the name of k, such as "changed".
func (k EventKind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is what one poll of a key found, passed to the observer set with
// WithObserver and logged by the logger set with WithLogger.
type Event struct {
	Kind     EventKind      // what happened
	Key      string         // the watched key
	Revision dedup.Revision // what the source reported (empty for EventError)
	Previous dedup.Revision // the revision seen before (EventChanged)
	Err      error          // EventError, EventTriggerFailed
	Failures int            // failed polls in a row, this one included (EventError)
	Duration time.Duration  // how long Source.Latest took
	Delay    time.Duration  // wait until the next poll, unless PollNow comes first
	Time     time.Time      // when the poll ended, by the Poller's clock
}

func (e Event) level() slog.Level {
	switch e.Kind {
	case EventError, EventTriggerFailed:
		return slog.LevelWarn
	case EventPolled:
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
	attrs = append(attrs, slog.String("key", e.Key))
	if e.Revision != "" {
		attrs = append(attrs, slog.String("revision", string(e.Revision)))
	}
	if e.Previous != "" {
		attrs = append(attrs, slog.String("previous", string(e.Previous)))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("err", e.Err))
	}
	if e.Failures > 0 {
		attrs = append(attrs, slog.Int("failures", e.Failures))
	}
	attrs = append(attrs, slog.Duration("duration", e.Duration), slog.Duration("next", e.Delay))
	l.LogAttrs(ctx, lvl, "poller: "+e.Kind.String(), attrs...)
}
