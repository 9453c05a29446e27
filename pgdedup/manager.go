package pgdedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrFenced is wrapped by the error reported (to the observer and logger)
// when a replica's attempt ended after another replica had taken its key
// over: its end was not recorded, since a newer attempt holds a higher
// fence.
var ErrFenced = errors.New("pgdedup: attempt fenced off by a newer one")

// ErrLeaseLost is the cause (context.Cause) of an attempt's context canceled
// because its lease could not be renewed in time, or was taken over.
var ErrLeaseLost = errors.New("pgdedup: lease lost")

// errCanceledNewer is the cause of an attempt canceled for a newer revision.
var errCanceledNewer = errors.New("pgdedup: canceled for a newer revision")

// queryTimeout bounds the queries of calls that take no context (Notify,
// Trigger, the background work).
const queryTimeout = 10 * time.Second

// Manager is one replica's handle on the keys of a schema: the dedup
// Manager's guarantees, held across every replica whose Manager shares the
// schema. It is safe for concurrent use. Make one with New and release it
// with Close.
type Manager struct {
	pool    *pgxpool.Pool
	d       dedup.Deployer
	q       queries
	cfg     config
	channel string

	// base is the parent of every attempt's context; Close cancels it
	// when its own context ends first. stop ends the background loops.
	base       context.Context
	cancelBase context.CancelFunc
	stop       context.Context
	cancelStop context.CancelFunc
	loops      sync.WaitGroup

	gate gate // also says whether Close has begun
	seq  atomic.Uint64

	polMu    sync.Mutex
	policies map[dedup.Policy]*policy

	mu       sync.Mutex
	waiting  map[string]map[*Ticket]struct{} // tickets of this replica, by key
	attempts map[string]*attempt             // attempts running here, by key
	settled  map[string]struct{}             // keys whose runs ended elsewhere: check their tickets
	// localErrs holds the exact errors of runs this replica settles, from
	// just before their commit until its own check has run.
	localErrs map[runKey]error
	wakeAtT   time.Time     // earliest wake-up asked for
	fullAsked bool          // the next sweep checks every key with a waiting ticket (LISTEN reconnected)
	wake      chan struct{} // signals the wake loop
}

// policy is a key's dedup.Policy and its keyrules form.
type policy struct {
	p dedup.Policy
	k keyrules.Policy
}

// New returns a replica's Manager that deploys with d, on the tables of
// its schema in pool's database, which it creates or migrates first (also
// when every replica starts at once). It blocks until that is done or ctx
// ends. Keep pool open until Close returns. Unless WithoutListen, the
// Manager takes one connection out of pool for LISTEN for its lifetime;
// the pool opens another in its place, so a replica uses up to the pool's
// MaxConns + 1 server connections.
//
// It returns an error wrapping dedup.ErrInvalid for a nil pool or
// Deployer or a bad option, and the database's error if the migration
// fails.
func New(ctx context.Context, pool *pgxpool.Pool, d dedup.Deployer, opts ...Option) (*Manager, error) {
	cfg := config{schema: DefaultSchema, lease: DefaultLease, poll: DefaultPollInterval, retention: DefaultRetention, listen: true}
	if pool == nil {
		cfg.errorf("nil pool")
	}
	if f, isFunc := d.(dedup.DeployFunc); d == nil || (isFunc && f == nil) {
		cfg.errorf("nil Deployer")
	}
	for _, o := range opts {
		if o == nil {
			cfg.errorf("nil Option")
			continue
		}
		o(&cfg)
	}
	if err := cfg.policy.Validate(); err != nil {
		cfg.errs = append(cfg.errs, err)
	}
	if len(cfg.errs) > 0 {
		return nil, errors.Join(cfg.errs...)
	}
	if cfg.replica == "" {
		host, _ := os.Hostname()
		cfg.replica = fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.Uint32()&0xffff)
	}
	m := &Manager{
		pool: pool, d: d, cfg: cfg,
		channel:   "dedupdeploy_" + cfg.schema,
		policies:  make(map[dedup.Policy]*policy),
		waiting:   make(map[string]map[*Ticket]struct{}),
		attempts:  make(map[string]*attempt),
		settled:   make(map[string]struct{}),
		localErrs: make(map[runKey]error),
		wake:      make(chan struct{}, 1),
	}
	var err error
	if m.q, err = parseQueries(cfg.schema); err != nil {
		return nil, err
	}
	if err := m.migrate(ctx); err != nil {
		return nil, err
	}
	m.base, m.cancelBase = context.WithCancel(context.Background())
	m.stop, m.cancelStop = context.WithCancel(context.Background())
	m.gate.init()
	m.loops.Add(1)
	go m.wakeLoop()
	if cfg.listen {
		m.loops.Add(1)
		go m.listenLoop()
	}
	return m, nil
}

