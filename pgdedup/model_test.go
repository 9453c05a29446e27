package pgdedup_test

// A model-based randomized test across three replicas: three Managers, each
// with a pool of its own, share one schema and are driven through a random
// schedule beside the reference model of the per-key rules
// (internal/refmodel), the same model that checks the in-memory Manager.
// Triggers go to random replicas; deploys succeed, fail or panic; a replica
// abandons an attempt without releasing its lease, which expires and the
// key runs again with a higher fence. After every step the test waits for
// the cluster to reach the state the model says (the deploys it starts, the
// live, running and pending revision of every key, the tickets it settles)
// and checks the invariants: no two attempts of a key overlap (a new one
// starts only once every older one's context is done), fences strictly
// increase per key, the newest revision ends deployed or failed, every
// caller on every replica gets an answer.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/refmodel"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
)

var (
	modelRuns = flag.Int("model.runs", 6, "random schedules TestModelReplicas runs")
	modelSeed = flag.Uint64("model.seed", 0, "run only this seed of TestModelReplicas (0: all)")
)

func TestModelReplicas(t *testing.T) {
	server(t)
	first, runs := uint64(1), *modelRuns
	if *modelSeed != 0 {
		first, runs = *modelSeed, 1
	}
	for seed := first; seed < first+uint64(runs); seed++ {
		if !t.Run(fmt.Sprint(seed), func(t *testing.T) { runReplicaModel(t, seed, 40) }) {
			t.Fatalf("schedule failed; rerun with: go test -race -run 'TestModelReplicas' -model.seed=%d -v", seed)
		}
	}
}

var (
	repKeys = []string{"a", "b", "c"}
	repRevs = []dedup.Revision{"r0", "r1", "r2", "r3"}
	errFail = errors.New("deploy failed")
)

// recorder is the Deployer of every replica: it records each attempt with
// its fence and replica, checks that an attempt starts only when every
// older attempt of its key has lost its context, and that fences increase.
type recorder struct {
	mu       sync.Mutex
	inFlight map[string][]*call // attempts of a key that have not returned
	fences   map[string]int64
	problems []string
	started  chan *call
}

func (r *recorder) deployer(replica int) dedup.Deployer {
	return dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		f, ok := pgdedup.Fence(ctx)
		c := &call{key: key, rev: rev, fence: f, ctx: ctx, finish: make(chan error, 1), ret: make(chan struct{}), replica: replica}
		r.mu.Lock()
		if !ok {
			r.problems = append(r.problems, fmt.Sprintf("%s %s: no fence in the context", key, rev))
		}
		if f <= r.fences[key] {
			r.problems = append(r.problems, fmt.Sprintf("%s %s: fence %d after fence %d", key, rev, f, r.fences[key]))
		}
		r.fences[key] = f
		for _, o := range r.inFlight[key] {
			if o.ctx.Err() == nil {
				r.problems = append(r.problems, fmt.Sprintf("%s %s (fence %d) started while %s (fence %d) still held a live context", key, rev, f, o.rev, o.fence))
			}
		}
		r.inFlight[key] = append(r.inFlight[key], c)
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.inFlight[key] = slices.DeleteFunc(r.inFlight[key], func(o *call) bool { return o == c })
			r.mu.Unlock()
			close(c.ret)
		}()
		r.started <- c
		select {
		case err := <-c.finish:
			if errors.Is(err, errPanic) {
				panic(err)
			}
			return err
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
}

type replicaHarness struct {
	t       *testing.T
	ms      []*pgdedup.Manager
	rec     *recorder
	mod     *refmodel.Model
	rng     *rand.Rand
	running map[string]*call // the attempt the model says runs, per key
	tickets []*refmodel.Ticket
	last    map[string]*refmodel.Ticket
	log     []string
}

