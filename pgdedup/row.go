package pgdedup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// row is a key's row, read under its lock, and what a transaction on it
// must do once committed.
type row struct {
	key                            string
	s                              keyrules.State
	runningRun, pendingRun         int64
	runningStarted, pendingStarted time.Time
	lastRun, fence                 int64
	owner                          string
	leaseUntil                     time.Time
	runs, deployed, failures       int
	superseded                     int
	lastErr                        string
	lastFinished                   time.Time
	now                            time.Time // the server's clock

	// Effects, applied by the transaction or after its commit.
	dueAt    time.Time // set by schedule
	claimed  *claim    // an attempt this replica claimed: run it
	results  []result  // run ends to record
	notes    []string  // notifications to send on commit
	evs      []dedup.Event
	errs     map[int64]error // exact errors of the runs settled here, for local tickets
	canceled bool            // cancel-in-progress asked the running attempt to stop
}

// result is a row of the results table.
type result struct {
	run, by  int64 // by: the run this one's tickets moved to (0: none)
	rev      string
	outcome  dedup.Outcome
	err      string
	attempts int
	started  time.Time
}

func tsOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func strOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

// lock reads key's row under its lock. With try, a row locked by another
// transaction is skipped (found false).
func (m *Manager) lock(ctx context.Context, tx pgx.Tx, key string, try bool) (*row, bool, error) {
	q := m.q.keyLock
	if try {
		q = m.q.keyTryLock
	}
	var (
		live, runRev, pendRev, owner, lastErr                                *string
		runStarted, pendFirst, pendLast, pendRetry, pendStarted, lastStarted *time.Time
		lease, lastFinished                                                  *time.Time
		r                                                                    = &row{key: key}
	)
	err := tx.QueryRow(ctx, q, key).Scan(&live, &runRev, &r.s.Running.Force, &r.s.Running.Attempts, &r.s.Running.Canceled, &r.runningRun, &runStarted,
		&pendRev, &r.s.Pending.Force, &r.s.Pending.Attempts, &pendFirst, &pendLast, &pendRetry, &r.pendingRun, &pendStarted,
		&lastStarted, &r.lastRun, &r.fence, &owner, &lease, &r.runs, &r.deployed, &r.failures, &r.superseded, &lastErr, &lastFinished,
		&r.now)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	r.s.Live, r.s.Loaded = deref(live), true
	r.s.Running.Rev, r.runningStarted = deref(runRev), deref(runStarted)
	r.s.Pending.Rev, r.s.Pending.First, r.s.Pending.Last, r.s.Pending.RetryAt = deref(pendRev), deref(pendFirst), deref(pendLast), deref(pendRetry)
	r.pendingStarted, r.s.LastStarted = deref(pendStarted), deref(lastStarted)
	r.owner, r.leaseUntil, r.lastErr, r.lastFinished = deref(owner), deref(lease), deref(lastErr), deref(lastFinished)
	return r, true, nil
}

// save writes r back and sends its notifications and results, inside tx.
func (m *Manager) save(ctx context.Context, tx pgx.Tx, r *row) error {
	s := r.s
	var due any
	if !s.Running.Active() && s.Pending.Active() && !r.dueAt.IsZero() {
		due = r.dueAt
	}
	_, err := tx.Exec(ctx, m.q.keySave, r.key, strOrNil(s.Live),
		strOrNil(s.Running.Rev), s.Running.Force, s.Running.Attempts, s.Running.Canceled, r.runningRun, tsOrNil(r.runningStarted),
		strOrNil(s.Pending.Rev), s.Pending.Force, s.Pending.Attempts, tsOrNil(s.Pending.First), tsOrNil(s.Pending.Last), tsOrNil(s.Pending.RetryAt),
		r.pendingRun, tsOrNil(r.pendingStarted),
		tsOrNil(s.LastStarted), r.lastRun, r.fence, strOrNil(r.owner), tsOrNil(r.leaseUntil), due,
		r.runs, r.deployed, r.failures, r.superseded, strOrNil(r.lastErr), tsOrNil(r.lastFinished))
	if err != nil {
		return err
	}
	for _, res := range r.results {
		var by, outcome any
		if res.by != 0 {
			by = res.by
		} else {
			outcome = int16(res.outcome)
		}
		if _, err := tx.Exec(ctx, m.q.resultPut, r.key, res.run, by, strOrNil(res.rev), outcome, strOrNil(res.err), res.attempts, tsOrNil(res.started)); err != nil {
			return err
		}
	}
	if len(r.results) > 0 {
		r.notes = append(r.notes, "s"+r.key)
	}
	for _, n := range r.notes {
		if _, err := tx.Exec(ctx, m.q.notify, m.channel, n); err != nil {
			return err
		}
	}
	return nil
}

// inKey runs f on key's row inside a transaction that holds the row's
// lock, saves the row and commits. With try, a row another replica holds
// is skipped and inKey returns nil, nil; without, a missing row is made.
// After the commit it starts the attempt f claimed, emits the events and
// settles this replica's tickets on the runs that ended.
func (m *Manager) inKey(ctx context.Context, key string, try bool, f func(r *row, pol *policy) error) (*row, error) {
	pol, err := m.policy(key)
	if err != nil {
		return nil, err
	}
	// A connection that broke (the server restarted, say) fails the
	// transaction before its COMMIT is sent, so it did not commit: try
	// again on another connection, as the pool drops broken ones.
	for tries := 1; ; tries++ {
		r, committing, err := m.inKeyOnce(ctx, key, try, pol, f)
		var pgErr *pgconn.PgError
		if err == nil || committing || tries == 5 || ctx.Err() != nil || errors.As(err, &pgErr) || errors.Is(err, ErrFenced) || errors.Is(err, dedup.ErrInvalid) {
			return r, err
		}
	}
}

func (m *Manager) inKeyOnce(ctx context.Context, key string, try bool, pol *policy, f func(r *row, pol *policy) error) (_ *row, committing bool, _ error) {
	tx, err := m.pool.Begin(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("pgdedup: %q: begin: %w", key, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	r, found, err := m.lock(ctx, tx, key, try)
	if err == nil && !found && !try {
		if _, err = tx.Exec(ctx, m.q.keyEnsure, key); err == nil {
			r, found, err = m.lock(ctx, tx, key, false)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("pgdedup: %q: lock: %w", key, err)
	}
	if !found {
		if try {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("pgdedup: %q: row vanished", key)
	}
	if err := f(r, pol); err != nil {
		return r, false, err
	}
	if err := m.save(ctx, tx, r); err != nil {
		return nil, false, fmt.Errorf("pgdedup: %q: save: %w", key, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, true, fmt.Errorf("pgdedup: %q: commit: %w", key, err)
	}
	m.committed(r)
	return r, false, nil
}

// committed applies what a committed transaction on r leaves to do.
func (m *Manager) committed(r *row) {
	for i := range r.evs {
		m.deliver(r.evs[i])
	}
	if !r.dueAt.IsZero() {
		m.wakeAt(r.dueAt.Sub(r.now))
	}
	if r.canceled {
		m.poke(r.key)
	}
	if len(r.results) > 0 {
		m.check(context.Background(), r.key, r.errs)
	}
	if c := r.claimed; c != nil {
		m.gate.add() // the caller holds a token, so Close waits for this one too
		go m.execute(*c)
	}
}
