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
	"unsafe"

	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
)

// Manager deploys keys so that deploys never pile up: per key, one deploy
// runs at a time and one pending slot holds the newest revision triggered
// meanwhile. A Manager is safe for concurrent use. Make one with New and
// release it with Close.
type Manager struct {
	deployer      Deployer
	clock         Clock
	store         Store // nil: the Manager's memory is the store
	defaultPolicy *policy
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

	closed  atomic.Bool
	aborted chan struct{}    // closed by the first Close once every pending ticket is settled
	seq     atomic.Uint64    // of the last Event
	shards  [numShards]shard // the keys, striped so that keys rarely share a lock

	policyMu sync.Mutex
	policies map[Policy]*policy // one copy of each distinct policy

	// With WithMaxConcurrent: the slots taken and the keys ready to start
	// that wait for one, in FIFO order. Lock order: shard, then slotMu.
	slotMu   sync.Mutex
	active   int
	queue    []*keyState
	slotHook func(key string) // tests only: called under slotMu at every slot operation
}

const numShards = 64

// shard guards the state of the keys that hash to it. Deploys of keys in
// different shards never contend for a lock.
type shard struct {
	mu   sync.Mutex
	keys map[string]*keyState
	// rules is where a locked section builds the rules' view of the key
	// it works on (keyState.view): not on the stack, where it would make
	// every deploy goroutine grow its stack, and without zeroing it first.
	rules      keyrules.State
	rulesTimed bool                                                      // rules may hold times: it was last built for a key with a timed policy
	_          [(64 - (17+unsafe.Sizeof(keyrules.State{}))%64) % 64]byte // whole cache lines each
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
	if isNil(d) {
		cfg.errorf("nil Deployer (%T)", d)
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
		policies:      make(map[Policy]*policy),
		aborted:       make(chan struct{}),
		slotHook:      cfg.slotHook,
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

// Submit is Notify that also says what the trigger did (as Ticket.Action
// and Ticket.Replaced say it): the same rules, no Ticket, so nothing is
// kept for a caller that answers at once and never waits, such as a
// webhook. Errors as Trigger.
func (m *Manager) Submit(key string, rev Revision, opts ...TriggerOption) (Action, Revision, error) {
	_, _, did, err := m.trigger(key, rev, opts, false)
	return did.action, did.replaced, err
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
	s := ks.view()
	r, start, did := m.request(ks, s, rev, force, wait, &now, &evs)
	if len(evs.list) > 0 {
		evs.list[0].Action = did.action // the trigger's own event comes first
	}
	did.ks = ks
	if start != nil {
		m.wg.Add(1) // under the lock, so that Close waits for it
	}
	sh.mu.Unlock()
	if start != nil {
		// Deferred: it runs after the events that led to it, and also if
		// an observer calls runtime.Goexit, so that the run never strands.
		defer m.spawn(ks, start)
	}
	m.emit(&evs)
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
		p, err := m.callKeyPolicy(key)
		sh.mu.Lock()
		if err != nil {
			return nil, fmt.Errorf("policy of key %q: %w", key, err)
		}
		if err := p.Validate(); err != nil {
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

// callKeyPolicy calls the key policy function, turning a panic into an
// error. A runtime.Goexit in it needs nothing: no lock is held.
func (m *Manager) callKeyPolicy(key string) (p Policy, err error) {
	defer recoverInto(&err)
	return m.keyPolicy(key), nil
}

func (m *Manager) intern(p Policy) *policy {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	p.Retry = p.Retry.WithDefaults()
	if q := m.policies[p]; q != nil {
		return q
	}
	q := &policy{Policy: p, rules: keyrules.Policy{
		Quiet: p.Quiet, MaxDelay: p.MaxDelay, MinInterval: p.MinInterval,
		MaxAttempts: p.Retry.MaxAttempts, RetryInitial: p.Retry.Initial, RetryMax: p.Retry.Max,
		RetryMultiplier: p.Retry.Multiplier, RetryJitter: p.Retry.Jitter,
		CancelInProgress: p.CancelInProgress,
	}}
	q.timed = q.rules.Timed()
	if len(m.policies) < maxInterned {
		// Beyond this many distinct policies (say, a timeout computed
		// per key), keys keep their own copy, which Forget frees.
		m.policies[p] = q
	}
	return q
}

const maxInterned = 256

// policy is an interned Policy, with its defaults filled in, and the part
// of it the per-key rules read.
type policy struct {
	Policy
	rules keyrules.Policy
	timed bool // rules.Timed(): the rules read the time
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
	out := []Status{} // not nil: its JSON is [], not null
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
// deploys to finish. A key's first run that is still reading the Store,
// whose deploy has not begun, is aborted too when the read returns. If ctx ends first, it cancels their contexts, waits for
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
		close(m.aborted) // before the events: an observer may call runtime.Goexit
		m.emit(&evs)
	} else {
		<-m.aborted // the first Close is settling the pending tickets
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

// spawn starts a goroutine that executes the run r of ks, which was
// counted in m.wg when it started.
func (m *Manager) spawn(ks *keyState, r *run) {
	go m.work(worker{m: m, ks: ks, r: r})
}

// worker is what a deploy goroutine holds: the run it executes and how far
// it got. User code it calls (the Deployer, the Store, observers and
// loggers) may end the goroutine with runtime.Goexit; worker.exit, deferred,
// then carries on in a new goroutine from where it stopped, so that every
// started run ends and every ticket settles.
type worker struct {
	m  *Manager
	ks *keyState
	r  *run // the run being executed; nil when none is left

	step    step     // the user call in progress, if any
	rev     Revision // what the Store's Load said
	ok      bool
	err     error // of the Store's Load, then of the attempt
	saveErr error

	// A run of another key that was handed the concurrency slot r released
	// and must start in a goroutine of its own.
	spareKs *keyState
	spare   *run
}

// step is the user call a worker is in.
type step uint8

const (
	stepNone   step = iota
	stepLoad        // Store.Load before the first attempt
	stepDeploy      // Deployer.Deploy
	stepSave        // Store.Save after a success
	stepEmit        // delivering events; the state is already recorded
)

// work executes the runs of w until none is left. The goroutine was counted
// in m.wg before it started.
//
// w is a value, on the goroutine's stack: a deploy costs no allocation for
// it. Only a goroutine that runtime.Goexit ends passes a copy on.
func (m *Manager) work(w worker) {
	defer w.exit()
	w.resume()
	for w.r != nil {
		w.execute()
	}
}

// exit ends the goroutine of w. Normally nothing is left to do. If user
// code called runtime.Goexit, the run in hand goes on in a new goroutine,
// which takes over this goroutine's count.
func (w *worker) exit() {
	if w.spare != nil {
		w.m.wg.Add(1)
		w.m.spawn(w.spareKs, w.spare)
		w.spare = nil
	}
	if w.r == nil {
		w.m.wg.Done()
		return
	}
	go w.m.work(*w)
}

// resume finishes the step that runtime.Goexit interrupted, if any.
func (w *worker) resume() {
	switch s := w.step; s {
	case stepLoad:
		w.rev, w.ok, w.err = "", false, goexitError("Store.Load")
		w.loaded()
	case stepDeploy:
		w.err = goexitError("Deploy")
		w.deployed()
	case stepSave:
		w.saveErr = goexitError("Store.Save")
		w.finish()
	case stepEmit:
		w.step = stepNone // the events are lost; the state is not
	}
}

// execute performs one attempt of w.r (reading the Store first if the key
// was never read), records its end, and sets w.r to the run that may start
// at once (the next of the key, or of a key that was waiting for the
// concurrency slot w.r released), for the same goroutine to execute.
func (w *worker) execute() {
	if w.r.needLoad {
		w.step = stepLoad
		w.rev, w.ok, w.err = w.m.loadStore(w.ks.key)
		w.loaded()
		return
	}
	ctx := w.r.ctx
	if ctx == nil {
		ctx = w.m.base
	}
	w.step = stepDeploy
	w.err = callDeploy(ctx, w.m.deployer, w.ks.key, w.r.rev)
	w.deployed()
}

// loaded records what the Store said before the first attempt of w.r.
func (w *worker) loaded() {
	m, ks, r := w.m, w.ks, w.r
	w.step = stepNone
	evs := events{on: m.notify, seq: &m.seq}
	now := instant{c: m.clock}
	ks.shard.mu.Lock()
	s := ks.view()
	if m.loaded(ks, s, r, w.rev, w.ok, w.err, &now, &evs) {
		w.next(s, &now, &evs)
		return
	}
	ks.shard.mu.Unlock()
	w.err = nil
	w.emit(&evs) // then the attempt: w.r is unchanged
}

// deployed saves the revision that w.r deployed, if it succeeded.
func (w *worker) deployed() {
	w.step = stepNone
	if w.r.cancel != nil {
		w.r.cancel()
	}
	if w.err == nil && w.m.store != nil {
		w.step = stepSave
		w.saveErr = w.m.saveStore(w.ks.key, w.r.rev)
	}
	w.finish()
}

// finish records the end of the attempt of w.r.
func (w *worker) finish() {
	m, ks, r := w.m, w.ks, w.r
	w.step = stepNone
	evs := events{on: m.notify, seq: &m.seq}
	now := instant{c: m.clock}
	now.get() // outside the lock: it is needed, and the lock is shared
	ks.shard.mu.Lock()
	if w.err == nil && m.store != nil {
		ks.unsaved = w.saveErr != nil
	}
	if err := w.saveErr; err != nil {
		ks.err().store = err
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, &now); ev != nil {
			ev.Err = fmt.Errorf("save: %w", err)
		}
	}
	s := ks.view()
	m.finish(ks, s, r, w.err, &now, &evs)
	w.err, w.saveErr = nil, nil
	w.next(s, &now, &evs)
}

// next is called, with the shard of w.ks locked, when a run of w.ks ended:
// it unlocks the shard, starts the next run of w.ks, and passes the
// released concurrency slot to the key that waited longest for one. It
// leaves in w the run for this goroutine to execute. s is the rules' view
// of w.ks.
func (w *worker) next(s *keyrules.State, now *instant, evs *events) {
	m, ks := w.m, w.ks
	grant := m.releaseSlot(ks)
	r := m.schedule(ks, s, now, evs)
	ks.shard.mu.Unlock()
	gks, gr := m.handOver(grant, now, evs)
	if r == nil {
		ks, r, gks, gr = gks, gr, nil, nil
	}
	w.ks, w.r, w.spareKs, w.spare = ks, r, gks, gr
	w.emit(evs)
	if w.spare != nil {
		m.wg.Add(1) // this goroutine is counted: Close still waits
		m.spawn(w.spareKs, w.spare)
		w.spare = nil
	}
}

// emit delivers events with the state already recorded in w.
func (w *worker) emit(evs *events) {
	w.step = stepEmit
	w.m.emit(evs)
	w.step = stepNone
}

// loadStore and saveStore call the Store, turning a panic into an error.
func (m *Manager) loadStore(key string) (rev Revision, ok bool, err error) {
	defer recoverInto(&err)
	return m.store.Load(m.base, key) // keyrules ignores a revision beside ok=false or an error
}

func (m *Manager) saveStore(key string, rev Revision) (err error) {
	defer recoverInto(&err)
	ctx := m.base
	if ctx.Err() != nil {
		// Close's context ended, but the deploy succeeded all the same:
		// it must be recorded, or a restart deploys it again. The Save
		// gets a bounded time of its own.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), SaveAfterCloseTimeout)
		defer cancel()
	}
	return m.store.Save(ctx, key, rev)
}

// SaveAfterCloseTimeout bounds the Store's Save of a deploy that succeeded
// after Close's context ended and canceled it: the deploy happened, so it
// is saved, within this time. Close waits for it.
const SaveAfterCloseTimeout = 10 * time.Second

// loaded records what the Store said of ks before its first deploy
// (keyrules.Loaded). It reports whether r was settled without a deploy. It
// is called with the shard of ks locked.
func (m *Manager) loaded(ks *keyState, s *keyrules.State, r *run, rev Revision, ok bool, err error, now *instant, evs *events) (done bool) {
	if m.closed.Load() {
		// Close began while the Store was read: nothing begins.
		r.needLoad = false
		ks.running, s.Running = nil, keyrules.Run{}
		evs.add(EventAborted, ks.key, r.rev, now)
		settle(r, Aborted, ErrClosed, now)
		return true
	}
	if err != nil {
		ks.err().store = err
		if ev := evs.add(EventStoreFailed, ks.key, r.rev, now); ev != nil {
			ev.Err = fmt.Errorf("load: %w", err)
		}
	}
	r.needLoad = false // as the rules say (Run.Loading), also for a run that ends here
	f := s.StoreLoaded(string(rev), ok, err != nil)
	switch {
	case f.Outcome == keyrules.Unchanged:
		// The Store says r's revision is live already.
		ks.running = nil
		var covered *run
		if f.AbsorbPending {
			covered, ks.pending = ks.pending, nil
			m.disarm(covered)
		}
		ks.set(s)
		evs.add(EventUnchanged, ks.key, r.rev, now)
		if covered != nil {
			absorb(r, covered)
		}
		settle(r, Unchanged, nil, now)
		return true
	case f.IntoPending:
		// A newer revision arrived while the Store was read, and
		// cancels this run before it began: its tickets go with it.
		ks.running = nil
		ks.set(s)
		absorb(ks.pending, r)
		if ev := evs.add(EventCanceled, ks.key, ks.pending.rev, now); ev != nil {
			ev.Replaced = r.rev
		}
		return true
	}
	ks.set(s)
	m.begin(ks, s, r, now, evs)
	return false
}

// emit delivers the events of a locked section, after the lock was
// released. A panic in the observer or the logger is recovered and
// reported (see deliver); the other events are still delivered.
func (m *Manager) emit(evs *events) {
	for _, e := range evs.list {
		m.deliver(e)
	}
}

func (m *Manager) deliver(e Event) {
	if m.logger != nil {
		if p := callLog(m.logger, e); p != nil {
			reportPanic(nil, "logger", e, p)
		}
	}
	if m.observer != nil {
		if p := callObserver(m.observer, e); p != nil {
			reportPanic(m.logger, "observer", e, p)
		}
	}
}

func callLog(l *slog.Logger, e Event) (p *PanicError) {
	defer recoverPanic(&p)
	e.log(l)
	return nil
}

func callObserver(f func(Event), e Event) (p *PanicError) {
	defer recoverPanic(&p)
	f(e)
	return nil
}

// reportPanic logs a panic of an observer or a logger, the way net/http
// logs a panicking handler: the Manager goes on, and the panic shows in the
// log instead of crashing the host or wedging a key. It logs to l, or, when
// l is nil or is what panicked, to slog's default logger.
func reportPanic(l *slog.Logger, what string, e Event, p *PanicError) {
	if l == nil {
		l = slog.Default()
	}
	defer func() { _ = recover() }() // a logger that panics again is not retried
	l.Error("dedup: "+what+" panicked; the Manager goes on", "event", e.Kind.String(), "key", e.Key, "panic", p.Value, "stack", string(p.Stack))
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
		return nil // inlined: with nobody listening, an event costs no call
	}
	return e.record(kind, key, rev, now)
}

func (e *events) record(kind EventKind, key string, rev Revision, now *instant) *Event {
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
		n.read()
	}
	return n.t
}

// read reads the clock; out of get, so that get inlines.
func (n *instant) read() { n.t, n.ok = n.c.Now(), true }

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
