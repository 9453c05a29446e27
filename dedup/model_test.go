package dedup_test

// A model-based test: a small reference model of the per-key rules, written
// independently of the Manager, is driven through the same random schedule
// as a real Manager inside a testing/synctest bubble. After every step the
// bubble is let settle (synctest.Wait) and the two are compared: running and
// pending revision of every key, whether it waits for a concurrency slot
// (WithMaxConcurrent, first come first served), the deploys started, what
// each trigger did, and the result of every ticket. The bubble's fake time
// makes debounce, minimum interval, retry backoff and timeouts exact.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

var (
	modelRuns = flag.Int("model.runs", 1500, "random schedules TestModel runs")
	modelSeed = flag.Uint64("model.seed", 0, "run only this seed of TestModel (0: all)")
)

func TestModel(t *testing.T) {
	runs := *modelRuns
	if testing.Short() {
		runs = min(runs, 200)
	}
	first := uint64(1)
	if *modelSeed != 0 {
		first, runs = *modelSeed, 1
	}
	for seed := first; seed < first+uint64(runs); seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15))
		ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, func(n int) int { return rng.IntN(n) }, 60)
		})
		if !ok {
			t.Fatalf("schedule failed; rerun with: go test ./dedup -run 'TestModel/^%d$' -model.seed=%d -v", seed, seed)
		}
	}
}

func FuzzModel(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{9, 9, 9, 1, 1, 1, 0, 0, 0, 200, 100, 50, 3, 3, 3, 7, 7, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		i := 0
		choose := func(n int) int {
			if i >= len(data) {
				return 0
			}
			b := int(data[i])
			i++
			return b % n
		}
		runModel(t, choose, len(data)/2+1)
	})
}

var (
	modelKeys = []string{"a", "b", "c"}
	modelRevs = []dedup.Revision{"r0", "r1", "r2", "r3", "r4"}
	errDeploy = errors.New("deploy failed")
	errPanic  = errors.New("panic please")
)

// panicky makes a deduptest.Deployer panic when a call is finished with
// errPanic.
type panicky struct{ d *deduptest.Deployer }

func (p panicky) Deploy(ctx context.Context, key string, rev dedup.Revision) error {
	err := p.d.Deploy(ctx, key, rev)
	if errors.Is(err, errPanic) {
		panic(err)
	}
	return err
}

func randomPolicy(choose func(int) int) dedup.Policy {
	var p dedup.Policy
	if choose(3) == 0 {
		p.Quiet = 3 * time.Second
		if choose(2) == 0 {
			p.MaxDelay = 5 * time.Second
		}
	}
	if choose(3) == 0 {
		p.MinInterval = 4 * time.Second
	}
	if n := choose(3); n > 0 {
		p.Retry = dedup.RetryPolicy{MaxAttempts: n + 1, Initial: 2 * time.Second, Multiplier: 2, Max: 5 * time.Second}
	}
	if choose(3) == 0 {
		p.Timeout = 10 * time.Second
	}
	p.CancelInProgress = choose(3) == 0
	return p
}

func runModel(t *testing.T, choose func(int) int, steps int) {
	synctest.Test(t, func(t *testing.T) {
		pol := randomPolicy(choose)
		d := new(deduptest.Deployer)
		mod := newModel(pol, time.Now())
		opts := []dedup.Option{dedup.WithKeyPolicy(func(key string) dedup.Policy { return mod.keys[key].pol })}
		if choose(2) == 0 {
			// A durable store from an earlier life: some keys are
			// live already.
			store := new(dedup.MemoryStore)
			mod.store = true
			for _, k := range modelKeys {
				mod.keys[k].loaded = false
				if rev := choose(len(modelRevs) + 1); rev < len(modelRevs) {
					store.Save(context.Background(), k, modelRevs[rev])
					mod.keys[k].stored = modelRevs[rev]
				}
			}
			opts = append(opts, dedup.WithStore(store))
		}
		if n := choose(3); n > 0 {
			opts = append(opts, dedup.WithMaxConcurrent(n), dedup.WithSlotHook(mod.slotOp))
			mod.max = n
		}
		m, err := dedup.New(panicky{d}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, m: m, d: d, mod: mod, last: make(map[string]*mTicket)}
		t.Logf("policy %+v, max concurrent %d", pol, mod.max)
		for range steps {
			switch op := choose(20); {
			case op < 10:
				key, rev := modelKeys[choose(len(modelKeys))], modelRevs[choose(len(modelRevs))]
				h.trigger(key, rev, choose(10) == 0, choose(5) == 0)
			case op < 16:
				h.finish(choose(len(modelKeys)), choose(4))
			case op < 19:
				h.advance(time.Duration(choose(8)) * time.Second)
			default:
				h.forget(modelKeys[choose(len(modelKeys))])
			}
			h.check()
			if t.Failed() {
				return
			}
		}
		h.close(choose(2) == 0)
		h.check()
		h.checkEnd()
	})
}

