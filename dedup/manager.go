package dedup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Manager deploys keys so that deploys never pile up: per key, one deploy
// runs at a time and one pending slot holds the newest revision triggered
// meanwhile. A Manager is safe for concurrent use. Make one with New and
// release it with Close.
type Manager struct {
	deployer      Deployer
	clock         Clock
	store         Store // nil: the Manager's memory is the store
	defaultPolicy *Policy
	keyPolicy     func(string) Policy
	maxConcurrent int
	observer      func(Event)
	logger        *slog.Logger
	notify        bool // observer or logger set: build events

	slow slowPolicy // WithSlowDeploy

	// base is the parent of every deploy's context; Close cancels it when
	// its own context ends before the running deploys do.
	base       context.Context
	cancelBase context.CancelFunc

	// wg counts the goroutines that deploy and the armed timers, so that
	// Close can wait for all of them.
	wg counter

	closed atomic.Bool
	seq    atomic.Uint64    // of the last Event
	shards [numShards]shard // the keys, striped so that keys rarely share a lock

	policyMu sync.Mutex
	policies map[Policy]*Policy // one copy of each distinct policy

	// With WithMaxConcurrent: the slots taken and the keys ready to start
	// that wait for one, in FIFO order. Lock order: shard, then slotMu.
	slotMu sync.Mutex
	active int
	queue  []*keyState
}

const numShards = 64

// shard guards the state of the keys that hash to it. Deploys of keys in
// different shards never contend for a lock.
type shard struct {
	mu   sync.Mutex
	keys map[string]*keyState
	_    [64 - 16]byte // one cache line each
}

// shard picks the shard of key by its FNV-1a hash: inlined, it costs less
// than the map lookup that follows, which hashes the key again. Keys only
// ever share a lock by it, so a poor spread costs contention, not
// correctness.
func (m *Manager) shard(key string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &m.shards[(h^h>>16)%numShards]
}

// New returns a Manager that deploys with d. It returns an error wrapping
// ErrInvalid if d is nil or an option has a bad value.
func New(d Deployer, opts ...Option) (*Manager, error) {
	cfg := config{clock: SystemClock{}}
	if f, isFunc := d.(DeployFunc); d == nil || (isFunc && f == nil) {
		cfg.errorf("nil Deployer")
	}
	for _, o := range opts {
		if o == nil {
			cfg.errorf("nil Option")
			continue
		}
		o(&cfg)
	}
	if err := cfg.policy.validate(); err != nil {
		cfg.errs = append(cfg.errs, err)
	}
	if len(cfg.errs) > 0 {
		return nil, errors.Join(cfg.errs...)
	}
	m := &Manager{
		deployer:      d,
		clock:         cfg.clock,
		store:         cfg.store,
		keyPolicy:     cfg.keyPolicy,
		maxConcurrent: cfg.maxConcurrent,
		observer:      cfg.observer,
		logger:        cfg.logger,
		notify:        cfg.observer != nil || cfg.logger != nil,
		slow:          cfg.slow,
		policies:      make(map[Policy]*Policy),
	}
	for i := range m.shards {
		m.shards[i].keys = make(map[string]*keyState)
	}
	m.defaultPolicy = m.intern(cfg.policy)
	m.base, m.cancelBase = context.WithCancel(context.Background())
	return m, nil
}

// Trigger asks for rev to become the live revision of key and returns the
// ticket that tells when and how that was settled, and what the trigger did
// (Ticket.Action, Ticket.Replaced). It never blocks on a deploy and does no
// I/O.
//
// If rev is already where key is heading (the pending revision, else the
// running one, else the live one), Trigger joins it; a live revision with
// nothing running or pending settles the ticket at once as Unchanged, unless
// Force is given. Otherwise rev becomes the pending revision, replacing
// (superseding) the one pending before, and starts as soon as the key's
// running deploy ends and its policy allows.
//
// Trigger returns an error wrapping ErrInvalid for a bad key or revision and
// ErrClosed after Close.
func (m *Manager) Trigger(key string, rev Revision, opts ...TriggerOption) (*Ticket, error) {
	r, now, did, err := m.trigger(key, rev, opts, true)
	if err != nil {
		return nil, err
	}
	t := &Ticket{key: did.ks.key, requested: rev, run: r, action: did.action, replaced: did.replaced}
	if r == nil {
		t.at = now
	}
	return t, nil
}