// migrate creates the schema, one replica at a time.
func (m *Manager) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.q.migrateLock, m.cfg.schema); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, m.q.migrate)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgdedup: create schema %q: %w", m.cfg.schema, err)
	}
	return nil
}

// ID returns the replica's id, as the owner of the keys it runs.
func (m *Manager) ID() string { return m.cfg.replica }

// policy returns key's policy.
func (m *Manager) policy(key string) (*policy, error) {
	p := m.cfg.policy
	if m.cfg.keyPolicy != nil {
		p = m.cfg.keyPolicy(key)
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("key policy of %q: %w", key, err)
		}
	}
	p.Retry = p.Retry.WithDefaults() // policies that differ only in spelled-out defaults share one entry
	m.polMu.Lock()
	defer m.polMu.Unlock()
	if pp := m.policies[p]; pp != nil {
		return pp, nil
	}
	r := p.Retry
	pp := &policy{p: p, k: keyrules.Policy{Quiet: p.Quiet, MaxDelay: p.MaxDelay, MinInterval: p.MinInterval,
		MaxAttempts: r.MaxAttempts, RetryInitial: r.Initial, RetryMax: r.Max, RetryMultiplier: r.Multiplier,
		RetryJitter: r.Jitter, CancelInProgress: p.CancelInProgress}}
	if len(m.policies) < maxInterned {
		// Beyond this many distinct policies (say, a timeout computed
		// per key), each call gets its own copy, as in dedup: the cache
		// never grows with the number of keys.
		m.policies[p] = pp
	}
	return pp, nil
}

// maxInterned bounds the policy cache, as dedup's does.
const maxInterned = 256

// Notify triggers rev of key without waiting for the result, like
// dedup.Manager.Notify, with the rules applied across every replica: it
// blocks for one transaction (at most 10s) and returns its error, wrapped.
// It returns an error wrapping dedup.ErrInvalid for a bad key or revision
// and dedup.ErrClosed after Close. It is what the poller calls.
func (m *Manager) Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	_, err := m.trigger(ctx, key, rev, opts, false)
	return err
}

// Trigger triggers rev of key and returns a Ticket that says what the
// trigger did (Ticket.Action, Ticket.Replaced) and, once settled, how the
// run that covered it ended, whichever replica ran it. It blocks for one
// transaction (at most 10s), never for a deploy. Errors as Notify.
func (m *Manager) Trigger(key string, rev dedup.Revision, opts ...dedup.TriggerOption) (*Ticket, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	return m.trigger(ctx, key, rev, opts, true)
}

// Submit is Notify that also says what the trigger did (as Ticket.Action
// and Ticket.Replaced say it), without a Ticket: for a caller that answers
// at once and never waits, such as a webhook. It blocks for one
// transaction (at most 10s). Errors as Notify.
func (m *Manager) Submit(key string, rev dedup.Revision, opts ...dedup.TriggerOption) (dedup.Action, dedup.Revision, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	t, err := m.trigger(ctx, key, rev, opts, false)
	if err != nil {
		return 0, "", err
	}
	return t.action, t.replaced, nil
}

// TriggerContext is Trigger with the transaction bounded by ctx instead.
func (m *Manager) TriggerContext(ctx context.Context, key string, rev dedup.Revision, opts ...dedup.TriggerOption) (*Ticket, error) {
	return m.trigger(ctx, key, rev, opts, true)
}

// Deploy triggers rev of key and waits for the result, like Trigger
// followed by Ticket.Wait. It blocks until the ticket is settled or ctx is
// done; ctx bounds the wait and the trigger's transaction, not the deploy.
func (m *Manager) Deploy(ctx context.Context, key string, rev dedup.Revision, opts ...dedup.TriggerOption) (dedup.Result, error) {
	t, err := m.trigger(ctx, key, rev, opts, true)
	if err != nil {
		return dedup.Result{}, err
	}
	return t.Wait(ctx)
}

func forced(opts []dedup.TriggerOption) bool {
	for _, o := range opts {
		if o == dedup.Force() {
			return true
		}
	}
	return false
}

