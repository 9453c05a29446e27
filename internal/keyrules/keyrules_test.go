package keyrules_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/keyrules"
	"github.com/dedupdeploy/dedupdeploy/internal/refmodel"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRequest(t *testing.T) {
	pol := &keyrules.Policy{CancelInProgress: true}
	running := keyrules.State{Loaded: true, Live: "v0", Running: keyrules.Run{Rev: "v1", Attempts: 1}}
	for _, tc := range []struct {
		name     string
		s        keyrules.State
		rev      string
		force    bool
		want     keyrules.Action
		replaced string
		cancel   bool
	}{
		{"live", keyrules.State{Loaded: true, Live: "v0"}, "v0", false, keyrules.ActionUnchanged, "", false},
		{"live forced", keyrules.State{Loaded: true, Live: "v0"}, "v0", true, keyrules.ActionQueued, "", false},
		{"not loaded", keyrules.State{}, "v0", false, keyrules.ActionQueued, "", false},
		{"join running", running, "v1", false, keyrules.ActionJoinedRunning, "", false},
		{"behind running cancels", running, "v2", false, keyrules.ActionQueued, "", true},
		{"join pending", keyrules.State{Loaded: true, Running: running.Running, Pending: keyrules.Run{Rev: "v2"}}, "v2", false, keyrules.ActionJoinedPending, "", false},
		{"supersede", keyrules.State{Loaded: true, Running: running.Running, Pending: keyrules.Run{Rev: "v2"}}, "v3", false, keyrules.ActionQueued, "v2", false},
		{"rollback", keyrules.State{Loaded: true, Live: "v2"}, "v1", false, keyrules.ActionQueued, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, q := keyrules.Request(tc.s, pol, t0, tc.rev, tc.force)
			if q.Action != tc.want || q.Replaced != tc.replaced || q.Cancel != tc.cancel {
				t.Errorf("Request(%q) = %+v; want action %v replaced %q cancel %v", tc.rev, q, tc.want, tc.replaced, tc.cancel)
			}
		})
	}
}

func TestFinish(t *testing.T) {
	pol := &keyrules.Policy{MaxAttempts: 3, RetryInitial: time.Second, RetryMax: 3 * time.Second, RetryMultiplier: 4}
	run := keyrules.Run{Rev: "v1", Attempts: 1}
	for _, tc := range []struct {
		name string
		s    keyrules.State
		a    keyrules.Attempt
		want keyrules.Finished
		live string
	}{
		{"deployed", keyrules.State{Loaded: true, Running: run}, keyrules.Attempt{}, keyrules.Finished{Outcome: keyrules.Deployed}, "v1"},
		{"deployed absorbs", keyrules.State{Loaded: true, Running: run, Pending: keyrules.Run{Rev: "v1"}}, keyrules.Attempt{}, keyrules.Finished{Outcome: keyrules.Deployed, AbsorbPending: true}, "v1"},
		{"forced not absorbed", keyrules.State{Loaded: true, Running: run, Pending: keyrules.Run{Rev: "v1", Force: true}}, keyrules.Attempt{}, keyrules.Finished{Outcome: keyrules.Deployed}, "v1"},
		{"retry", keyrules.State{Loaded: true, Running: run}, keyrules.Attempt{Failed: true}, keyrules.Finished{Retry: true, Delay: time.Second}, ""},
		{"retry capped", keyrules.State{Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 2}}, keyrules.Attempt{Failed: true}, keyrules.Finished{Retry: true, Delay: 3 * time.Second}, ""},
		{"final", keyrules.State{Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 3}}, keyrules.Attempt{Failed: true}, keyrules.Finished{Outcome: keyrules.Failed}, ""},
		{"newer pending", keyrules.State{Loaded: true, Running: run, Pending: keyrules.Run{Rev: "v2"}}, keyrules.Attempt{Failed: true}, keyrules.Finished{IntoPending: true}, ""},
		{"closed", keyrules.State{Loaded: true, Running: run}, keyrules.Attempt{Failed: true, Closed: true, Aborted: true}, keyrules.Finished{Outcome: keyrules.Aborted}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, f := keyrules.Finish(tc.s, pol, t0, tc.a)
			if f != tc.want || s.Live != tc.live || s.Running.Active() {
				t.Errorf("Finish = %+v, live %q, running %q; want %+v, live %q", f, s.Live, s.Running.Rev, tc.want, tc.live)
			}
		})
	}
}