// Notify is Trigger for callers that never wait for the result, such as a
// poller: the same rules, no Ticket, so no allocation when a trigger joins or
// replaces a pending revision.
func (m *Manager) Notify(key string, rev Revision, opts ...TriggerOption) error {
	_, _, _, err := m.trigger(key, rev, opts, false)
	return err
}

// Deploy triggers rev of key and waits for the result, like Trigger followed
// by Ticket.Wait. It blocks until the ticket is settled or ctx is done;
// ctx only bounds the wait, not the deploy.
func (m *Manager) Deploy(ctx context.Context, key string, rev Revision, opts ...TriggerOption) (Result, error) {
	t, err := m.Trigger(key, rev, opts...)
	if err != nil {
		return Result{}, err
	}
	return t.Wait(ctx)
}

func (m *Manager) trigger(key string, rev Revision, opts []TriggerOption, wait bool) (*run, time.Time, did, error) {
	if err := validate("key", key); err != nil {
		return nil, time.Time{}, did{}, err
	}
	if err := validate("revision", string(rev)); err != nil {
		return nil, time.Time{}, did{}, err
	}
	force := false
	for _, o := range opts {
		force = force || o.force
	}
	evs := events{on: m.notify, seq: &m.seq}
	sh := m.shard(key)
	sh.mu.Lock()
	ks, err := m.key(sh, key)
	if err != nil {
		sh.mu.Unlock()
		return nil, time.Time{}, did{}, err
	}
	now := instant{c: m.clock}
	r, start, did := m.request(ks, rev, force, wait, &now, &evs)
	if len(evs.list) > 0 {
		evs.list[0].Action = did.action // the trigger's own event comes first
	}
	did.ks = ks
	if start != nil {
		m.wg.Add(1) // under the lock, so that Close waits for it
	}
	sh.mu.Unlock()
	m.emit(&evs)
	if start != nil {
		go m.work(ks, start) // after the events that led to it
	}
	if wait && r == nil {
		return nil, now.get(), did, nil // settled at once: the ticket needs the time
	}
	return r, time.Time{}, did, nil
}

// key returns the state of key, creating it if needed. It is called with
// sh.mu held, and releases it while it calls the key policy function.
func (m *Manager) key(sh *shard, key string) (*keyState, error) {
	if m.closed.Load() {
		return nil, ErrClosed
	}
	if ks := sh.keys[key]; ks != nil {
		return ks, nil
	}
	pol := m.defaultPolicy
	if m.keyPolicy != nil {
		sh.mu.Unlock()
		p := m.keyPolicy(key)
		sh.mu.Lock()
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("policy of key %q: %w", key, err)
		}
		if m.closed.Load() {
			return nil, ErrClosed
		}
		if ks := sh.keys[key]; ks != nil { // created while the lock was released
			return ks, nil
		}
		pol = m.intern(p)
	}
	key = strings.Clone(key) // do not retain the caller's buffer
	ks := &keyState{key: key, shard: sh, policy: pol, loaded: m.store == nil}
	sh.keys[key] = ks
	return ks, nil
}

func (m *Manager) intern(p Policy) *Policy {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	p.Retry = p.Retry.withDefaults()
	if q := m.policies[p]; q != nil {
		return q
	}
	q := &p
	m.policies[p] = q
	return q
}

// Forget drops what the Manager holds of key, if nothing of it runs or
// waits: an idle key costs a few hundred bytes, and a service whose keys
// come and go (say, a preview environment per pull request) forgets the
// ones that went. It reports whether key is gone; true also for a key never
// triggered. It returns false, and forgets nothing, while
//   - a deploy of key runs, or a revision of key is pending (also one
//     waiting for its retry);
//   - the key's MinInterval since its last start has not passed: its next
//     run must still wait for it;
//   - with a Store, the live revision is known only to the Manager, because
//     its Save failed (Status.StoreErr): forgetting would lose it. A later
//     successful deploy saves the live revision again.
//
// A forgotten key starts afresh at its next trigger: its counters and last
// error are gone. Its live revision is read from the Store again; without
// a Store it is unknown, so a trigger of the revision that was live deploys
// it again. Tickets of the key stay valid.
func (m *Manager) Forget(key string) bool {
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil {
		return true
	}
	if ks.running != nil || ks.pending != nil || ks.unsaved {
		return false
	}
	if iv := ks.policy.MinInterval; iv > 0 && !ks.lastStarted.IsZero() && m.clock.Now().Before(ks.lastStarted.Add(iv)) {
		return false
	}
	delete(sh.keys, key)
	return true
}