func (m *Manager) trigger(ctx context.Context, key string, rev dedup.Revision, opts []dedup.TriggerOption, wait bool) (*Ticket, error) {
	if err := dedup.ValidKey(key); err != nil {
		return nil, err
	}
	if err := dedup.ValidRevision(rev); err != nil {
		return nil, err
	}
	if !m.gate.enter() {
		return nil, dedup.ErrClosed
	}
	defer m.gate.leave()
	force := forced(opts)
	t := &Ticket{key: key, requested: rev, done: make(chan struct{})}
	_, err := m.inKey(ctx, key, false, func(r *row, pol *policy) error {
		m.unhold(t) // a transaction tried again starts afresh
		wasPending, wasRunning := r.s.Pending.Active(), r.s.Running.Active()
		var q keyrules.Requested
		r.s, q = keyrules.Request(r.s, &pol.k, r.now, string(rev), force)
		t.action, t.replaced = dedup.Action(q.Action), dedup.Revision(q.Replaced)
		switch q.Action {
		case keyrules.ActionUnchanged:
			r.event(m, dedup.Event{Kind: dedup.EventUnchanged, Revision: rev})
			return nil
		case keyrules.ActionJoinedRunning:
			r.event(m, dedup.Event{Kind: dedup.EventCoalesced, Revision: rev, Attempt: r.s.Running.Attempts})
			m.hold(t, r.runningRun, wait)
			return nil
		case keyrules.ActionJoinedPending:
			r.event(m, dedup.Event{Kind: dedup.EventCoalesced, Revision: rev, Attempt: r.s.Pending.Attempts})
			m.hold(t, r.pendingRun, wait)
			return nil
		}
		if !wasPending {
			r.lastRun++
			r.pendingRun, r.pendingStarted = r.lastRun, time.Time{}
			r.event(m, dedup.Event{Kind: dedup.EventQueued, Revision: rev})
		} else {
			r.superseded++
			r.event(m, dedup.Event{Kind: dedup.EventCoalesced, Revision: rev, Replaced: t.replaced})
		}
		if q.Reset {
			r.pendingStarted = time.Time{}
		}
		if q.Cancel {
			r.canceled = true
			r.notes = append(r.notes, "c"+key)
			r.event(m, dedup.Event{Kind: dedup.EventCanceled, Revision: rev, Replaced: dedup.Revision(r.s.Running.Rev), Attempt: r.s.Running.Attempts})
		}
		m.hold(t, r.pendingRun, wait)
		claimed := m.schedule(r, pol)
		switch {
		case wasRunning:
		case claimed:
			t.action = dedup.ActionStarted
		case !r.s.Pending.Active():
			t.action = dedup.ActionUnchanged
		}
		return nil
	})
	if err != nil {
		m.unhold(t)
		return nil, err
	}
	if t.action == dedup.ActionUnchanged && !m.holds(t) {
		t.settle(dedup.Result{Key: key, Requested: rev, Revision: rev, Outcome: dedup.Unchanged, Started: time.Now(), Finished: time.Now()})
	}
	return t, nil
}

// hold registers t as waiting on run before its transaction commits, so
// that no run's end can be missed; the transaction's failure drops it again.
func (m *Manager) hold(t *Ticket, run int64, wait bool) {
	if !wait {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t.run = run
	ts := m.waiting[t.key]
	if ts == nil {
		ts = make(map[*Ticket]struct{})
		m.waiting[t.key] = ts
	}
	ts[t] = struct{}{}
}

// holds reports whether t waits on a run (or was settled by one).
func (m *Manager) holds(t *Ticket) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return t.run != 0
}

func (m *Manager) unhold(t *Ticket) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t.run = 0
	if ts := m.waiting[t.key]; ts != nil {
		delete(ts, t)
		if len(ts) == 0 {
			delete(m.waiting, t.key)
		}
	}
}

// schedule applies keyrules.Schedule to r after a change, and claims the
// pending run for this replica if it is due. It reports whether it did.
func (m *Manager) schedule(r *row, pol *policy) bool {
	var sch keyrules.Scheduled
	r.s, sch = keyrules.Schedule(r.s, &pol.k, r.now)
	r.dueAt = time.Time{}
	switch sch.Kind {
	case keyrules.BackToLive:
		r.results = append(r.results, result{run: r.pendingRun, rev: sch.Rev, outcome: dedup.Unchanged, started: r.now})
		r.pendingRun = 0
		r.event(m, dedup.Event{Kind: dedup.EventUnchanged, Revision: dedup.Revision(sch.Rev)})
	case keyrules.Wait:
		r.dueAt = sch.At
	case keyrules.Due:
		if m.gate.isClosed() {
			r.dueAt = r.now
			r.notes = append(r.notes, "w") // another replica takes it
			return false
		}
		return m.claim(r, pol)
	}
	return false
}