type harness struct {
	t       *testing.T
	m       *dedup.Manager
	d       *deduptest.Deployer
	mod     *model
	seen    int                        // real calls compared so far
	calls   map[string]*deduptest.Call // running real call per key
	tickets []*mTicket
	last    map[string]*mTicket // newest trigger per key
	log     []string
}

func (h *harness) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf("%v ", h.mod.now.Sub(h.mod.t0))+fmt.Sprintf(format, args...))
}

func (h *harness) trigger(key string, rev dedup.Revision, force, notify bool) {
	var opts []dedup.TriggerOption
	if force {
		opts = append(opts, dedup.Force())
	}
	h.logf("Trigger(%q, %q, force=%v, notify=%v)", key, rev, force, notify)
	mt := &mTicket{key: key, requested: rev}
	if notify {
		if err := h.m.Notify(key, rev, opts...); err != nil {
			h.fatalf("Notify(%q, %q) = %v; want no error", key, rev, err)
		}
	} else {
		tk, err := h.m.Trigger(key, rev, opts...)
		if err != nil {
			h.fatalf("Trigger(%q, %q) = %v; want no error", key, rev, err)
		}
		mt.real = tk
		h.tickets = append(h.tickets, mt)
	}
	action, replaced := h.mod.trigger(key, rev, force, mt)
	if tk := mt.real; tk != nil && (tk.Action() != action || tk.Replaced() != replaced) {
		h.fatalf("Trigger(%q, %q): Action, Replaced = %v, %q; want %v, %q", key, rev, tk.Action(), tk.Replaced(), action, replaced)
	}
	h.last[key] = mt
	synctest.Wait()
}

// forget calls Forget on key.
func (h *harness) forget(key string) {
	h.logf("Forget(%q)", key)
	got, want := h.m.Forget(key), h.mod.forget(key)
	if got != want {
		h.fatalf("Forget(%q) = %v; model says %v", key, got, want)
	}
	if got {
		delete(h.last, key) // its newest revision need not end live
	}
}