// Status returns the state of key, and false if key was never triggered or
// was forgotten. It does not block on deploys.
func (m *Manager) Status(key string) (Status, bool) {
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil {
		return Status{}, false
	}
	return m.status(ks), true
}

// Statuses returns the state of every key triggered and not forgotten,
// sorted by key.
func (m *Manager) Statuses() []Status {
	var out []Status
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, ks := range sh.keys {
			out = append(out, m.status(ks))
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// Close shuts the Manager down. It refuses new triggers (ErrClosed), settles
// every pending ticket as Aborted with ErrClosed, and waits for the running
// deploys to finish. If ctx ends first, it cancels their contexts, waits for
// them to return, and returns ctx.Err(). When Close returns, no goroutine or
// timer of the Manager is left. A Deployer that ignores its canceled context
// keeps Close waiting.
//
// Close may be called more than once and concurrently; every call waits as
// described. It must not be called from a Deployer or an observer: it waits
// for them to return.
func (m *Manager) Close(ctx context.Context) error {
	evs := events{on: m.notify, seq: &m.seq}
	if m.closed.CompareAndSwap(false, true) {
		// No key can be created or start now: both check closed
		// under their shard's lock, taken here after it was set.
		m.slotMu.Lock()
		for _, ks := range m.queue {
			ks.queued = false
		}
		m.queue = nil
		m.slotMu.Unlock()
		now := instant{c: m.clock}
		for i := range m.shards {
			sh := &m.shards[i]
			sh.mu.Lock()
			for _, ks := range sh.keys {
				m.abort(ks, &now, &evs)
			}
			sh.mu.Unlock()
		}
		m.emit(&evs)
	}

	select {
	case <-m.wg.idle():
		return nil // nothing ran: a done ctx does not matter
	default:
	}
	select {
	case <-m.wg.idle():
		return nil
	case <-ctx.Done():
		evs = events{on: m.notify, seq: &m.seq}
		now := instant{c: m.clock}
		for i := range m.shards {
			sh := &m.shards[i]
			sh.mu.Lock()
			for _, ks := range sh.keys {
				if r := ks.running; r != nil {
					if ev := evs.add(EventCanceled, ks.key, r.rev, &now); ev != nil {
						ev.Attempt = int(r.attempts)
					}
				}
			}
			sh.mu.Unlock()
		}
		m.cancelBase()
		m.emit(&evs)
		<-m.wg.idle()
		return ctx.Err()
	}
}

// work deploys r, and the runs that may start when it ends, in a goroutine
// counted in m.wg before it started.
func (m *Manager) work(ks *keyState, r *run) {
	defer m.wg.Done()
	for r != nil {
		ks, r = m.execute(ks, r)
	}
}

// execute performs one attempt of r, then records its end. It returns a run
// that may start at once (the next of ks, or of a key that was waiting for
// the concurrency slot r released), for the caller to execute in the same
// goroutine.
func (m *Manager) execute(ks *keyState, r *run) (*keyState, *run) {
	evs := events{on: m.notify, seq: &m.seq}
	if r.needLoad {
		rev, ok, err := m.loadStore(ks.key)
		now := instant{c: m.clock}
		ks.shard.mu.Lock()
		if m.loaded(ks, r, rev, ok, err, &now, &evs) {
			return m.next(ks, &now, &evs)
		}
		ks.shard.mu.Unlock()
		m.emit(&evs)
		evs.list = evs.list[:0]
	}
	ctx := r.ctx
	if ctx == nil {
		ctx = m.base
	}
	err := callDeploy(ctx, m.deployer, ks.key, r.rev)
	if r.cancel != nil {
		r.cancel()
	}
	var saveErr error
	if err == nil && m.store != nil {
		saveErr = m.saveStore(ks.key, r.rev)
	}

	now := instant{c: m.clock}
	now.get() // outside the lock: it is needed, and the lock is shared
	ks.shard.mu.Lock()
	if err == nil && m.store != nil {
		ks.unsaved = saveErr != nil
	}
	if saveErr != nil {
		ks.err().store = saveErr
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, &now); ev != nil {
			ev.Err = fmt.Errorf("save: %w", saveErr)
		}
	}
	m.finish(ks, r, err, &now, &evs)
	return m.next(ks, &now, &evs)
}

// loadStore and saveStore call the Store, turning a panic into an error.
func (m *Manager) loadStore(key string) (rev Revision, ok bool, err error) {
	defer recoverInto(&err)
	return m.store.Load(m.base, key)
}

func (m *Manager) saveStore(key string, rev Revision) (err error) {
	defer recoverInto(&err)
	return m.store.Save(m.base, key, rev)
}

// next is called, with the shard of ks locked, when a run of ks ended: it
// unlocks the shard, starts the next run of ks, and passes the released
// concurrency slot to the key that waited longest for one. It returns a run
// for the caller to execute.
func (m *Manager) next(ks *keyState, now *instant, evs *events) (*keyState, *run) {
	grant := m.releaseSlot()
	r := m.schedule(ks, now, evs)
	ks.shard.mu.Unlock()
	gks, gr := m.handOver(grant, now, evs)
	m.emit(evs)
	switch {
	case r == nil:
		return gks, gr
	case gr != nil:
		m.wg.Add(1) // this goroutine is counted: Close still waits
		go m.work(gks, gr)
	}
	return ks, r
}

// loaded records what the Store said of ks before its first deploy. It
// reports whether r was settled without a deploy. It is called with the
// shard of ks locked.
func (m *Manager) loaded(ks *keyState, r *run, rev Revision, ok bool, err error, now *instant, evs *events) (done bool) {
	r.needLoad = false
	if m.closed.Load() {
		ks.running = nil
		evs.add(EventAborted, ks.key, r.rev, now)
		settle(r, Aborted, ErrClosed, now)
		return true
	}
	switch {
	case err != nil:
		ks.err().store = err
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, now); ev != nil {
			ev.Err = fmt.Errorf("load: %w", err)
		}
	case ok:
		ks.loaded, ks.live = true, rev
	default:
		ks.loaded = true
	}
	if ks.loaded && rev == r.rev && !r.force {
		m.finishUnchanged(ks, r, now, evs)
		return true
	}
	if r.canceled && ks.pending != nil {
		// A newer revision arrived while the Store was read, and
		// cancels this run before it began: its tickets go with it.
		ks.running = nil
		ks.pending.absorbed = append(ks.pending.absorbed, r)
		if ev := evs.add(EventCanceled, ks.key, ks.pending.rev, now); ev != nil {
			ev.Replaced = r.rev
		}
		return true
	}
	m.begin(ks, r, now, evs)
	return false
}