func runReplicaModel(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15))
	var pol dedup.Policy
	if n := rng.IntN(3); n > 0 {
		pol.Retry = dedup.RetryPolicy{MaxAttempts: n + 1, Initial: time.Millisecond, Multiplier: 2, Max: 2 * time.Millisecond}
	}
	pol.CancelInProgress = rng.IntN(3) == 0
	schema := server(t).Schema(t)
	rec := &recorder{inFlight: map[string][]*call{}, fences: map[string]int64{}, started: make(chan *call, 100)}
	h := &replicaHarness{t: t, rec: rec, rng: rng, running: map[string]*call{}, last: map[string]*refmodel.Ticket{},
		mod: refmodel.New(repKeys, pol, time.Now(), nil)}
	for i := range 3 {
		h.ms = append(h.ms, newManager(t, schema, rec.deployer(i), pgdedup.WithKeyPolicy(func(string) dedup.Policy { return pol }),
			pgdedup.WithLease(time.Second), pgdedup.WithReplicaID(fmt.Sprintf("replica-%d", i))))
	}
	t.Logf("seed %d, policy %+v", seed, pol)
	abandons := 0
	for range steps {
		switch op := rng.IntN(20); {
		case op < 11:
			h.trigger(repKeys[rng.IntN(len(repKeys))], repRevs[rng.IntN(len(repRevs))], rng.IntN(10) == 0, rng.IntN(5) == 0)
		case op < 19 || abandons >= 2:
			h.finish(rng.IntN(len(repKeys)), rng.IntN(4))
		default:
			if h.abandon(rng.IntN(len(repKeys))) {
				abandons++
			}
		}
		h.settle()
		if t.Failed() {
			return
		}
	}
	// Let everything finish, then check the end.
	for {
		var any bool
		for _, k := range repKeys {
			if h.mod.Keys[k].Running != nil {
				h.finishKey(k, 0)
				h.settle()
				any = true
			}
		}
		if !any || t.Failed() {
			break
		}
	}
	for i, mt := range h.tickets {
		if !mt.Settled {
			h.fatalf("ticket %d (%s %s) never settled by the model", i, mt.Key, mt.Requested)
		}
	}
	for _, k := range repKeys {
		last := h.last[k]
		if last == nil || last.Real == nil {
			continue
		}
		r := last.Real.(*pgdedup.Ticket).Result()
		st, _, _ := h.ms[0].Status(context.Background(), k)
		if st.Live != last.Requested && r.Err == nil {
			h.fatalf("newest revision %q of %q is neither live (live %q) nor reported failed (%v)", last.Requested, k, st.Live, r.Outcome)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range rec.problems {
		t.Error(p)
	}
}

func (h *replicaHarness) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

func (h *replicaHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	for _, l := range h.log {
		h.t.Log(l)
	}
	h.t.Fatalf(format, args...)
}

func (h *replicaHarness) trigger(key string, rev dedup.Revision, force, notify bool) {
	i := h.rng.IntN(len(h.ms))
	m := h.ms[i]
	var opts []dedup.TriggerOption
	if force {
		opts = append(opts, dedup.Force())
	}
	h.logf("replica %d: Trigger(%q, %q, force=%v, notify=%v)", i, key, rev, force, notify)
	if notify {
		if err := m.Notify(key, rev, opts...); err != nil {
			h.fatalf("Notify(%q, %q) = %v", key, rev, err)
		}
		h.mod.Trigger(key, rev, force, nil)
		h.last[key] = &refmodel.Ticket{Key: key, Requested: rev}
		return
	}
	tk, err := m.Trigger(key, rev, opts...)
	if err != nil {
		h.fatalf("Trigger(%q, %q) = %v", key, rev, err)
	}
	mt := &refmodel.Ticket{Key: key, Requested: rev, Real: tk}
	h.tickets = append(h.tickets, mt)
	h.last[key] = mt
	action, replaced := h.mod.Trigger(key, rev, force, mt)
	if tk.Action() != action || tk.Replaced() != replaced {
		h.fatalf("Trigger(%q, %q): Action, Replaced = %v, %q; model says %v, %q", key, rev, tk.Action(), tk.Replaced(), action, replaced)
	}
}

// finish ends the running attempt of the which-th key that has one: kind 0
// and 1 succeed, 2 fails, 3 panics.
func (h *replicaHarness) finish(which, kind int) {
	var keys []string
	for _, k := range repKeys {
		if r := h.mod.Keys[k].Running; r != nil && !r.Canceled {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	h.finishKey(keys[which%len(keys)], kind)
}

func (h *replicaHarness) finishKey(key string, kind int) {
	c := h.running[key]
	if c == nil {
		h.fatalf("model runs %q on %q, but no attempt is in flight", h.mod.Keys[key].Running.Rev, key)
	}
	err := []error{nil, nil, errFail, errPanic}[kind]
	h.logf("Finish(%q %q fence %d on replica %d, %v)", key, c.rev, c.fence, c.replica, err)
	c.finish <- err
	select {
	case <-c.ret:
	case <-time.After(10 * time.Second):
		h.fatalf("attempt %q %q did not return", key, c.rev)
	}
	delete(h.running, key)
	h.mod.Finish(key, err == nil, errors.Is(err, errPanic))
}

// abandon makes the replica running the which-th busy key stop renewing
// the attempt's lease: the key runs again after the lease expires.
func (h *replicaHarness) abandon(which int) bool {
	var keys []string
	for _, k := range repKeys {
		if r := h.mod.Keys[k].Running; r != nil && !r.Canceled {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return false
	}
	key := keys[which%len(keys)]
	c := h.running[key]
	h.logf("Abandon(%q %q fence %d on replica %d)", key, c.rev, c.fence, c.replica)
	if !pgdedup.Abandon(h.ms[c.replica], key) {
		h.fatalf("replica %d runs no attempt of %q", c.replica, key)
	}
	select {
	case <-c.ret: // canceled when its lease ran out
	case <-time.After(10 * time.Second):
		h.fatalf("abandoned attempt %q %q was not canceled", key, c.rev)
	}
	delete(h.running, key)
	h.mod.Interrupt(key)
	return true
}

// settle waits until the cluster is where the model says: the deploys it
// started, the state of each key in the database, and the tickets.
func (h *replicaHarness) settle() {
	h.t.Helper()
	h.mod.Advance(h.mod.Now.Add(time.Hour)) // retry backoffs are a millisecond: all due
	want := map[string][]dedup.Revision{}
	for _, s := range h.mod.TakeStarts() {
		want[s.Key] = append(want[s.Key], s.Rev)
	}
	got := map[string][]dedup.Revision{}
	deadline := time.After(15 * time.Second)
	for !startsMatch(got, want) {
		select {
		case c := <-h.rec.started:
			got[c.key] = append(got[c.key], c.rev)
			h.running[c.key] = c
			h.logf("  started %q %q fence %d on replica %d", c.key, c.rev, c.fence, c.replica)
			if len(got[c.key]) > len(want[c.key]) {
				h.fatalf("deploys started for %q = %v; model says %v", c.key, got[c.key], want[c.key])
			}
		case <-deadline:
			h.fatalf("deploys started = %v; model says %v", got, want)
		}
	}
	// The database's state of each key, read from a random replica.
	var last string
	for end := time.Now().Add(15 * time.Second); ; {
		sts, err := h.ms[h.rng.IntN(len(h.ms))].Statuses(context.Background())
		if err != nil {
			h.fatalf("Statuses: %v", err)
		}
		last = ""
		for _, st := range sts {
			mk := h.mod.Keys[st.Key]
			var wr, wp dedup.Revision
			if mk.Running != nil {
				wr = mk.Running.Rev
			}
			if mk.Pending != nil {
				wp = mk.Pending.Rev
			}
			if st.Live != mk.Live || st.Running != wr || st.Pending != wp {
				last = fmt.Sprintf("Status(%q) = live %q running %q pending %q; model says live %q running %q pending %q",
					st.Key, st.Live, st.Running, st.Pending, mk.Live, wr, wp)
			}
		}
		if last == "" {
			break
		}
		if time.Now().After(end) {
			h.fatalf("%s", last)
		}
		time.Sleep(10 * time.Millisecond) // polling the database for a condition, with a deadline
	}
	for i, mt := range h.tickets {
		tk := mt.Real.(*pgdedup.Ticket)
		if !mt.Settled {
			select {
			case <-tk.Done():
				h.fatalf("ticket %d (%q %q) settled as %+v; model says it still waits", i, mt.Key, mt.Requested, tk.Result())
			default:
			}
			continue
		}
		select {
		case <-tk.Done():
		case <-time.After(10 * time.Second):
			h.fatalf("ticket %d (%q %q) still waits; model says %v %q", i, mt.Key, mt.Requested, mt.Outcome, mt.Rev)
		}
		r := tk.Result()
		if r.Revision != mt.Rev || r.Outcome != mt.Outcome || r.Requested != mt.Requested || r.Key != mt.Key {
			h.fatalf("ticket %d (%q %q) = %v %q (err %v); model says %v %q", i, mt.Key, mt.Requested, r.Outcome, r.Revision, r.Err, mt.Outcome, mt.Rev)
		}
		if (r.Err != nil) != (r.Outcome == dedup.Failed || r.Outcome == dedup.Aborted) {
			h.fatalf("ticket %d: Outcome %v with Err %v", i, r.Outcome, r.Err)
		}
	}
}

func startsMatch(got, want map[string][]dedup.Revision) bool {
	for _, k := range repKeys {
		if !slices.Equal(got[k], want[k]) {
			return false
		}
	}
	return true
}
