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

	// base is the parent of every deploy's context; Close cancels it when
	// its own context ends before the running deploys do.
	base       context.Context
	cancelBase context.CancelFunc

	// wg counts the goroutines that deploy and the armed timers, so that
	// Close can wait for all of them.
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	keys     map[string]*keyState
	policies map[Policy]*Policy // one copy of each distinct policy
	active   int                // runs holding a concurrency slot
	queue    []*keyState        // keys ready to start, waiting for a slot (FIFO)
}

// New returns a Manager that deploys with d. It returns an error wrapping
// ErrInvalid if d is nil or an option has a bad value.
func New(d Deployer, opts ...Option) (*Manager, error) {
	cfg := config{clock: realClock{}}
	if d == nil {
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
		keys:          make(map[string]*keyState),
		policies:      make(map[Policy]*Policy),
	}
	m.defaultPolicy = m.intern(cfg.policy)
	m.base, m.cancelBase = context.WithCancel(context.Background())
	return m, nil
}

// Trigger asks for rev to become the live revision of key and returns the
// ticket that tells when and how that was settled. It never blocks on a
// deploy and does no I/O.
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
	t := &Ticket{key: key, requested: rev}
	r, now, err := m.trigger(key, rev, opts, true)
	if err != nil {
		return nil, err
	}
	t.run = r
	if r == nil {
		t.at = now
	}
	return t, nil
}

// Notify is Trigger for callers that never wait for the result, such as a
// poller: the same rules, no Ticket, so no allocation when a trigger joins or
// replaces a pending revision.
func (m *Manager) Notify(key string, rev Revision, opts ...TriggerOption) error {
	_, _, err := m.trigger(key, rev, opts, false)
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

func (m *Manager) trigger(key string, rev Revision, opts []TriggerOption, wait bool) (*run, time.Time, error) {
	if err := validate("key", key); err != nil {
		return nil, time.Time{}, err
	}
	if err := validate("revision", string(rev)); err != nil {
		return nil, time.Time{}, err
	}
	force := false
	for _, o := range opts {
		force = force || o.force
	}
	var evs events
	evs.on = m.notify
	m.mu.Lock()
	ks, err := m.key(key)
	if err != nil {
		m.mu.Unlock()
		return nil, time.Time{}, err
	}
	now := instant{c: m.clock}
	r, start := m.request(ks, rev, force, wait, &now, &evs)
	if start != nil {
		m.spawn(ks, start)
	}
	m.mu.Unlock()
	m.emit(&evs)
	if wait && r == nil {
		return nil, now.get(), nil // settled at once: the ticket needs the time
	}
	return r, time.Time{}, nil
}

// key returns the state of key, creating it if needed. It is called with
// m.mu held, and releases it while it calls the key policy function.
func (m *Manager) key(key string) (*keyState, error) {
	if m.closed {
		return nil, ErrClosed
	}
	if ks := m.keys[key]; ks != nil {
		return ks, nil
	}
	pol := m.defaultPolicy
	if m.keyPolicy != nil {
		m.mu.Unlock()
		p := m.keyPolicy(key)
		m.mu.Lock()
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("policy of key %q: %w", key, err)
		}
		if m.closed {
			return nil, ErrClosed
		}
		if ks := m.keys[key]; ks != nil { // created while the lock was released
			return ks, nil
		}
		pol = m.intern(p)
	}
	key = strings.Clone(key) // do not retain the caller's buffer
	ks := &keyState{key: key, policy: pol, loaded: m.store == nil}
	m.keys[key] = ks
	return ks, nil
}

func (m *Manager) intern(p Policy) *Policy {
	p.Retry = p.Retry.withDefaults()
	if q := m.policies[p]; q != nil {
		return q
	}
	q := &p
	m.policies[p] = q
	return q
}

// Status returns the state of key, and false if key was never triggered.
// It does not block on deploys.
func (m *Manager) Status(key string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks := m.keys[key]
	if ks == nil {
		return Status{}, false
	}
	return m.status(ks), true
}