func TestInterrupt(t *testing.T) {
	s := keyrules.State{Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 1}}
	s, f := keyrules.Interrupt(s)
	if !f.Retry || s.Pending.Rev != "v1" || s.Pending.Attempts != 0 || s.Running.Active() {
		t.Fatalf("Interrupt = %+v, %+v; want v1 pending again", s, f)
	}
	s = keyrules.State{Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 1}, Pending: keyrules.Run{Rev: "v2"}}
	s, f = keyrules.Interrupt(s)
	if !f.IntoPending || s.Pending.Rev != "v2" {
		t.Fatalf("Interrupt with v2 pending = %+v, %+v; want v1's tickets moved to v2", s, f)
	}
}

func TestAllocs(t *testing.T) {
	pol := &keyrules.Policy{Quiet: time.Second}
	var s keyrules.State
	n := testing.AllocsPerRun(100, func() {
		s, _ = keyrules.Request(keyrules.State{Loaded: true}, pol, t0, "v1", false)
		s, _ = keyrules.Schedule(s, pol, t0.Add(time.Hour))
		s, _ = keyrules.Start(s)
		s = keyrules.Begin(s, t0)
		s, _ = keyrules.Finish(s, pol, t0, keyrules.Attempt{})
	})
	if n != 0 {
		t.Errorf("a trigger and its run allocate %v times; want 0", n)
	}
}

// TestModel drives the rules, applied by a minimal driver, and the
// reference model through the same random schedules of one key.
func TestModel(t *testing.T) {
	for seed := uint64(1); seed <= 2000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		if !t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, rng) }) {
			return
		}
	}
}

type ticket struct {
	mt *refmodel.Ticket
}

// driver applies keyrules to one key the way a Manager does: tickets wait
// on runs, and runs carry their tickets.
type driver struct {
	s                 keyrules.State
	pol               keyrules.Policy
	running, pending  []*refmodel.Ticket // the tickets of each run
	now               time.Time
	timeout           time.Duration
	starts            []dedup.Revision
	canceled          bool // the running attempt was canceled: the test ends it at once
	panickedLastStart bool
}

func (d *driver) settle(ts []*refmodel.Ticket, rev string, o keyrules.Outcome, panicked bool) {
	refmodel.SettleAll(&refmodel.Run{Tickets: ts}, dedup.Revision(rev), dedup.Outcome(o), panicked)
}

func (d *driver) schedule() bool {
	var sch keyrules.Scheduled
	d.s, sch = keyrules.Schedule(d.s, &d.pol, d.now)
	switch sch.Kind {
	case keyrules.BackToLive:
		d.settle(d.pending, sch.Rev, keyrules.Unchanged, false)
		d.pending = nil
	case keyrules.Due:
		d.s, _ = keyrules.Start(d.s)
		d.s = keyrules.Begin(d.s, d.now)
		d.running, d.pending = d.pending, nil
		d.starts = append(d.starts, dedup.Revision(d.s.Running.Rev))
		return true
	}
	return false
}

