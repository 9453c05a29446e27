package dedup_test

// A model-based test: the reference model of the per-key rules
// (internal/refmodel, written independently of every Manager and shared with
// pgdedup's model test) is driven through the same random schedule
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
	"testing"
	"testing/synctest"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/internal/refmodel"
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
		opts := []dedup.Option{dedup.WithKeyPolicy(func(key string) dedup.Policy { return mod.Keys[key].Pol })}
		if choose(2) == 0 {
			// A durable store from an earlier life: some keys are
			// live already.
			store := new(dedup.MemoryStore)
			mod.Store = true
			for _, k := range modelKeys {
				mod.Keys[k].Loaded = false
				if rev := choose(len(modelRevs) + 1); rev < len(modelRevs) {
					store.Save(context.Background(), k, modelRevs[rev])
					mod.Keys[k].Stored = modelRevs[rev]
				}
			}
			opts = append(opts, dedup.WithStore(store))
		}
		if n := choose(3); n > 0 {
			// When several keys come due at the same instant, the
			// contract leaves their order open: the model follows the
			// order of the Manager's slot operations.
			var order refmodel.SlotOrder
			mod.Before = order.Before
			opts = append(opts, dedup.WithMaxConcurrent(n), dedup.WithSlotHook(func(key string) { order.Record(key, time.Now()) }))
			mod.Max = n
		}
		m, err := dedup.New(panicky{d}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, m: m, d: d, mod: mod, last: make(map[string]*refmodel.Ticket)}
		t.Logf("policy %+v, max concurrent %d", pol, mod.Max)
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
	mod     *refmodel.Model
	seen    int                         // real calls compared so far
	calls   map[string]*deduptest.Call  // running real call per key
	tickets []*refmodel.Ticket          // Real: the *dedup.Ticket
	last    map[string]*refmodel.Ticket // newest trigger per key
	log     []string
}

func (h *harness) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf("%v ", h.mod.Now.Sub(h.mod.T0))+fmt.Sprintf(format, args...))
}

func (h *harness) trigger(key string, rev dedup.Revision, force, notify bool) {
	var opts []dedup.TriggerOption
	if force {
		opts = append(opts, dedup.Force())
	}
	h.logf("Trigger(%q, %q, force=%v, notify=%v)", key, rev, force, notify)
	mt := &refmodel.Ticket{Key: key, Requested: rev}
	if notify {
		if err := h.m.Notify(key, rev, opts...); err != nil {
			h.fatalf("Notify(%q, %q) = %v; want no error", key, rev, err)
		}
	} else {
		tk, err := h.m.Trigger(key, rev, opts...)
		if err != nil {
			h.fatalf("Trigger(%q, %q) = %v; want no error", key, rev, err)
		}
		mt.Real = tk
		h.tickets = append(h.tickets, mt)
	}
	action, replaced := h.mod.Trigger(key, rev, force, mt)
	if tk := realTicket(mt); tk != nil && (tk.Action() != action || tk.Replaced() != replaced) {
		h.fatalf("Trigger(%q, %q): Action, Replaced = %v, %q; want %v, %q", key, rev, tk.Action(), tk.Replaced(), action, replaced)
	}
	h.last[key] = mt
	synctest.Wait()
}

