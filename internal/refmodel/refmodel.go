// Package refmodel is the reference model of the per-key rules of
// DESIGN.md ("Semantics, per key"), written independently of every Manager
// so that model-based tests can check a Manager against it: the in-memory
// dedup.Manager, pgdedup's Manager across replicas, and the shared rules of
// internal/keyrules. It knows the rules and nothing of how any Manager
// implements them; it is deliberately plain and slow.
//
// A test drives a Manager and a Model through the same schedule: Trigger
// with the ticket it got, Finish when a deploy returns, Advance when time
// passes, Close at the end; then it compares the Manager's deploys
// (TakeStarts), the running and pending revisions (Keys) and every
// ticket's result with the model's.
//
//	mod := refmodel.New([]string{"a"}, pol, time.Now(), nil)
//	t := &refmodel.Ticket{Key: "a", Requested: "v1"}
//	action, replaced := mod.Trigger("a", "v1", false, t)
//	mod.Finish("a", true, false) // the deploy of v1 succeeded: t.Outcome is Deployed
package refmodel

import (
	"slices"
	"sync"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Ticket is the model's side of one trigger: what it asked for and, once
// Settled, how the model says it ends.
type Ticket struct {
	Key       string
	Requested dedup.Revision
	Real      any // the Manager's ticket, for the test's own use

	Settled  bool
	Rev      dedup.Revision
	Outcome  dedup.Outcome
	Panicked bool // settled Failed by a run whose last attempt panicked
}

// Run is one intended deploy in the model.
type Run struct {
	Rev          dedup.Revision
	Force        bool
	Attempts     int
	First, Last  time.Time
	RetryAt      time.Time
	AttemptStart time.Time
	Canceled     bool
	Tickets      []*Ticket
}

// Key is the model's state of one key.
type Key struct {
	Pol       dedup.Policy
	Loaded    bool           // Live is known
	Stored    dedup.Revision // what the store holds before the first deploy
	Live      dedup.Revision
	Running   *Run
	Pending   *Run
	LastStart time.Time
	Started   bool
}

// Start is one deploy started.
type Start struct {
	Key string
	Rev dedup.Revision
}

// Model is the reference model of a Manager's keys.
type Model struct {
	Store           bool     // the Manager has a Store: keys not Loaded read Stored first
	Max             int      // WithMaxConcurrent; 0: no limit
	Active          int      // slots taken
	Queue           []string // keys due to start that wait for a slot, first come first served
	T0, Now         time.Time
	Keys            map[string]*Key
	Order           []string // the keys, in a fixed order
	Starts          []Start
	Closed          bool
	CanceledByClose []string

	// Before, if set, orders keys that come due at the same instant in
	// Advance: it reports whether key a went before key b at instant at.
	// The contract leaves that order open, and it matters only for
	// concurrency slots (the first key takes the last free slot); a test
	// that learns the Manager's order sets Before to follow it (see
	// SlotOrder). Unset, ties go in Order.
	Before func(a, b string, at time.Time) bool
}

// New returns a model of keys, each Loaded with no live revision and
// policy pol shifted by offsets[i] (every non-zero duration of key i made
// offsets[i] longer, so that no two keys wait until the same instant;
// offsets may be nil).
func New(keys []string, pol dedup.Policy, now time.Time, offsets []time.Duration) *Model {
	m := &Model{T0: now, Now: now, Keys: make(map[string]*Key), Order: slices.Clone(keys)}
	for i, k := range keys {
		var off time.Duration
		if i < len(offsets) {
			off = offsets[i]
		}
		m.Keys[k] = &Key{Loaded: true, Pol: offsetPolicy(pol, off)}
	}
	return m
}

// offsetPolicy returns p with every non-zero duration made off longer.
func offsetPolicy(p dedup.Policy, off time.Duration) dedup.Policy {
	for _, d := range []*time.Duration{&p.Quiet, &p.MaxDelay, &p.MinInterval, &p.Retry.Initial, &p.Retry.Max, &p.Timeout} {
		if *d > 0 {
			*d += off
		}
	}
	return p
}

// TakeStarts returns the deploys started since the last call.
func (m *Model) TakeStarts() []Start {
	s := m.Starts
	m.Starts = nil
	return s
}

// SettleAll settles the tickets of r with the run that deployed rev.
func SettleAll(r *Run, rev dedup.Revision, o dedup.Outcome, panicked bool) {
	for _, t := range r.Tickets {
		t.Settled, t.Rev, t.Outcome, t.Panicked = true, rev, o, panicked && o == dedup.Failed
		if t.Requested != rev && (o == dedup.Deployed || o == dedup.Unchanged) {
			t.Outcome = dedup.Superseded
		}
	}
	r.Tickets = nil
}

// Trigger applies a trigger (t may be nil for one without a ticket) and
// returns what its Ticket must say it did.
func (m *Model) Trigger(key string, rev dedup.Revision, force bool, t *Ticket) (dedup.Action, dedup.Revision) {
	k := m.Keys[key]
	var tickets []*Ticket
	if t != nil {
		tickets = []*Ticket{t}
	}
	var replaced dedup.Revision
	running := k.Running != nil
	switch {
	case k.Pending != nil && k.Pending.Rev == rev:
		k.Pending.Force = k.Pending.Force || force // the quiet period goes on
		k.Pending.Tickets = append(k.Pending.Tickets, tickets...)
		return dedup.ActionJoinedPending, ""
	case k.Pending == nil && k.Running != nil && !k.Running.Canceled && k.Running.Rev == rev:
		k.Running.Tickets = append(k.Running.Tickets, tickets...)
		return dedup.ActionJoinedRunning, ""
	case k.Pending == nil && k.Running == nil && k.Loaded && k.Live == rev && !force:
		SettleAll(&Run{Tickets: tickets}, rev, dedup.Unchanged, false)
		return dedup.ActionUnchanged, ""
	case k.Pending != nil:
		p := k.Pending
		replaced = p.Rev
		p.Rev, p.Force, p.Last = rev, force, m.Now
		p.Tickets = append(p.Tickets, tickets...)
		if p.Attempts > 0 {
			p.Attempts, p.RetryAt, p.First = 0, time.Time{}, m.Now
		}
	default:
		k.Pending = &Run{Rev: rev, Force: force, First: m.Now, Last: m.Now, Tickets: tickets}
		if r := k.Running; r != nil && k.Pol.CancelInProgress && !r.Canceled {
			// The deploy returns at once on its canceled context.
			r.Canceled = true
			m.Finish(key, false, false)
		}
	}
	started := m.tryStart(key)
	switch {
	case running:
		// Behind a running deploy (one canceled for it too: the
		// model ends that at once, the Manager when it returns).
		return dedup.ActionQueued, replaced
	case started:
		return dedup.ActionStarted, replaced
	case k.Pending == nil:
		return dedup.ActionUnchanged, replaced // back to the live revision
	}
	return dedup.ActionQueued, replaced
}

// Forget drops an idle key's state and reports whether it did.
func (m *Model) Forget(key string) bool {
	k := m.Keys[key]
	if k.Running != nil || k.Pending != nil {
		return false
	}
	if k.Pol.MinInterval > 0 && k.Started && m.Now.Before(k.LastStart.Add(k.Pol.MinInterval)) {
		return false // its next run must still wait
	}
	if m.Store {
		if k.Loaded {
			k.Stored = k.Live // saved after each deploy
		}
		k.Loaded = false
	}
	k.Live, k.Started, k.LastStart = "", false, time.Time{}
	return true
}

// startAt is the earliest start of the pending run of k.
func (m *Model) startAt(k *Key) time.Time {
	p := k.Pending
	at := p.RetryAt
	if k.Pol.MinInterval > 0 && k.Started {
		at = latest(at, k.LastStart.Add(k.Pol.MinInterval))
	}
	if k.Pol.Quiet > 0 {
		q := p.Last.Add(k.Pol.Quiet)
		if k.Pol.MaxDelay > 0 && p.First.Add(k.Pol.MaxDelay).Before(q) {
			q = p.First.Add(k.Pol.MaxDelay)
		}
		at = latest(at, q)
	}
	return at
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// tryStart starts the pending run of key if it is due, and reports whether
// it did (a first run that the store then finds live counts as started).
func (m *Model) tryStart(key string) (started bool) {
	k := m.Keys[key]
	p := k.Pending
	if p == nil || k.Running != nil || m.Closed {
		return false
	}
	if k.Loaded && p.Rev == k.Live && !p.Force {
		k.Pending = nil
		m.dequeue(key)
		SettleAll(p, p.Rev, dedup.Unchanged, false)
		return false
	}
	if m.startAt(k).After(m.Now) || !m.takeSlot(key) {
		return false
	}
	m.begin(key)
	return true
}

// begin starts the pending run of key, which has a slot.
func (m *Model) begin(key string) {
	k := m.Keys[key]
	p := k.Pending
	k.Pending = nil
	if !k.Loaded {
		// The store is read before the first deploy.
		k.Loaded, k.Live = true, k.Stored
		if p.Rev == k.Live && !p.Force {
			SettleAll(p, p.Rev, dedup.Unchanged, false)
			m.ended(key)
			return
		}
	}
	k.Running = p
	p.Attempts++
	p.AttemptStart = m.Now
	k.LastStart, k.Started = m.Now, true
	m.Starts = append(m.Starts, Start{key, p.Rev})
}

// ended is called when a run of key ended: its slot passes to the key that
// waited longest for one, after key's own next run had its chance to queue.
func (m *Model) ended(key string) {
	grant := m.releaseSlot()
	m.tryStart(key)
	for grant != "" {
		k := m.Keys[grant]
		if k.Pending != nil && k.Running == nil && !m.Closed {
			// It starts with the newest revision, whatever its
			// policy said since it queued.
			m.dequeue(grant)
			m.begin(grant)
			return
		}
		grant = m.releaseSlot()
	}
}

func (m *Model) takeSlot(key string) bool {
	if m.Max == 0 {
		return true
	}
	if m.Active < m.Max && len(m.Queue) == 0 {
		m.Active++
		return true
	}
	if !slices.Contains(m.Queue, key) {
		m.Queue = append(m.Queue, key)
	}
	return false
}

func (m *Model) dequeue(key string) {
	m.Queue = slices.DeleteFunc(m.Queue, func(k string) bool { return k == key })
}

// releaseSlot frees a slot, or returns the key it passes to.
func (m *Model) releaseSlot() string {
	if m.Max == 0 {
		return ""
	}
	if len(m.Queue) > 0 {
		key := m.Queue[0]
		m.Queue = m.Queue[1:]
		return key
	}
	m.Active--
	return ""
}

// Finish ends the running attempt of key: ok if it succeeded, panicked if
// it failed by a panic.
func (m *Model) Finish(key string, ok, panicked bool) {
	k := m.Keys[key]
	r := k.Running
	k.Running = nil
	switch {
	case ok:
		k.Live, k.Loaded = r.Rev, true
		if p := k.Pending; p != nil && p.Rev == r.Rev && !p.Force {
			k.Pending = nil
			r.Tickets = append(r.Tickets, p.Tickets...)
		}
		SettleAll(r, r.Rev, dedup.Deployed, false)
	case m.Closed:
		SettleAll(r, r.Rev, dedup.Aborted, false)
	case k.Pending != nil:
		k.Pending.Tickets = append(k.Pending.Tickets, r.Tickets...)
	case r.Attempts < max(1, k.Pol.Retry.MaxAttempts):
		backoff := k.Pol.Retry.Initial
		for range r.Attempts - 1 {
			backoff = time.Duration(float64(backoff) * k.Pol.Retry.Multiplier)
		}
		r.RetryAt = m.Now.Add(min(backoff, k.Pol.Retry.Max))
		r.Canceled = false
		k.Pending = r
	default:
		SettleAll(r, r.Rev, dedup.Failed, panicked)
	}
	m.ended(key)
}

// Interrupt ends the running attempt of key without a result, as when its
// replica died and another one took over after the lease expired: a newer
// pending revision takes the interrupted run's tickets; otherwise the
// interrupted revision runs again (the lost attempt does not count).
func (m *Model) Interrupt(key string) {
	k := m.Keys[key]
	r := k.Running
	k.Running = nil
	if k.Pending != nil {
		k.Pending.Tickets = append(k.Pending.Tickets, r.Tickets...)
	} else {
		r.Attempts--
		r.RetryAt, r.Canceled = time.Time{}, false
		k.Pending = r
	}
	m.ended(key)
}

// Advance moves the model's time to 'to', starting pending runs and timing
// out running attempts at their instants, in order.
func (m *Model) Advance(to time.Time) {
	for {
		var next time.Time
		var nextKey string
		for _, key := range m.Order {
			k := m.Keys[key]
			var at time.Time
			switch {
			case k.Running != nil && k.Pol.Timeout > 0:
				at = k.Running.AttemptStart.Add(k.Pol.Timeout)
			case k.Running == nil && k.Pending != nil && !slices.Contains(m.Queue, key):
				at = m.startAt(k) // a queued key waits for a slot, not a time
			default:
				continue
			}
			if nextKey == "" || at.Before(next) || at.Equal(next) && m.Before != nil && m.Before(key, nextKey, at) {
				next, nextKey = at, key
			}
		}
		if nextKey == "" || next.After(to) {
			m.Now = to
			return
		}
		m.Now = latest(m.Now, next)
		if m.Keys[nextKey].Running != nil {
			m.Finish(nextKey, false, false)
		} else {
			m.tryStart(nextKey)
		}
	}
}

// SlotOrder records a Manager's operations on its concurrency slots (take,
// queue, release) in the order it made them, with their instant, and
// answers Model.Before from them: of two keys due at the same instant, the
// one that made its first slot operation at that instant first went first.
// Without a slot operation a key's turn changes nothing for the others. It
// is safe for concurrent use; its zero value is ready.
type SlotOrder struct {
	mu  sync.Mutex
	ops []slotOp
}

type slotOp struct {
	key string
	at  time.Time
}

// Record records a slot operation of key at instant at (call it from the
// Manager's slot hook, with the Manager's clock).
func (o *SlotOrder) Record(key string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, slotOp{key, at})
}

// Before reports whether key a, due at the same instant as key b, went
// first: it made a slot operation at that instant, and b made none or a
// later one. It has the signature of Model.Before.
func (o *SlotOrder) Before(a, b string, at time.Time) bool {
	ia, ib := o.first(a, at), o.first(b, at)
	return ia >= 0 && (ib < 0 || ia < ib)
}

// first is the position of key's first slot operation at instant at, or -1
// if it made none then.
func (o *SlotOrder) first(key string, at time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, op := range o.ops {
		if op.key == key && op.at.Equal(at) {
			return i
		}
	}
	return -1
}

// Close closes the model's Manager: pending runs settle Aborted, running
// ones Aborted if Close's context expired (they are canceled), else
// Deployed (they are let finish, and the test finishes them).
func (m *Model) Close(expired bool) {
	m.Closed = true
	m.Queue = nil
	for _, key := range m.Order {
		k := m.Keys[key]
		if p := k.Pending; p != nil {
			k.Pending = nil
			SettleAll(p, p.Rev, dedup.Aborted, false)
		}
		if r := k.Running; r != nil {
			k.Running = nil
			if expired {
				m.CanceledByClose = append(m.CanceledByClose, key)
				SettleAll(r, r.Rev, dedup.Aborted, false)
			} else {
				k.Live, k.Loaded = r.Rev, true
				SettleAll(r, r.Rev, dedup.Deployed, false)
			}
		}
	}
}
