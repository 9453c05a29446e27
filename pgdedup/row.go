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
	sent                           time.Time // this replica's clock before the row lock was asked for

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

// scanRow reads a key's row as KeyLock or KeyTryLock return it. found is
// false when there is no row (or, with KeyTryLock, another transaction
// holds it).
func scanRow(key string, src pgx.Row) (*row, bool, error) {
	var (
		live, runRev, pendRev, owner, lastErr                                *string
		runStarted, pendFirst, pendLast, pendRetry, pendStarted, lastStarted *time.Time
		lease, lastFinished                                                  *time.Time
		r                                                                    = &row{key: key}
	)
	err := src.Scan(&live, &runRev, &r.s.Running.Force, &r.s.Running.Attempts, &r.s.Running.Canceled, &r.runningRun, &runStarted,
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

// queueSave queues, on b, the statements that write r back, record the
// ends of its runs and send its notifications.
func (m *Manager) queueSave(b *pgx.Batch, r *row) {
	s := r.s
	var due any
	if !s.Running.Active() && s.Pending.Active() && !r.dueAt.IsZero() {
		due = r.dueAt
	}
	b.Queue(m.q.keySave, r.key, strOrNil(s.Live),
		strOrNil(s.Running.Rev), s.Running.Force, s.Running.Attempts, s.Running.Canceled, r.runningRun, tsOrNil(r.runningStarted),
		strOrNil(s.Pending.Rev), s.Pending.Force, s.Pending.Attempts, tsOrNil(s.Pending.First), tsOrNil(s.Pending.Last), tsOrNil(s.Pending.RetryAt),
		r.pendingRun, tsOrNil(r.pendingStarted),
		tsOrNil(s.LastStarted), r.lastRun, r.fence, strOrNil(r.owner), tsOrNil(r.leaseUntil), due,
		r.runs, r.deployed, r.failures, r.superseded, strOrNil(r.lastErr), tsOrNil(r.lastFinished))
	for _, res := range r.results {
		var by, outcome any
		if res.by != 0 {
			by = res.by
		} else {
			outcome = int16(res.outcome)
		}
		b.Queue(m.q.resultPut, r.key, res.run, by, strOrNil(res.rev), outcome, strOrNil(res.err), res.attempts, tsOrNil(res.started))
	}
	if len(r.results) > 0 {
		r.notes = append(r.notes, "s"+r.key)
	}
	for _, n := range r.notes {
		b.Queue(m.q.notify, m.channel, n)
	}
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

// inKeyOnce is one try of inKey. It takes two round trips: BEGIN and the
// row lock in one pipeline, then the writes and COMMIT in another (a
// statement that fails makes the server skip the rest, COMMIT included).
// committing reports an error from COMMIT itself, whose outcome is unknown.
func (m *Manager) inKeyOnce(ctx context.Context, key string, try bool, pol *policy, f func(r *row, pol *policy) error) (_ *row, committing bool, _ error) {
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("pgdedup: %q: connect: %w", key, err)
	}
	// A connection left inside a transaction is closed by Release, not
	// reused: rollback is only to keep the connection.
	defer pc.Release()
	conn := pc.Conn()
	rollback := func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Exec(c, "ROLLBACK")
	}
	lockQ := m.q.keyLock
	if try {
		lockQ = m.q.keyTryLock
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockQ, key)
	sent := time.Now() // a lease claimed here ends ttl after the server read its clock, which is later
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	var r *row
	var found bool
	if err == nil {
		r, found, err = scanRow(key, br.QueryRow())
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && !found && !try {
		if _, err = conn.Exec(ctx, m.q.keyEnsure, key); err == nil {
			r, found, err = scanRow(key, conn.QueryRow(ctx, m.q.keyLock, key))
		}
	}
	if err != nil {
		rollback()
		return nil, false, fmt.Errorf("pgdedup: %q: lock: %w", key, err)
	}
	if !found {
		rollback()
		if try {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("pgdedup: %q: row vanished", key)
	}
	r.sent = sent
	if err := f(r, pol); err != nil {
		rollback()
		return r, false, err
	}
	// The exact errors of runs settled here (a *dedup.PanicError, say)
	// are known before the commit, so any check that follows it, also one
	// woken by this very commit's notification, gives them to the tickets.
	m.keepErrs(r, true)
	defer m.keepErrs(r, false)
	b = &pgx.Batch{}
	m.queueSave(b, r)
	b.Queue("COMMIT")
	n := b.Len()
	br = conn.SendBatch(ctx, b)
	for i := range n {
		if _, err = br.Exec(); err != nil {
			br.Close()
			if i == n-1 {
				return nil, true, fmt.Errorf("pgdedup: %q: commit: %w", key, err)
			}
			rollback()
			return nil, false, fmt.Errorf("pgdedup: %q: save: %w", key, err)
		}
	}
	if err := br.Close(); err != nil {
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
		m.check(context.Background(), r.key)
	}
	if c := r.claimed; c != nil {
		m.gate.add() // the caller holds a token, so Close waits for this one too
		go m.execute(*c)
	}
}

// runKey names a run of a key.
type runKey struct {
	key string
	run int64
}

// keepErrs adds (or removes) the exact errors of r's runs to those check
// hands to this replica's tickets.
func (m *Manager) keepErrs(r *row, keep bool) {
	if len(r.errs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for run, err := range r.errs {
		if keep {
			m.localErrs[runKey{r.key, run}] = err
		} else {
			delete(m.localErrs, runKey{r.key, run})
		}
	}
}