// claim starts an attempt of r's pending run on this replica: a new fence
// and a lease, under pol.
func (m *Manager) claim(r *row, pol *policy) bool {
	r.s, _ = keyrules.Start(r.s)
	r.s = keyrules.Begin(r.s, r.now)
	r.runningRun, r.pendingRun = r.pendingRun, 0
	if r.s.Running.Attempts == 1 || r.pendingStarted.IsZero() {
		r.runningStarted = r.now
	} else {
		r.runningStarted = r.pendingStarted
	}
	r.pendingStarted = time.Time{}
	r.fence++
	r.owner = m.cfg.replica
	r.leaseUntil = r.now.Add(m.cfg.lease)
	r.runs++
	r.claimed = &claim{key: r.key, rev: dedup.Revision(r.s.Running.Rev), fence: r.fence, attempt: r.s.Running.Attempts, sent: r.sent, pol: pol}
	r.event(m, dedup.Event{Kind: dedup.EventStarted, Revision: dedup.Revision(r.s.Running.Rev), Attempt: r.s.Running.Attempts})
	return true
}

// event adds an event of r's key, stamped and numbered when delivered.
func (r *row) event(m *Manager, e dedup.Event) {
	if m.cfg.observer == nil && m.cfg.logger == nil {
		return
	}
	e.Key = r.key
	r.evs = append(r.evs, e)
}

func (m *Manager) deliver(e dedup.Event) {
	e.Seq = m.seq.Add(1)
	e.Time = time.Now()
	if m.cfg.logger != nil {
		lvl := slog.LevelInfo
		switch e.Kind {
		case dedup.EventFailed, dedup.EventRetrying, dedup.EventStoreFailed:
			lvl = slog.LevelWarn
		case dedup.EventCoalesced:
			lvl = slog.LevelDebug
		}
		attrs := []slog.Attr{slog.String("key", e.Key), slog.String("revision", string(e.Revision)), slog.String("replica", m.cfg.replica)}
		if e.Replaced != "" {
			attrs = append(attrs, slog.String("replaced", string(e.Replaced)))
		}
		if e.Attempt > 0 {
			attrs = append(attrs, slog.Int("attempt", e.Attempt))
		}
		if e.Err != nil {
			attrs = append(attrs, slog.Any("err", e.Err))
		}
		m.cfg.logger.LogAttrs(context.Background(), lvl, "pgdedup: "+e.Kind.String(), attrs...)
	}
	if m.cfg.observer != nil {
		m.cfg.observer(e)
	}
}

// Close stops the replica: it refuses new triggers (dedup.ErrClosed),
// claims nothing more, lets the attempts running here finish until ctx
// ends and then cancels them, handing their keys back at once (not after
// the lease) so another replica runs them. Tickets of this replica that
// are still waiting settle Aborted with dedup.ErrClosed; the runs they
// waited on stay in the database for the other replicas. It blocks until
// every goroutine of the Manager has ended and returns ctx.Err() if ctx
// ended first. A second call waits the same way.
func (m *Manager) Close(ctx context.Context) error {
	var err error
	idle := m.gate.close()
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
		m.cancelBase()
		<-idle
	}
	m.cancelStop()
	m.loops.Wait()
	m.cancelBase()
	m.mu.Lock()
	var keys []string
	for k := range m.waiting {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	for _, k := range keys {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		m.check(c, k)
		cancel()
	}
	m.mu.Lock()
	var abort []*Ticket
	for k, ts := range m.waiting {
		for t := range ts {
			abort = append(abort, t)
		}
		delete(m.waiting, k)
	}
	m.mu.Unlock()
	for _, t := range abort {
		now := time.Now()
		t.settle(dedup.Result{Key: t.key, Requested: t.requested, Outcome: dedup.Aborted, Err: dedup.ErrClosed, Started: now, Finished: now})
	}
	return err
}

// gate counts the work in flight (triggers, sweeps, attempts) so that Close
// can wait for it, and refuses new work once closed.
type gate struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (g *gate) init() { g.idle = make(chan struct{}) }

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

// add counts more work while the caller holds a token.
func (g *gate) add() {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.closed {
		select {
		case <-g.idle:
		default:
			close(g.idle)
		}
	}
}

// isClosed reports whether close has been called.
func (g *gate) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.n == 0 {
		select {
		case <-g.idle:
		default:
			close(g.idle)
		}
	}
	return g.idle
}

// What the poller and the webhook call: *Manager fits wherever a
// *dedup.Manager is taken through Notify.
var _ interface {
	Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error
} = (*Manager)(nil)