func (d *driver) trigger(rev string, force bool, t *refmodel.Ticket) keyrules.Action {
	var q keyrules.Requested
	d.s, q = keyrules.Request(d.s, &d.pol, d.now, rev, force)
	switch q.Action {
	case keyrules.ActionUnchanged:
		d.settle([]*refmodel.Ticket{t}, rev, keyrules.Unchanged, false)
		return q.Action
	case keyrules.ActionJoinedRunning:
		d.running = append(d.running, t)
		return q.Action
	case keyrules.ActionJoinedPending:
		d.pending = append(d.pending, t)
		return q.Action
	}
	d.pending = append(d.pending, t)
	if q.Cancel {
		d.finish(true, false) // the canceled attempt returns at once
	}
	wasRunning := d.s.Running.Active() || q.Cancel
	started := d.schedule()
	switch {
	case wasRunning:
		return keyrules.ActionQueued
	case started:
		return keyrules.ActionStarted
	case !d.s.Pending.Active():
		return keyrules.ActionUnchanged
	}
	return keyrules.ActionQueued
}

func (d *driver) finish(failed, panicked bool) {
	var f keyrules.Finished
	rev := d.s.Running.Rev
	d.s, f = keyrules.Finish(d.s, &d.pol, d.now, keyrules.Attempt{Failed: failed})
	switch {
	case f.Outcome != 0:
		if f.AbsorbPending {
			d.running = append(d.running, d.pending...)
			d.pending = nil
		}
		d.settle(d.running, rev, f.Outcome, panicked)
	case f.IntoPending:
		d.pending = append(d.pending, d.running...)
	case f.Retry:
		d.pending = d.running
	}
	d.running = nil
	d.schedule()
}

func (d *driver) advance(to time.Time) {
	for {
		var at time.Time
		switch {
		case d.s.Running.Active() && d.timeout > 0:
			at = d.s.LastStarted.Add(d.timeout)
		case !d.s.Running.Active() && d.s.Pending.Active():
			at = keyrules.StartAt(d.s, &d.pol)
		default:
			d.now = to
			return
		}
		if at.After(to) {
			d.now = to
			return
		}
		if at.After(d.now) {
			d.now = at
		}
		if d.s.Running.Active() {
			d.finish(true, false)
		} else {
			d.schedule()
		}
	}
}

func policyOf(p dedup.Policy) keyrules.Policy {
	return keyrules.Policy{Quiet: p.Quiet, MaxDelay: p.MaxDelay, MinInterval: p.MinInterval,
		MaxAttempts: p.Retry.MaxAttempts, RetryInitial: p.Retry.Initial, RetryMax: p.Retry.Max,
		RetryMultiplier: p.Retry.Multiplier, CancelInProgress: p.CancelInProgress}
}

