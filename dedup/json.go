package dedup

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// The enumerations marshal to their names, so that a status endpoint, a log
// line or a stored Result reads "deployed", not 1.

// MarshalText returns the name of o, such as "deployed".
func (o Outcome) MarshalText() ([]byte, error) {
	return marshalEnum(outcomeNames[:], uint8(o), "outcome")
}

// UnmarshalText sets o from its name, as MarshalText writes it.
func (o *Outcome) UnmarshalText(b []byte) error {
	return unmarshalEnum(outcomeNames[:], b, "outcome", (*uint8)(o))
}

// MarshalText returns the name of a, such as "joined-running".
func (a Action) MarshalText() ([]byte, error) { return marshalEnum(actionNames[:], uint8(a), "action") }

// UnmarshalText sets a from its name, as MarshalText writes it.
func (a *Action) UnmarshalText(b []byte) error {
	return unmarshalEnum(actionNames[:], b, "action", (*uint8)(a))
}

// MarshalText returns the name of k, such as "succeeded".
func (k EventKind) MarshalText() ([]byte, error) {
	return marshalEnum(kindNames[:], uint8(k), "event kind")
}

// UnmarshalText sets k from its name, as MarshalText writes it.
func (k *EventKind) UnmarshalText(b []byte) error {
	return unmarshalEnum(kindNames[:], b, "event kind", (*uint8)(k))
}

func marshalEnum(names []string, v uint8, kind string) ([]byte, error) {
	if v == 0 || int(v) >= len(names) {
		return nil, fmt.Errorf("dedup: %s %d has no name", kind, v)
	}
	return []byte(names[v]), nil
}

func unmarshalEnum(names []string, b []byte, kind string, v *uint8) error {
	i := slices.Index(names[1:], string(b))
	if i < 0 {
		return fmt.Errorf("%w: unknown %s %q", ErrInvalid, kind, b)
	}
	*v = uint8(i + 1)
	return nil
}

// textError is an error read back from JSON: only its text survives.
type textError string

func (e textError) Error() string { return string(e) }

// errText is the text of err, nil for no error: an error whose text is
// empty still reads back as an error. fmt, not err.Error, makes the text,
// as fmt survives an Error method that panics (a typed nil, say).
func errText(err error) *string {
	if err == nil {
		return nil
	}
	s := fmt.Sprint(err)
	return &s
}

func textErr(s *string) error {
	if s == nil {
		return nil
	}
	return textError(*s)
}

// duration is a time.Duration that marshals as "1.5s".
type duration time.Duration

func (d duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	*d = duration(v)
	return nil
}

type statusJSON struct {
	Key          string        `json:"key"`
	Live         Revision      `json:"live,omitempty"`
	Running      Revision      `json:"running,omitempty"`
	Pending      Revision      `json:"pending,omitempty"`
	LastErr      *string       `json:"last_error,omitempty"`
	Attempt      int           `json:"attempt,omitempty"`
	Queued       bool          `json:"queued,omitempty"`
	NextStart    time.Time     `json:"next_start,omitzero"`
	Runs         int           `json:"runs"`
	Deployed     int           `json:"deployed"`
	Failures     int           `json:"failures"`
	Superseded   int           `json:"superseded"`
	StoreErr     *string       `json:"store_error,omitempty"`
	LastStarted  time.Time     `json:"last_started,omitzero"`
	LastFinished time.Time     `json:"last_finished,omitzero"`
	Baseline     *baselineJSON `json:"baseline,omitempty"`
	Slow         bool          `json:"slow,omitempty"`
}

type baselineJSON struct {
	Samples int      `json:"samples"`
	Mean    duration `json:"mean"`
	P90     duration `json:"p90"`
}

func baselineOut(b Baseline) *baselineJSON {
	if b.Samples == 0 {
		return nil
	}
	return &baselineJSON{Samples: b.Samples, Mean: duration(b.Mean), P90: duration(b.P90)}
}

func baselineIn(b *baselineJSON) Baseline {
	if b == nil {
		return Baseline{}
	}
	return Baseline{Samples: b.Samples, Mean: time.Duration(b.Mean), P90: time.Duration(b.P90)}
}