func (m *Manager) emit(evs *events) {
	for _, e := range evs.list {
		m.deliver(e)
	}
}

func (m *Manager) deliver(e Event) {
	if m.logger != nil {
		e.log(m.logger)
	}
	if m.observer != nil {
		m.observer(e)
	}
}

// events collects the events of one locked section, to be delivered after
// the lock is released. With nobody listening it records nothing, and the
// deploy goroutines keep small stacks.
type events struct {
	on   bool // an observer or a logger listens
	seq  *atomic.Uint64
	list []Event
}

// add records an event and returns it for the caller to fill in the rest;
// it returns nil when nobody listens.
func (e *events) add(kind EventKind, key string, rev Revision, now *instant) *Event {
	if !e.on {
		return nil
	}
	e.list = append(e.list, Event{Kind: kind, Key: key, Revision: rev, Time: now.get(), Seq: e.seq.Add(1)})
	return &e.list[len(e.list)-1]
}

func (e *events) failed(ks *keyState, r *run, err error, dur time.Duration, now *instant) {
	if ev := e.add(EventFailed, ks.key, r.rev, now); ev != nil {
		ev.Attempt, ev.Err, ev.Duration = int(r.attempts), err, dur
	}
}

// instant is the clock's time for one locked section, read at most once and
// only if needed: time.Now costs as much as the rest of a Trigger.
type instant struct {
	c  Clock
	t  time.Time
	ok bool
}

func (n *instant) get() time.Time {
	if !n.ok {
		n.t, n.ok = n.c.Now(), true
	}
	return n.t
}

// counter counts the goroutines and armed timers of a Manager; unlike a
// sync.WaitGroup, it can be waited on in a select. Counting is one atomic
// add; the lock is taken only when the count drops to zero.
type counter struct {
	n    atomic.Int64
	mu   sync.Mutex
	zero chan struct{} // made by idle while the count is above zero
}

func (c *counter) Add(d int) {
	if c.n.Add(int64(d)) != 0 {
		return
	}
	c.mu.Lock()
	if c.zero != nil && c.n.Load() == 0 {
		close(c.zero)
		c.zero = nil
	}
	c.mu.Unlock()
}

func (c *counter) Done() { c.Add(-1) }

// idle returns a channel closed once the count is zero.
func (c *counter) idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n.Load() == 0 {
		return closed
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	return c.zero
}
