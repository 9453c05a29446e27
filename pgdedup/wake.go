package pgdedup

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/jackc/pgx/v5"
)

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// signal wakes the wake loop.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// wakeAt asks the wake loop to look for claimable keys after d.
func (m *Manager) wakeAt(d time.Duration) {
	at := time.Now().Add(d)
	m.mu.Lock()
	earlier := m.wakeAtT.IsZero() || at.Before(m.wakeAtT)
	if earlier {
		m.wakeAtT = at
	}
	m.mu.Unlock()
	if earlier {
		m.signal()
	}
}

// poke makes the attempt of key running here renew its lease now, which
// tells it whether it was canceled.
func (m *Manager) poke(key string) {
	m.mu.Lock()
	a := m.attempts[key]
	m.mu.Unlock()
	if a != nil {
		select {
		case a.poke <- struct{}{}:
		default:
		}
	}
}

// wakeLoop claims the keys that come due, and settles this replica's
// tickets whose runs ended elsewhere: when a notification or a timer says
// so, and every poll interval regardless.
func (m *Manager) wakeLoop() {
	defer m.loops.Done()
	poll := time.NewTicker(m.cfg.poll)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sweeps := 0
	for full := true; ; full = false {
		select {
		case <-m.stop.Done():
			return
		case <-m.wake:
		case <-timer.C:
			m.mu.Lock()
			m.wakeAtT = time.Time{}
			m.mu.Unlock()
		case <-poll.C:
			full = true
		}
		m.mu.Lock()
		if m.fullAsked {
			full, m.fullAsked = true, false
		}
		m.mu.Unlock()
		if !m.gate.enter() {
			return
		}
		ctx, cancel := context.WithTimeout(m.stop, queryTimeout)
		m.sweep(ctx, full)
		if full {
			if sweeps++; sweeps%32 == 0 {
				m.pool.Exec(ctx, m.q.resultsPrune, fmt.Sprintf("%d microseconds", m.cfg.retention.Microseconds()))
			}
		}
		cancel()
		m.gate.leave()
		m.mu.Lock()
		at := m.wakeAtT
		m.mu.Unlock()
		if !at.IsZero() {
			timer.Reset(max(time.Until(at), 0))
		}
	}
}

// sweep claims what is claimable and checks tickets: of the keys whose
// runs were reported ended, or (full) of every key with a waiting ticket.
func (m *Manager) sweep(ctx context.Context, full bool) {
	m.mu.Lock()
	var keys []string
	if full {
		for k := range m.waiting {
			keys = append(keys, k)
		}
		clear(m.settled)
	} else {
		for k := range m.settled {
			keys = append(keys, k)
		}
		clear(m.settled)
	}
	m.mu.Unlock()
	for _, k := range keys {
		m.check(ctx, k)
	}
	if !m.gate.isClosed() {
		m.claimDue(ctx)
	}
	var secs *float64
	if err := m.pool.QueryRow(ctx, m.q.nextWake).Scan(&secs); err == nil && secs != nil {
		d := time.Duration(math.Max(*secs, 0) * float64(time.Second))
		m.mu.Lock()
		if at := time.Now().Add(d); m.wakeAtT.IsZero() || at.Before(m.wakeAtT) {
			m.wakeAtT = at
		}
		m.mu.Unlock()
	}
}