func runModel(t *testing.T, rng *rand.Rand) {
	var pol dedup.Policy
	if rng.IntN(3) == 0 {
		pol.Quiet = 3 * time.Second
		if rng.IntN(2) == 0 {
			pol.MaxDelay = 5 * time.Second
		}
	}
	if rng.IntN(3) == 0 {
		pol.MinInterval = 4 * time.Second
	}
	if n := rng.IntN(3); n > 0 {
		pol.Retry = dedup.RetryPolicy{MaxAttempts: n + 1, Initial: 2 * time.Second, Multiplier: 2, Max: 5 * time.Second}
	}
	if rng.IntN(3) == 0 {
		pol.Timeout = 10 * time.Second
	}
	pol.CancelInProgress = rng.IntN(3) == 0
	mod := refmodel.New([]string{"k"}, pol, t0, nil)
	d := &driver{s: keyrules.State{Loaded: true}, pol: policyOf(pol), now: t0, timeout: pol.Timeout}
	revs := []string{"r0", "r1", "r2", "r3"}
	var tickets []*refmodel.Ticket // the driver's
	var want []*refmodel.Ticket    // the model's
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		for _, l := range log {
			t.Log(l)
		}
		t.Fatalf(format, args...)
	}
	for range 60 {
		switch op := rng.IntN(10); {
		case op < 5:
			rev, force := revs[rng.IntN(len(revs))], rng.IntN(8) == 0
			log = append(log, fmt.Sprintf("trigger %s force=%v", rev, force))
			dt := &refmodel.Ticket{Key: "k", Requested: dedup.Revision(rev)}
			mt := &refmodel.Ticket{Key: "k", Requested: dedup.Revision(rev)}
			tickets, want = append(tickets, dt), append(want, mt)
			got := d.trigger(rev, force, dt)
			wa, _ := mod.Trigger("k", dedup.Revision(rev), force, mt)
			if dedup.Action(got) != wa {
				fail("trigger %s: action %v; model says %v", rev, dedup.Action(got), wa)
			}
		case op < 8:
			if !d.s.Running.Active() {
				continue
			}
			failed := rng.IntN(2) == 0
			log = append(log, fmt.Sprintf("finish failed=%v", failed))
			d.finish(failed, false)
			mod.Finish("k", !failed, false)
		default:
			dur := time.Duration(rng.IntN(8)) * time.Second
			log = append(log, fmt.Sprintf("advance %v", dur))
			d.advance(d.now.Add(dur))
			mod.Advance(mod.Now.Add(dur))
		}
		mk := mod.Keys["k"]
		var wr, wp dedup.Revision
		if mk.Running != nil {
			wr = mk.Running.Rev
		}
		if mk.Pending != nil {
			wp = mk.Pending.Rev
		}
		if string(wr) != d.s.Running.Rev || string(wp) != d.s.Pending.Rev || string(mk.Live) != d.s.Live {
			fail("running %q pending %q live %q; model says %q %q %q", d.s.Running.Rev, d.s.Pending.Rev, d.s.Live, wr, wp, mk.Live)
		}
		var ws []dedup.Revision
		for _, s := range mod.TakeStarts() {
			ws = append(ws, s.Rev)
		}
		if fmt.Sprint(ws) != fmt.Sprint(d.starts) {
			fail("starts %v; model says %v", d.starts, ws)
		}
		d.starts = nil
		for i := range tickets {
			g, w := tickets[i], want[i]
			if g.Settled != w.Settled || g.Rev != w.Rev || g.Outcome != w.Outcome {
				fail("ticket %d (%s): settled %v %v %q; model says %v %v %q", i, g.Requested, g.Settled, g.Outcome, g.Rev, w.Settled, w.Outcome, w.Rev)
			}
		}
	}
}

// TestForceWhileLoading: a forced trigger that joins a run whose Store is
// being read makes it forced, so that the Store saying the revision is
// live does not settle it Unchanged; once the attempt began, joining
// changes nothing.
func TestForceWhileLoading(t *testing.T) {
	pol := &keyrules.Policy{}
	s, _ := keyrules.Request(keyrules.State{}, pol, t0, "v1", false)
	s, _ = keyrules.Schedule(s, pol, t0)
	s, needLoad := keyrules.Start(s)
	if !needLoad || !s.Running.Loading {
		t.Fatalf("Start of a key never loaded: needLoad %v, Loading %v; want both", needLoad, s.Running.Loading)
	}
	s, q := keyrules.Request(s, pol, t0, "v1", true)
	if q.Action != keyrules.ActionJoinedRunning || !s.Running.Force {
		t.Fatalf("forced trigger while loading: %+v, Force %v; want joined running, forced", q, s.Running.Force)
	}
	s, f := keyrules.Loaded(s, "v1", true, false)
	if !f.Begin || s.Running.Loading || s.Live != "v1" {
		t.Fatalf("Loaded(v1 live) of a forced run = %+v, %+v; want Begin", s, f)
	}
	s = keyrules.Begin(s, t0)
	s.Running.Force = false
	s, _ = keyrules.Request(s, pol, t0, "v1", true)
	if s.Running.Force {
		t.Fatalf("a forced trigger joining a begun attempt made it forced")
	}
}