// MarshalJSON writes s for people and tools: snake_case names, errors as
// their text, zero times and empty revisions left out. So
// json.NewEncoder(w).Encode(m.Statuses()) is a status endpoint.
func (s Status) MarshalJSON() ([]byte, error) {
	return json.Marshal(statusJSON{
		Key: s.Key, Live: s.Live, Running: s.Running, Pending: s.Pending, LastErr: errText(s.LastErr),
		Attempt: s.Attempt, Queued: s.Queued, NextStart: s.NextStart,
		Runs: s.Runs, Deployed: s.Deployed, Failures: s.Failures, Superseded: s.Superseded,
		StoreErr: errText(s.StoreErr), LastStarted: s.LastStarted, LastFinished: s.LastFinished,
		Baseline: baselineOut(s.Baseline), Slow: s.Slow,
	})
}

// UnmarshalJSON reads what MarshalJSON writes. Errors come back as errors
// with the same text, not as the original values.
func (s *Status) UnmarshalJSON(b []byte) error {
	var j statusJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Status{
		Key: j.Key, Live: j.Live, Running: j.Running, Pending: j.Pending, LastErr: textErr(j.LastErr),
		Attempt: j.Attempt, Queued: j.Queued, NextStart: j.NextStart,
		Runs: j.Runs, Deployed: j.Deployed, Failures: j.Failures, Superseded: j.Superseded,
		StoreErr: textErr(j.StoreErr), LastStarted: j.LastStarted, LastFinished: j.LastFinished,
		Baseline: baselineIn(j.Baseline), Slow: j.Slow,
	}
	return nil
}

type resultJSON struct {
	Key       string    `json:"key"`
	Requested Revision  `json:"requested"`
	Revision  Revision  `json:"revision,omitempty"`
	Outcome   Outcome   `json:"outcome,omitzero"`
	Err       *string   `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
}

// MarshalJSON writes r with the outcome's name and the error's text, and
// without zero times.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(resultJSON{
		Key: r.Key, Requested: r.Requested, Revision: r.Revision, Outcome: r.Outcome, Err: errText(r.Err),
		Attempts: r.Attempts, Started: r.Started, Finished: r.Finished,
	})
}

// UnmarshalJSON reads what MarshalJSON writes; Err comes back with its text
// only.
func (r *Result) UnmarshalJSON(b []byte) error {
	var j resultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Result{
		Key: j.Key, Requested: j.Requested, Revision: j.Revision, Outcome: j.Outcome, Err: textErr(j.Err),
		Attempts: j.Attempts, Started: j.Started, Finished: j.Finished,
	}
	return nil
}

type eventJSON struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time,omitzero"`
	Kind     EventKind `json:"kind,omitzero"`
	Key      string    `json:"key"`
	Revision Revision  `json:"revision,omitempty"`
	Replaced Revision  `json:"replaced,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	Err      *string   `json:"error,omitempty"`
	Duration duration  `json:"duration,omitzero"`
	Delay    duration  `json:"delay,omitzero"`
	Baseline duration  `json:"baseline,omitzero"`
	Action   Action    `json:"action,omitzero"`
}

// MarshalJSON writes e with the kind's name, the error's text, durations
// as "1.5s", and without zero fields.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{
		Seq: e.Seq, Time: e.Time, Kind: e.Kind, Key: e.Key, Revision: e.Revision, Replaced: e.Replaced,
		Attempt: e.Attempt, Err: errText(e.Err), Duration: duration(e.Duration), Delay: duration(e.Delay),
		Baseline: duration(e.Baseline), Action: e.Action,
	})
}

// UnmarshalJSON reads what MarshalJSON writes; Err comes back with its text
// only.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Event{
		Seq: j.Seq, Time: j.Time, Kind: j.Kind, Key: j.Key, Revision: j.Revision, Replaced: j.Replaced,
		Attempt: j.Attempt, Err: textErr(j.Err), Duration: time.Duration(j.Duration), Delay: time.Duration(j.Delay),
		Baseline: time.Duration(j.Baseline), Action: j.Action,
	}
	return nil
}

var (
	_ json.Marshaler   = Status{}
	_ json.Unmarshaler = (*Status)(nil)
	_ error            = textError("")
)