// claimDue claims every key whose pending run is due or whose lease
// expired, a batch at a time, each in a transaction of its own that skips
// keys other replicas hold.
func (m *Manager) claimDue(ctx context.Context) {
	for range 100 { // at most 100 batches per sweep: the next sweep goes on
		rows, err := m.pool.Query(ctx, m.q.keysClaimable, 64)
		if err != nil {
			return
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(keys) == 0 {
			return
		}
		progress := false
		for _, k := range keys {
			if m.gate.isClosed() {
				return
			}
			r, err := m.inKey(ctx, k, true, func(r *row, pol *policy) error {
				if r.s.Running.Active() {
					if !r.leaseUntil.Before(r.now) {
						return nil // renewed meanwhile
					}
					m.interrupt(r, pol) // its replica died or stalled: take over
					return nil
				}
				m.schedule(r, pol)
				return nil
			})
			if err == nil && r != nil {
				progress = true
			}
		}
		if !progress {
			return
		}
	}
}

// check settles this replica's tickets on key whose runs have ended,
// following the runs that took over others' tickets. A run this replica
// settled gives its tickets its exact error (Manager.localErrs).
func (m *Manager) check(ctx context.Context, key string) {
	for range 8 { // a ticket moves at most a few runs on per check
		m.mu.Lock()
		ts := m.waiting[key]
		runs := make([]int64, 0, len(ts))
		seen := map[int64]bool{}
		for t := range ts {
			if !seen[t.run] {
				seen[t.run] = true
				runs = append(runs, t.run)
			}
		}
		m.mu.Unlock()
		if len(runs) == 0 {
			return
		}
		rows, err := m.pool.Query(ctx, m.q.resultsGet, key, runs)
		if err != nil {
			return
		}
		type end struct {
			by                *int64
			rev, err          *string
			outcome           *int16
			attempts          int
			started, finished *time.Time
		}
		ends := map[int64]end{}
		for rows.Next() {
			var run int64
			var e end
			if rows.Scan(&run, &e.by, &e.rev, &e.outcome, &e.err, &e.attempts, &e.started, &e.finished) == nil {
				ends[run] = e
			}
		}
		rows.Close()
		if len(ends) == 0 {
			return
		}
		moved := false
		var settle []*Ticket
		m.mu.Lock()
		for t := range m.waiting[key] {
			e, ok := ends[t.run]
			if !ok {
				continue
			}
			if e.by != nil {
				t.run = *e.by
				moved = true
				continue
			}
			res := dedup.Result{Key: key, Requested: t.requested, Revision: dedup.Revision(deref(e.rev)), Attempts: e.attempts,
				Started: deref(e.started), Finished: deref(e.finished)}
			if e.outcome != nil {
				res.Outcome = dedup.Outcome(*e.outcome)
			}
			if res.Started.IsZero() {
				res.Started = res.Finished
			}
			if res.Outcome == dedup.Failed {
				if err := m.localErrs[runKey{key, t.run}]; err != nil {
					res.Err = err
				} else {
					res.Err = errors.New(deref(e.err))
				}
			}
			if res.Requested != res.Revision && (res.Outcome == dedup.Deployed || res.Outcome == dedup.Unchanged) {
				res.Outcome = dedup.Superseded
			}
			t.res = res
			settle = append(settle, t)
			delete(m.waiting[key], t)
		}
		if len(m.waiting[key]) == 0 {
			delete(m.waiting, key)
		}
		m.mu.Unlock()
		for _, t := range settle {
			t.settle(t.res)
		}
		if !moved {
			return
		}
	}
}

// listenLoop holds the replica's LISTEN connection, taken from the pool and
// hijacked so the pool never hands it out, and turns notifications into
// wake-ups. When the connection breaks it reconnects with backoff, and
// sweeps in full once back, since notifications may have been missed.
func (m *Manager) listenLoop() {
	defer m.loops.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if m.listen() {
			wait = 100 * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-m.stop.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// listen listens until the connection breaks or the Manager stops. It
// reports whether it got to listen at all.
func (m *Manager) listen() bool {
	ctx, cancel := context.WithTimeout(m.stop, queryTimeout)
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		cancel()
		return false
	}
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{m.channel}.Sanitize())
	cancel()
	if err != nil {
		return false
	}
	m.mu.Lock()
	m.fullAsked = true // notifications may have been missed while not listening
	m.mu.Unlock()
	m.signal()
	for {
		n, err := conn.WaitForNotification(m.stop)
		if err != nil {
			return true
		}
		if n.Payload == "" {
			continue
		}
		switch key := n.Payload[1:]; n.Payload[0] {
		case 'w':
			m.signal()
		case 's':
			m.mu.Lock()
			_, waits := m.waiting[key]
			if waits {
				m.settled[key] = struct{}{}
			}
			m.mu.Unlock()
			if waits {
				m.signal()
			}
		case 'c':
			m.poke(key)
		}
	}
}