func TestLoadedHardened(t *testing.T) {
	loading := func(r keyrules.Run) keyrules.State {
		r.Loading = true
		return keyrules.State{Running: r}
	}
	v1 := keyrules.Run{Rev: "v1"}
	for _, tc := range []struct {
		name       string
		s          keyrules.State
		rev        string
		ok, failed bool
		want       keyrules.Finished
		loaded     bool
		live       string
	}{
		{"live already", loading(v1), "v1", true, false, keyrules.Finished{Outcome: keyrules.Unchanged}, true, "v1"},
		{"other live", loading(v1), "v0", true, false, keyrules.Finished{Begin: true}, true, "v0"},
		{"unknown key", loading(v1), "", false, false, keyrules.Finished{Begin: true}, true, ""},
		{"ok=false ignores rev", loading(v1), "v1", false, false, keyrules.Finished{Begin: true}, true, ""},
		{"failed ignores rev", loading(v1), "v1", true, true, keyrules.Finished{Begin: true}, false, ""},
		{"forced", loading(keyrules.Run{Rev: "v1", Force: true}), "v1", true, false, keyrules.Finished{Begin: true}, true, "v1"},
		{"absorbs pending", keyrules.State{Running: keyrules.Run{Rev: "v1", Loading: true}, Pending: keyrules.Run{Rev: "v1"}}, "v1", true, false,
			keyrules.Finished{Outcome: keyrules.Unchanged, AbsorbPending: true}, true, "v1"},
		{"canceled for newer", keyrules.State{Running: keyrules.Run{Rev: "v1", Loading: true, Canceled: true}, Pending: keyrules.Run{Rev: "v2"}}, "v0", true, false,
			keyrules.Finished{IntoPending: true}, true, "v0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, f := keyrules.Loaded(tc.s, tc.rev, tc.ok, tc.failed)
			if f != tc.want || s.Loaded != tc.loaded || s.Live != tc.live || s.Running.Loading {
				t.Errorf("Loaded = %+v, %+v; want %+v, loaded %v, live %q", s, f, tc.want, tc.loaded, tc.live)
			}
			if f.Begin != s.Running.Active() {
				t.Errorf("Loaded: Begin %v with running %q", f.Begin, s.Running.Rev)
			}
		})
	}
}

// TestTimed: for a policy that is not Timed, Request and Schedule give the
// same answer whatever now is (but for the burst times they record).
func TestTimed(t *testing.T) {
	pols := []keyrules.Policy{{}, {CancelInProgress: true}, {MaxAttempts: 1}}
	timed := []keyrules.Policy{{Quiet: 1}, {MinInterval: 1}, {MaxAttempts: 2}}
	for _, p := range timed {
		if !p.Timed() {
			t.Errorf("%+v is not Timed", p)
		}
	}
	states := []keyrules.State{
		{}, {Loaded: true, Live: "v1"}, {Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 1}, LastStarted: t0},
		{Loaded: true, Running: keyrules.Run{Rev: "v1", Attempts: 1}, Pending: keyrules.Run{Rev: "v2", First: t0, Last: t0}, LastStarted: t0},
		{Loaded: true, Live: "v0", Pending: keyrules.Run{Rev: "v2", First: t0, Last: t0}, LastStarted: t0},
	}
	noBurst := func(s keyrules.State) keyrules.State {
		s.Pending.First, s.Pending.Last = time.Time{}, time.Time{}
		return s
	}
	for _, p := range pols {
		if p.Timed() {
			t.Fatalf("%+v is Timed", p)
		}
		for _, s := range states {
			for _, rev := range []string{"v0", "v1", "v2", "v3"} {
				for _, force := range []bool{false, true} {
					a, qa := keyrules.Request(s, &p, time.Time{}, rev, force)
					b, qb := keyrules.Request(s, &p, t0.Add(time.Hour), rev, force)
					if noBurst(a) != noBurst(b) || qa != qb {
						t.Errorf("Request(%+v, %q) depends on now: %+v %+v vs %+v %+v", s, rev, a, qa, b, qb)
					}
					a, sa := keyrules.Schedule(a, &p, time.Time{})
					b, sb := keyrules.Schedule(b, &p, t0.Add(time.Hour))
					if noBurst(a) != noBurst(b) || sa != sb {
						t.Errorf("Schedule after Request(%+v, %q) depends on now: %+v vs %+v", s, rev, sa, sb)
					}
					// Given the zero time, no step sets a run's times
					// (dedup's view relies on it).
					z := noTimes(s)
					z, _ = keyrules.Request(z, &p, time.Time{}, rev, force)
					z, _ = keyrules.Schedule(z, &p, time.Time{})
					if z.Running.Active() {
						z, _ = keyrules.Finish(z, &p, t0.Add(time.Hour), keyrules.Attempt{Failed: force})
					} else if z.Pending.Active() {
						z, _ = keyrules.Start(z)
						z = keyrules.Begin(z, t0.Add(time.Hour))
					}
					if noTimes(z) != z {
						t.Errorf("untimed steps from %+v set a run's times: %+v", s, z)
					}
				}
			}
		}
	}
}