// Statuses returns the state of every key ever triggered, sorted by key.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.keys))
	for _, ks := range m.keys {
		out = append(out, m.status(ks))
	}
	m.mu.Unlock()
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
// described.
func (m *Manager) Close(ctx context.Context) error {
	var evs events
	evs.on = m.notify
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		now := instant{c: m.clock}
		for _, ks := range m.keys {
			m.abort(ks, &now, &evs)
		}
		m.queue = nil
	}
	m.mu.Unlock()
	m.emit(&evs)

	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		m.cancelBase()
		<-done
		return ctx.Err()
	}
}

// spawn starts a goroutine that deploys r, and the follow-ups of ks after it.
// It is called with m.mu held.
func (m *Manager) spawn(ks *keyState, r *run) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for r != nil {
			r = m.execute(ks, r)
		}
	}()
}

// execute performs one attempt of r, then records its end. It returns the
// next run of ks if that may start at once, for the caller to execute in the
// same goroutine.
func (m *Manager) execute(ks *keyState, r *run) *run {
	if r.needLoad {
		if next, done := m.load(ks, r); done {
			return next
		}
	}
	err := callDeploy(r.ctx, m.deployer, ks.key, r.rev)
	if r.cancel != nil {
		r.cancel()
	}
	var saveErr error
	if err == nil && m.store != nil {
		saveErr = m.store.Save(m.base, ks.key, r.rev)
	}

	var evs events
	evs.on = m.notify
	now := instant{c: m.clock}
	now.get() // outside the lock: it is needed, and the lock is shared
	m.mu.Lock()
	if saveErr != nil {
		ks.storeErr = saveErr
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, &now); ev != nil {
			ev.Err = fmt.Errorf("save: %w", saveErr)
		}
	}
	m.finish(ks, r, err, &now, &evs)
	next := m.afterRun(ks, &now, &evs)
	m.mu.Unlock()
	m.emit(&evs)
	return next
}

// load asks the Store for the live revision of ks before its first deploy.
// It reports done when r was settled without a deploy (or the attempt could
// not begin), with the run to execute next.
func (m *Manager) load(ks *keyState, r *run) (next *run, done bool) {
	rev, ok, err := m.store.Load(m.base, ks.key)
	var evs events
	evs.on = m.notify
	m.mu.Lock()
	defer func() {
		m.mu.Unlock()
		m.emit(&evs)
	}()
	now := &instant{c: m.clock}
	r.needLoad = false
	if m.closed {
		ks.running = nil
		m.active--
		evs.add(EventAborted, ks.key, r.rev, now)
		settle(r, Aborted, ErrClosed, now)
		return nil, true
	}
	switch {
	case err != nil:
		ks.storeErr = err
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, now); ev != nil {
			ev.Err = fmt.Errorf("load: %w", err)
		}
	case ok:
		ks.loaded, ks.live = true, rev
	default:
		ks.loaded = true
	}
	if ks.loaded && rev == r.rev && !r.force {
		m.finishUnchanged(ks, r, now, &evs)
		return m.afterRun(ks, now, &evs), true
	}
	m.begin(ks, r, now, &evs)
	return nil, false
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
	list []Event
}

// add records an event and returns it for the caller to fill in the rest;
// it returns nil when nobody listens.
func (e *events) add(kind EventKind, key string, rev Revision, now *instant) *Event {
	if !e.on {
		return nil
	}
	e.list = append(e.list, Event{Kind: kind, Key: key, Revision: rev, Time: now.get()})
	return &e.list[len(e.list)-1]
}

func (e *events) failed(ks *keyState, r *run, err error, dur time.Duration, now *instant) {
	if ev := e.add(EventFailed, ks.key, r.rev, now); ev != nil {
		ev.Attempt, ev.Err, ev.Duration = r.attempts, err, dur
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