// forget calls Forget on key.
func (h *harness) forget(key string) {
	h.logf("Forget(%q)", key)
	got, want := h.m.Forget(key), h.mod.Forget(key)
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
		if r := h.mod.Keys[k].Running; r != nil && !r.Canceled {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	key := keys[which%len(keys)]
	c := h.calls[key]
	if c == nil {
		h.fatalf("model runs %q on key %q, but no deploy call is in flight", h.mod.Keys[key].Running.Rev, key)
	}
	err := []error{nil, nil, errDeploy, errPanic}[kind]
	h.logf("Finish(%q %q, %v)", key, c.Revision, err)
	c.Finish(err)
	<-c.Returned()
	delete(h.calls, key)
	synctest.Wait()
	h.mod.Finish(key, err == nil, errors.Is(err, errPanic))
}

func (h *harness) advance(d time.Duration) {
	h.logf("Advance(%v)", d)
	time.Sleep(d) // fake time: the bubble settles at every instant on the way
	synctest.Wait()
	h.mod.Advance(time.Now())
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
	h.mod.Close(expired)
	if !expired {
		for _, k := range modelKeys {
			if c := h.calls[k]; c != nil {
				c.Finish(nil)
				delete(h.calls, k)
			}
		}
	}
	err := <-done
	if expired && len(h.mod.CanceledByClose) > 0 && !errors.Is(err, context.Canceled) {
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
	var got []refmodel.Start
	for _, c := range calls[h.seen:] {
		got = append(got, refmodel.Start{Key: c.Key, Rev: c.Revision})
		h.calls[c.Key] = c
	}
	h.seen = len(calls)
	want := h.mod.TakeStarts()
	// Keys are independent: compare the order of starts per key only.
	for _, k := range modelKeys {
		g, w := filterKey(got, k), filterKey(want, k)
		if !slices.Equal(g, w) {
			h.fatalf("deploys started for %q = %v; model says %v", k, g, w)
		}
	}
	for _, k := range modelKeys {
		st, _ := h.m.Status(k)
		mk := h.mod.Keys[k]
		w := dedup.Status{Live: mk.Live}
		if mk.Running != nil {
			w.Running = mk.Running.Rev
		}
		if mk.Pending != nil {
			w.Pending = mk.Pending.Rev
			w.Queued = slices.Contains(h.mod.Queue, k)
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
		tk := realTicket(mt)
		select {
		case <-tk.Done():
			if !mt.Settled {
				h.fatalf("ticket %d (%q %q) settled as %+v; model says it is still waiting", i, mt.Key, mt.Requested, tk.Result())
			}
			r := tk.Result()
			if r.Revision != mt.Rev || r.Outcome != mt.Outcome || r.Requested != mt.Requested || r.Key != mt.Key {
				h.fatalf("ticket %d (%q %q) = %v %q (err %v); model says %v %q", i, mt.Key, mt.Requested, r.Outcome, r.Revision, r.Err, mt.Outcome, mt.Rev)
			}
			if (r.Err != nil) != (r.Outcome == dedup.Failed || r.Outcome == dedup.Aborted) {
				h.fatalf("ticket %d: Outcome %v with Err %v", i, r.Outcome, r.Err)
			}
			if r.Outcome == dedup.Aborted && !errors.Is(r.Err, dedup.ErrClosed) {
				h.fatalf("ticket %d: Aborted with Err %v; want ErrClosed", i, r.Err)
			}
			if mt.Panicked {
				var pe *dedup.PanicError
				if !errors.As(r.Err, &pe) || !errors.Is(r.Err, errPanic) {
					h.fatalf("ticket %d: Err %v; want a *PanicError of errPanic", i, r.Err)
				}
			}
		default:
			if mt.Settled {
				h.fatalf("ticket %d (%q %q) still waits; model says %v %q", i, mt.Key, mt.Requested, mt.Outcome, mt.Rev)
			}
		}
	}
}

// checkEnd checks what must hold once the Manager is closed: every ticket
// settled, and the newest revision of every key deployed or reported.
func (h *harness) checkEnd() {
	for i, mt := range h.tickets {
		select {
		case <-realTicket(mt).Done():
		default:
			h.fatalf("ticket %d (%q %q) never settled", i, mt.Key, mt.Requested)
		}
	}
	for _, k := range modelKeys {
		last := h.last[k]
		if last == nil || realTicket(last) == nil {
			continue // never triggered, or last by Notify: no ticket to ask
		}
		r := realTicket(last).Result()
		st, _ := h.m.Status(k)
		if st.Live != last.Requested && r.Err == nil {
			h.fatalf("newest revision %q of %q is neither live (live %q) nor reported failed (%v)", last.Requested, k, st.Live, r.Outcome)
		}
	}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	for _, l := range h.log {
		h.t.Log(l)
	}
	h.t.Logf("model: slots taken %d, queue %v", h.mod.Active, h.mod.Queue)
	for _, st := range h.m.Statuses() {
		h.t.Logf("Manager: %q running %q pending %q queued %v attempt %d", st.Key, st.Running, st.Pending, st.Queued, st.Attempt)
	}
	h.t.Fatalf(format, args...)
}

func filterKey(s []refmodel.Start, key string) []dedup.Revision {
	var out []dedup.Revision
	for _, x := range s {
		if x.Key == key {
			out = append(out, x.Rev)
		}
	}
	return out
}

// realTicket is the Manager's ticket of a model ticket; nil for a Notify.
func realTicket(mt *refmodel.Ticket) *dedup.Ticket {
	tk, _ := mt.Real.(*dedup.Ticket)
	return tk
}

// newModel returns a model whose keys have policy pol, with every duration
// of key b one millisecond longer and of key c one microsecond longer, so
// that keys rarely come due at the same instant. They still can (a key
// handed a slot when another finished takes on that key's instants), and
// then the model takes them in the order the Manager did (refmodel.SlotOrder,
// set up by runModel): timers of the same instant fire in no set order.
func newModel(pol dedup.Policy, now time.Time) *refmodel.Model {
	return refmodel.New(modelKeys, pol, now, []time.Duration{0, time.Millisecond, time.Microsecond})
}