func TestBeginEndsLoading(t *testing.T) {
	s, _ := keyrules.Start(keyrules.State{Pending: keyrules.Run{Rev: "v1"}})
	s = keyrules.Begin(s, t0)
	if s.Running.Loading || s.Running.Attempts != 1 {
		t.Fatalf("Begin without Loaded = %+v; want an attempt, not loading", s.Running)
	}
	s, f := keyrules.Interrupt(s)
	if !f.Retry || s.Pending.Attempts != 0 {
		t.Fatalf("Interrupt after Begin = %+v, %+v; want the lost attempt not counted", s, f)
	}
}

// noTimes is s with its runs' times zero.
func noTimes(s keyrules.State) keyrules.State {
	for _, r := range []*keyrules.Run{&s.Running, &s.Pending} {
		r.First, r.Last, r.RetryAt = time.Time{}, time.Time{}, time.Time{}
	}
	return s
}

func TestInterruptWhileLoading(t *testing.T) {
	s := keyrules.State{Running: keyrules.Run{Rev: "v1", Attempts: 1, Loading: true}}
	s, f := keyrules.Interrupt(s)
	if !f.Retry || s.Pending.Attempts != 1 || s.Pending.Loading {
		t.Fatalf("Interrupt while loading = %+v, %+v; want v1 pending again with its 1 attempt", s, f)
	}
}

// TestRequestChanges checks what Request promises callers that copy only
// what changed: it changes the running run only when it joins or cancels
// it, and never Live, Loaded or LastStarted.
func TestRequestChanges(t *testing.T) {
	revs := []string{"", "v1", "v2"}
	var runs []keyrules.Run
	for _, rev := range revs {
		for _, b := range []int{0, 1, 2, 4, 8, 15} {
			runs = append(runs, keyrules.Run{Rev: rev, Force: b&1 != 0, Canceled: b&2 != 0, Loading: b&4 != 0, Attempts: b >> 3, First: t0, Last: t0})
		}
	}
	pols := []keyrules.Policy{{}, {CancelInProgress: true}, {Quiet: time.Second, MaxAttempts: 3}}
	for _, p := range pols {
		for _, live := range revs {
			for _, loaded := range []bool{false, true} {
				for _, running := range runs {
					for _, pending := range runs {
						s := keyrules.State{Live: live, Loaded: loaded, Running: running, Pending: pending, LastStarted: t0}
						for _, rev := range revs[1:] {
							for _, force := range []bool{false, true} {
								got, q := keyrules.Request(s, &p, t0.Add(time.Second), rev, force)
								if got.Live != s.Live || got.Loaded != s.Loaded || got.LastStarted != s.LastStarted {
									t.Fatalf("Request(%+v, %q) changed the key: %+v", s, rev, got)
								}
								if got.Running != s.Running && q.Action != keyrules.ActionJoinedRunning && !q.Cancel {
									t.Fatalf("Request(%+v, %q) = %+v changed the running run: %+v", s, rev, q, got.Running)
								}
							}
						}
					}
				}
			}
		}
	}
}