// finish ends the running deploy of the how-th key that has one: kind 0 and
// 1 succeed, 2 fails, 3 panics.
func (h *harness) finish(which, kind int) {
	var keys []string
	for _, k := range modelKeys {
		if r := h.mod.keys[k].running; r != nil && !r.canceled {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	key := keys[which%len(keys)]
	c := h.calls[key]
	if c == nil {
		h.fatalf("model runs %q on key %q, but no deploy call is in flight", h.mod.keys[key].running.rev, key)
	}
	err := []error{nil, nil, errDeploy, errPanic}[kind]
	h.logf("Finish(%q %q, %v)", key, c.Revision, err)
	c.Finish(err)
	<-c.Returned()
	delete(h.calls, key)
	synctest.Wait()
	h.mod.finish(key, err == nil, errors.Is(err, errPanic))
}

func (h *harness) advance(d time.Duration) {
	h.logf("Advance(%v)", d)
	time.Sleep(d) // fake time: the bubble settles at every instant on the way
	synctest.Wait()
	h.mod.advance(time.Now())
}

func (h *harness) close(expired bool) {
	h.logf("Close(expired=%v)", expired)
	ctx := context.Background()
	if expired {
		c, cancel := context.WithCancel(ctx)
		cancel()
		ctx = c
	}
	done := make(chan error, 1)
	go func() { done <- h.m.Close(ctx) }()
	synctest.Wait()
	h.mod.close(expired)
	if !expired {
		for _, k := range modelKeys {
			if c := h.calls[k]; c != nil {
				c.Finish(nil)
				delete(h.calls, k)
			}
		}
	}
	err := <-done
	if expired && len(h.mod.canceledByClose) > 0 && !errors.Is(err, context.Canceled) {
		h.fatalf("Close(canceled ctx) = %v; want context.Canceled", err)
	}
	if !expired && err != nil {
		h.fatalf("Close = %v; want nil", err)
	}
	if _, err := h.m.Trigger("a", "r0"); !errors.Is(err, dedup.ErrClosed) {
		h.fatalf("Trigger after Close = %v; want ErrClosed", err)
	}
}

// check compares the Manager with the model.
func (h *harness) check() {
	h.t.Helper()
	if h.calls == nil {
		h.calls = make(map[string]*deduptest.Call)
	}
	calls := h.d.Calls()
	var got []start
	for _, c := range calls[h.seen:] {
		got = append(got, start{c.Key, c.Revision})
		h.calls[c.Key] = c
	}
	h.seen = len(calls)
	want := h.mod.takeStarts()
	// Keys are independent: compare the order of starts per key only.
	for _, k := range modelKeys {
		g, w := filterKey(got, k), filterKey(want, k)
		if !slices.Equal(g, w) {
			h.fatalf("deploys started for %q = %v; model says %v", k, g, w)
		}
	}
	for _, k := range modelKeys {
		st, _ := h.m.Status(k)
		mk := h.mod.keys[k]
		w := dedup.Status{Live: mk.live}
		if mk.running != nil {
			w.Running = mk.running.rev
		}
		if mk.pending != nil {
			w.Pending = mk.pending.rev
			w.Queued = slices.Contains(h.mod.queue, k)
		}
		if st.Live != w.Live || st.Running != w.Running || st.Pending != w.Pending || st.Queued != w.Queued {
			h.fatalf("Status(%q) = live %q running %q pending %q queued %v; model says live %q running %q pending %q queued %v",
				k, st.Live, st.Running, st.Pending, st.Queued, w.Live, w.Running, w.Pending, w.Queued)
		}
	}
	if n := h.d.MaxRunningPerKey(); n > 1 {
		h.fatalf("%d deploys of one key ran at once", n)
	}
	inFlight := map[string]int{}
	for _, c := range calls {
		select {
		case <-c.Returned():
		default:
			if inFlight[c.Key]++; inFlight[c.Key] > 1 {
				h.fatalf("two deploys of %q run at once", c.Key)
			}
		}
	}
	for i, mt := range h.tickets {
		select {
		case <-mt.real.Done():
			if !mt.settled {
				h.fatalf("ticket %d (%q %q) settled as %+v; model says it is still waiting", i, mt.key, mt.requested, mt.real.Result())
			}
			r := mt.real.Result()
			if r.Revision != mt.rev || r.Outcome != mt.outcome || r.Requested != mt.requested || r.Key != mt.key {
				h.fatalf("ticket %d (%q %q) = %v %q (err %v); model says %v %q", i, mt.key, mt.requested, r.Outcome, r.Revision, r.Err, mt.outcome, mt.rev)
			}
			if (r.Err != nil) != (r.Outcome == dedup.Failed || r.Outcome == dedup.Aborted) {
				h.fatalf("ticket %d: Outcome %v with Err %v", i, r.Outcome, r.Err)
			}
			if r.Outcome == dedup.Aborted && !errors.Is(r.Err, dedup.ErrClosed) {
				h.fatalf("ticket %d: Aborted with Err %v; want ErrClosed", i, r.Err)
			}
			if mt.panicked {
				var pe *dedup.PanicError
				if !errors.As(r.Err, &pe) || !errors.Is(r.Err, errPanic) {
					h.fatalf("ticket %d: Err %v; want a *PanicError of errPanic", i, r.Err)
				}
			}
		default:
			if mt.settled {
				h.fatalf("ticket %d (%q %q) still waits; model says %v %q", i, mt.key, mt.requested, mt.outcome, mt.rev)
			}
		}
	}
}

// checkEnd checks what must hold once the Manager is closed: every ticket
// settled, and the newest revision of every key deployed or reported.
func (h *harness) checkEnd() {
	for i, mt := range h.tickets {
		select {
		case <-mt.real.Done():
		default:
			h.fatalf("ticket %d (%q %q) never settled", i, mt.key, mt.requested)
		}
	}
	for _, k := range modelKeys {
		last := h.last[k]
		if last == nil || last.real == nil {
			continue // never triggered, or last by Notify: no ticket to ask
		}
		r := last.real.Result()
		st, _ := h.m.Status(k)
		if st.Live != last.requested && r.Err == nil {
			h.fatalf("newest revision %q of %q is neither live (live %q) nor reported failed (%v)", last.requested, k, st.Live, r.Outcome)
		}
	}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	for _, l := range h.log {
		h.t.Log(l)
	}
	h.t.Logf("model: slots taken %d, queue %v", h.mod.active, h.mod.queue)
	for _, st := range h.m.Statuses() {
		h.t.Logf("Manager: %q running %q pending %q queued %v attempt %d", st.Key, st.Running, st.Pending, st.Queued, st.Attempt)
	}
	h.t.Fatalf(format, args...)
}

type start struct {
	key string
	rev dedup.Revision
}

func filterKey(s []start, key string) []dedup.Revision {
	var out []dedup.Revision
	for _, x := range s {
		if x.key == key {
			out = append(out, x.rev)
		}
	}
	return out
}

// The reference model. It knows the rules of DESIGN.md and nothing of how
// the Manager implements them.

type mTicket struct {
	key       string
	requested dedup.Revision
	real      *dedup.Ticket

	settled  bool
	rev      dedup.Revision
	outcome  dedup.Outcome
	panicked bool
}

type mRun struct {
	rev          dedup.Revision
	force        bool
	attempts     int
	first, last  time.Time
	retryAt      time.Time
	attemptStart time.Time
	canceled     bool
	tickets      []*mTicket
}

type mKey struct {
	pol       dedup.Policy
	loaded    bool           // live is known
	stored    dedup.Revision // what the store holds before the first deploy
	live      dedup.Revision
	running   *mRun
	pending   *mRun
	lastStart time.Time
	started   bool
}

type model struct {
	store           bool     // the Manager has a Store
	max             int      // WithMaxConcurrent; 0: no limit
	active          int      // slots taken
	queue           []string // keys due to start that wait for a slot, first come first served
	t0, now         time.Time
	keys            map[string]*mKey
	starts          []start
	closed          bool
	canceledByClose []string

	// The Manager's slot operations (take, queue, release) in the order
	// it made them, with their instant: when several keys come due at
	// the same instant, the contract leaves their order open, and the
	// model follows the Manager's.
	slotMu  sync.Mutex
	slotOps []slotOp
}

type slotOp struct {
	key string
	at  time.Time
}

// slotOp records a slot operation of the Manager (WithSlotHook).
func (m *model) slotOp(key string) {
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	m.slotOps = append(m.slotOps, slotOp{key, time.Now()})
}

// firstSlotOp is the position of key's first slot operation at instant at,
// or -1 if it made none then.
func (m *model) firstSlotOp(key string, at time.Time) int {
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	for i, op := range m.slotOps {
		if op.key == key && op.at.Equal(at) {
			return i
		}
	}
	return -1
}

// newModel returns a model whose keys have policy pol, with every duration
// of key b one millisecond longer and of key c one microsecond longer, so
// that keys rarely come due at the same instant. They still can (a key
// handed a slot when another finished takes on that key's instants), and
// then advance takes them in the order the Manager did (slotOps): timers of
// the same instant fire in no set order.
func newModel(pol dedup.Policy, now time.Time) *model {
	m := &model{t0: now, now: now, keys: make(map[string]*mKey)}
	for i, k := range modelKeys {
		m.keys[k] = &mKey{loaded: true, pol: offsetPolicy(pol, []time.Duration{0, time.Millisecond, time.Microsecond}[i])}
	}
	return m
}

func offsetPolicy(p dedup.Policy, off time.Duration) dedup.Policy {
	for _, d := range []*time.Duration{&p.Quiet, &p.MaxDelay, &p.MinInterval, &p.Retry.Initial, &p.Retry.Max, &p.Timeout} {
		if *d > 0 {
			*d += off
		}
	}
	return p
}

func (m *model) takeStarts() []start {
	s := m.starts
	m.starts = nil
	return s
}

func settleAll(r *mRun, rev dedup.Revision, o dedup.Outcome, panicked bool) {
	for _, t := range r.tickets {
		t.settled, t.rev, t.outcome, t.panicked = true, rev, o, panicked && o == dedup.Failed
		if t.requested != rev && (o == dedup.Deployed || o == dedup.Unchanged) {
			t.outcome = dedup.Superseded
		}
	}
	r.tickets = nil
}

// trigger applies a trigger and returns what its Ticket must say it did.
func (m *model) trigger(key string, rev dedup.Revision, force bool, t *mTicket) (dedup.Action, dedup.Revision) {
	k := m.keys[key]
	var replaced dedup.Revision
	running := k.running != nil
	switch {
	case k.pending != nil && k.pending.rev == rev:
		k.pending.force = k.pending.force || force
		k.pending.last = m.now
		k.pending.tickets = append(k.pending.tickets, t)
		return dedup.ActionJoinedPending, ""
	case k.pending == nil && k.running != nil && !k.running.canceled && k.running.rev == rev:
		k.running.tickets = append(k.running.tickets, t)
		return dedup.ActionJoinedRunning, ""
	case k.pending == nil && k.running == nil && k.loaded && k.live == rev && !force:
		settleAll(&mRun{tickets: []*mTicket{t}}, rev, dedup.Unchanged, false)
		return dedup.ActionUnchanged, ""
	case k.pending != nil:
		p := k.pending
		replaced = p.rev
		p.rev, p.force, p.last = rev, force, m.now
		p.tickets = append(p.tickets, t)
		if p.attempts > 0 {
			p.attempts, p.retryAt, p.first = 0, time.Time{}, m.now
		}
	default:
		k.pending = &mRun{rev: rev, force: force, first: m.now, last: m.now, tickets: []*mTicket{t}}
		if r := k.running; r != nil && k.pol.CancelInProgress && !r.canceled {
			// The deploy returns at once on its canceled context.
			r.canceled = true
			m.finish(key, false, false)
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
	case k.pending == nil:
		return dedup.ActionUnchanged, replaced // back to the live revision
	}
	return dedup.ActionQueued, replaced
}

// forget drops an idle key's state and reports whether it did.
func (m *model) forget(key string) bool {
	k := m.keys[key]
	if k.running != nil || k.pending != nil {
		return false
	}
	if k.pol.MinInterval > 0 && k.started && m.now.Before(k.lastStart.Add(k.pol.MinInterval)) {
		return false // its next run must still wait
	}
	if m.store {
		if k.loaded {
			k.stored = k.live // saved after each deploy
		}
		k.loaded = false
	}
	k.live, k.started, k.lastStart = "", false, time.Time{}
	return true
}

func (m *model) startAt(k *mKey) time.Time {
	p := k.pending
	at := p.retryAt
	if k.pol.MinInterval > 0 && k.started {
		at = latest(at, k.lastStart.Add(k.pol.MinInterval))
	}
	if k.pol.Quiet > 0 {
		q := p.last.Add(k.pol.Quiet)
		if k.pol.MaxDelay > 0 && p.first.Add(k.pol.MaxDelay).Before(q) {
			q = p.first.Add(k.pol.MaxDelay)
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
func (m *model) tryStart(key string) (started bool) {
	k := m.keys[key]
	p := k.pending
	if p == nil || k.running != nil || m.closed {
		return false
	}
	if k.loaded && p.rev == k.live && !p.force {
		k.pending = nil
		m.dequeue(key)
		settleAll(p, p.rev, dedup.Unchanged, false)
		return false
	}
	if m.startAt(k).After(m.now) || !m.takeSlot(key) {
		return false
	}
	m.begin(key)
	return true
}

// begin starts the pending run of key, which has a slot.
func (m *model) begin(key string) {
	k := m.keys[key]
	p := k.pending
	k.pending = nil
	if !k.loaded {
		// The store is read before the first deploy.
		k.loaded, k.live = true, k.stored
		if p.rev == k.live && !p.force {
			settleAll(p, p.rev, dedup.Unchanged, false)
			m.ended(key)
			return
		}
	}
	k.running = p
	p.attempts++
	p.attemptStart = m.now
	k.lastStart, k.started = m.now, true
	m.starts = append(m.starts, start{key, p.rev})
}

// ended is called when a run of key ended: its slot passes to the key that
// waited longest for one, after key's own next run had its chance to queue.
func (m *model) ended(key string) {
	grant := m.releaseSlot()
	m.tryStart(key)
	for grant != "" {
		k := m.keys[grant]
		if k.pending != nil && k.running == nil && !m.closed {
			// It starts with the newest revision, whatever its
			// policy said since it queued.
			m.dequeue(grant)
			m.begin(grant)
			return
		}
		grant = m.releaseSlot()
	}
}

func (m *model) takeSlot(key string) bool {
	if m.max == 0 {
		return true
	}
	if m.active < m.max && len(m.queue) == 0 {
		m.active++
		return true
	}
	if !slices.Contains(m.queue, key) {
		m.queue = append(m.queue, key)
	}
	return false
}

func (m *model) dequeue(key string) {
	m.queue = slices.DeleteFunc(m.queue, func(k string) bool { return k == key })
}

// releaseSlot frees a slot, or returns the key it passes to.
func (m *model) releaseSlot() string {
	if m.max == 0 {
		return ""
	}
	if len(m.queue) > 0 {
		key := m.queue[0]
		m.queue = m.queue[1:]
		return key
	}
	m.active--
	return ""
}

// finish ends the running attempt of key.
func (m *model) finish(key string, ok, panicked bool) {
	k := m.keys[key]
	r := k.running
	k.running = nil
	switch {
	case ok:
		k.live, k.loaded = r.rev, true
		if p := k.pending; p != nil && p.rev == r.rev && !p.force {
			k.pending = nil
			r.tickets = append(r.tickets, p.tickets...)
		}
		settleAll(r, r.rev, dedup.Deployed, false)
	case m.closed:
		settleAll(r, r.rev, dedup.Aborted, false)
	case k.pending != nil:
		k.pending.tickets = append(k.pending.tickets, r.tickets...)
	case r.attempts < max(1, k.pol.Retry.MaxAttempts):
		backoff := k.pol.Retry.Initial
		for range r.attempts - 1 {
			backoff = time.Duration(float64(backoff) * k.pol.Retry.Multiplier)
		}
		r.retryAt = m.now.Add(min(backoff, k.pol.Retry.Max))
		r.canceled = false
		k.pending = r
	default:
		settleAll(r, r.rev, dedup.Failed, panicked)
	}
	m.ended(key)
}

// advance moves the model's time to 'to', starting pending runs and timing
// out running attempts at their instants, in order.
func (m *model) advance(to time.Time) {
	for {
		var next time.Time
		var nextKey string
		for _, key := range modelKeys {
			k := m.keys[key]
			var at time.Time
			switch {
			case k.running != nil && k.pol.Timeout > 0:
				at = k.running.attemptStart.Add(k.pol.Timeout)
			case k.running == nil && k.pending != nil && !slices.Contains(m.queue, key):
				at = m.startAt(k) // a queued key waits for a slot, not a time
			default:
				continue
			}
			if nextKey == "" || at.Before(next) || at.Equal(next) && m.before(key, nextKey, at) {
				next, nextKey = at, key
			}
		}
		if nextKey == "" || next.After(to) {
			m.now = to
			return
		}
		m.now = latest(m.now, next)
		if m.keys[nextKey].running != nil {
			m.finish(nextKey, false, false)
		} else {
			m.tryStart(nextKey)
		}
	}
}

// before reports whether key a, due at the same instant as key b, went
// first in the Manager: whichever made its first slot operation at that
// instant first. The order matters only for slots; without a slot
// operation, a key's turn changes nothing for the others.
func (m *model) before(a, b string, at time.Time) bool {
	ia, ib := m.firstSlotOp(a, at), m.firstSlotOp(b, at)
	return ia >= 0 && (ib < 0 || ia < ib)
}

func (m *model) close(expired bool) {
	m.closed = true
	m.queue = nil
	for _, key := range modelKeys {
		k := m.keys[key]
		if p := k.pending; p != nil {
			k.pending = nil
			settleAll(p, p.rev, dedup.Aborted, false)
		}
		if r := k.running; r != nil {
			k.running = nil
			if expired {
				m.canceledByClose = append(m.canceledByClose, key)
				settleAll(r, r.rev, dedup.Aborted, false)
			} else {
				k.live, k.loaded = r.rev, true
				settleAll(r, r.rev, dedup.Deployed, false)
			}
		}
	}
}