func TestLoaded(t *testing.T) {
	run := keyrules.Run{Rev: "v1"}
	for _, tc := range []struct {
		name         string
		s            keyrules.State
		rev          string
		ok, failed   bool
		want         keyrules.Finished
		loaded       bool
		live, runnin string
	}{
		{"stored live", keyrules.State{Running: run}, "v1", true, false, keyrules.Finished{Outcome: keyrules.Unchanged}, true, "v1", ""},
		{"stored other", keyrules.State{Running: run}, "v0", true, false, keyrules.Finished{Begin: true}, true, "v0", "v1"},
		{"store empty", keyrules.State{Running: run}, "", false, false, keyrules.Finished{Begin: true}, true, "", "v1"},
		{"store failed", keyrules.State{Running: run}, "", false, true, keyrules.Finished{Begin: true}, false, "", "v1"},
		{"forced", keyrules.State{Running: keyrules.Run{Rev: "v1", Force: true}}, "v1", true, false, keyrules.Finished{Begin: true}, true, "v1", "v1"},
		{"canceled meanwhile", keyrules.State{Running: keyrules.Run{Rev: "v1", Canceled: true}, Pending: keyrules.Run{Rev: "v2"}}, "v0", true, false, keyrules.Finished{IntoPending: true}, true, "v0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, f := keyrules.Loaded(tc.s, tc.rev, tc.ok, tc.failed)
			if f != tc.want || s.Loaded != tc.loaded || s.Live != tc.live || s.Running.Rev != tc.runnin {
				t.Errorf("Loaded = %+v, loaded %v live %q running %q; want %+v, %v %q %q", f, s.Loaded, s.Live, s.Running.Rev, tc.want, tc.loaded, tc.live, tc.runnin)
			}
		})
	}
}

func TestScheduleAndAbort(t *testing.T) {
	pol := &keyrules.Policy{Quiet: time.Second, MaxDelay: 3 * time.Second, MinInterval: 10 * time.Second}
	s := keyrules.State{Loaded: true, Live: "v0", LastStarted: t0, Pending: keyrules.Run{Rev: "v1", First: t0, Last: t0.Add(2500 * time.Millisecond)}}
	if _, sch := keyrules.Schedule(s, pol, t0); sch.Kind != keyrules.Wait || !sch.At.Equal(t0.Add(10*time.Second)) {
		t.Errorf("Schedule = %+v; want to wait for the min interval, until t0+10s", sch)
	}
	pol.MinInterval = 0
	if _, sch := keyrules.Schedule(s, pol, t0); sch.Kind != keyrules.Wait || !sch.At.Equal(t0.Add(3*time.Second)) {
		t.Errorf("Schedule = %+v; want to wait until the debounce bound t0+3s", sch)
	}
	if _, sch := keyrules.Schedule(s, pol, t0.Add(3*time.Second)); sch.Kind != keyrules.Due {
		t.Errorf("Schedule at t0+3s = %+v; want due", sch)
	}
	back := s
	back.Pending.Rev = "v0"
	if s2, sch := keyrules.Schedule(back, pol, t0); sch.Kind != keyrules.BackToLive || sch.Rev != "v0" || s2.Pending.Active() {
		t.Errorf("Schedule of the live revision = %+v; want back to live", sch)
	}
	s2, dropped, ok := keyrules.Abort(s)
	if !ok || dropped.Rev != "v1" || s2.Pending.Active() {
		t.Errorf("Abort = %+v, %v; want v1 dropped", dropped, ok)
	}
	if _, _, ok := keyrules.Abort(s2); ok {
		t.Error("Abort with nothing pending reported a drop")
	}
}
