package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// step is one step of a scenario on one key: a trigger of rev (with Force
// if force), or, when rev is empty, the end of the oldest running deploy,
// which must be of revision call, with error err.
type step struct {
	rev   dedup.Revision
	force bool
	call  dedup.Revision
	err   error
}

func trig(rev dedup.Revision) step   { return step{rev: rev} }
func forced(rev dedup.Revision) step { return step{rev: rev, force: true} }
func ok(call dedup.Revision) step    { return step{call: call} }
func fail(call dedup.Revision) step  { return step{call: call, err: errBoom} }

type want struct {
	requested, rev dedup.Revision
	outcome        dedup.Outcome
}

// TestRules plays scenarios of triggers and deploy ends on one key and
// checks which revisions were deployed and how every ticket settled.
func TestRules(t *testing.T) {
	tests := []struct {
		name    string
		steps   []step
		deploys []dedup.Revision
		results []want // one per trigger, in order
	}{
		{
			name:    "join running",
			steps:   []step{trig("v1"), trig("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "forced trigger joins running",
			steps:   []step{trig("v1"), forced("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "join pending",
			steps:   []step{trig("v1"), trig("v2"), trig("v2"), forced("v2"), ok("v1"), ok("v2")},
			deploys: []dedup.Revision{"v1", "v2"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v2", dedup.Deployed}, {"v2", "v2", dedup.Deployed}, {"v2", "v2", dedup.Deployed}},
		},
		{
			name:    "unchanged when live and idle",
			steps:   []step{trig("v1"), ok("v1"), trig("v1")},
			deploys: []dedup.Revision{"v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v1", "v1", dedup.Unchanged}},
		},
		{
			name:    "force redeploys the live revision",
			steps:   []step{trig("v1"), ok("v1"), forced("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "supersede pending",
			steps:   []step{trig("v1"), trig("v2"), trig("v3"), trig("v4"), ok("v1"), ok("v4")},
			deploys: []dedup.Revision{"v1", "v4"},
			results: []want{
				{"v1", "v1", dedup.Deployed},
				{"v2", "v4", dedup.Superseded},
				{"v3", "v4", dedup.Superseded},
				{"v4", "v4", dedup.Deployed},
			},
		},
		{
			name:    "superseded tickets fail with the newer run",
			steps:   []step{trig("v1"), trig("v2"), trig("v3"), ok("v1"), fail("v3")},
			deploys: []dedup.Revision{"v1", "v3"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v3", dedup.Failed}, {"v3", "v3", dedup.Failed}},
		},
		{
			name:    "rollback to an older revision deploys it",
			steps:   []step{trig("v1"), ok("v1"), trig("v2"), ok("v2"), trig("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v2", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v2", dedup.Deployed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "running revision triggered while another is pending",
			steps:   []step{trig("v1"), trig("v2"), trig("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v1", dedup.Superseded}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "forced running revision while another is pending runs again",
			steps:   []step{trig("v1"), trig("v2"), forced("v1"), ok("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v1", dedup.Superseded}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "running revision pending again after its run failed",
			steps:   []step{trig("v1"), trig("v2"), trig("v1"), fail("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v1", dedup.Superseded}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "failed run settles with the newer pending run",
			steps:   []step{trig("v1"), trig("v2"), fail("v1"), ok("v2")},
			deploys: []dedup.Revision{"v1", "v2"},
			results: []want{{"v1", "v2", dedup.Superseded}, {"v2", "v2", dedup.Deployed}},
		},
		{
			name:    "failed run and failed newer run",
			steps:   []step{trig("v1"), trig("v2"), fail("v1"), fail("v2")},
			deploys: []dedup.Revision{"v1", "v2"},
			results: []want{{"v1", "v2", dedup.Failed}, {"v2", "v2", dedup.Failed}},
		},
		{
			name:    "failed run is not retried by default",
			steps:   []step{trig("v1"), fail("v1"), trig("v1"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v1"},
			results: []want{{"v1", "v1", dedup.Failed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "newest revision after a rollback pending",
			steps:   []step{trig("v1"), ok("v1"), trig("v2"), trig("v3"), trig("v1"), ok("v2"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v2", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v2", dedup.Deployed}, {"v3", "v1", dedup.Superseded}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "live revision triggered while another runs",
			steps:   []step{trig("v1"), ok("v1"), trig("v2"), trig("v1"), ok("v2"), ok("v1")},
			deploys: []dedup.Revision{"v1", "v2", "v1"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v2", dedup.Deployed}, {"v1", "v1", dedup.Deployed}},
		},
		{
			name:    "back to the live revision while the newer run fails",
			steps:   []step{trig("v1"), ok("v1"), trig("v2"), trig("v1"), fail("v2")},
			deploys: []dedup.Revision{"v1", "v2"},
			results: []want{{"v1", "v1", dedup.Deployed}, {"v2", "v1", dedup.Superseded}, {"v1", "v1", dedup.Unchanged}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			d := new(deduptest.Deployer)
			// ends receives an event when the Manager has fully handled
			// the end of an attempt.
			ends := make(chan dedup.Event, 64)
			m := newManager(t, d, dedup.WithObserver(func(e dedup.Event) {
				switch e.Kind {
				case dedup.EventSucceeded, dedup.EventFailed, dedup.EventRetrying:
					select {
					case ends <- e:
					default:
					}
				}
			}))
			var tickets []*dedup.Ticket
			for _, s := range tt.steps {
				if s.rev != "" {
					var opts []dedup.TriggerOption
					if s.force {
						opts = append(opts, dedup.Force())
					}
					tickets = append(tickets, trigger(t, m, "web", s.rev, opts...))
					continue
				}
				c := nextCall(ctx, t, d)
				requireCall(t, c, "web", s.call)
				c.Finish(s.err)
				select {
				case e := <-ends:
					require.Equal(t, s.call, e.Revision, "revision of the attempt that ended")
				case <-ctx.Done():
					t.Fatalf("end of the deploy of %q not handled: %v", s.call, ctx.Err())
				}
			}
			require.Len(t, tickets, len(tt.results), "bad test: one result per trigger")
			for i, tk := range tickets {
				res := await(ctx, t, tk)
				w := tt.results[i]
				require.Equalf(t, want{res.Requested, res.Revision, res.Outcome}, w, "ticket %d: Result %+v", i, res)
				if res.Outcome == dedup.Failed {
					require.ErrorIsf(t, res.Err, errBoom, "ticket %d", i)
				}
			}
			requireIdle(t, m, "web")
			require.Equal(t, tt.deploys, d.Revisions("web"), "deployed revisions")
		})
	}
}

func TestUnchangedSettlesAtOnce(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	m := newManager(t, instant(), dedup.WithClock(clock))
	_, err := m.Deploy(ctx, "web", "v1")
	require.NoError(t, err)
	clock.Advance(time.Minute)

	tk := trigger(t, m, "web", "v1")
	requireSettled(t, tk, "Trigger of the live revision")
	res := tk.Result()
	checkResult(t, res)
	require.Equal(t, dedup.Result{
		Key: "web", Requested: "v1", Revision: "v1", Outcome: dedup.Unchanged,
		Started: clock.Now(), Finished: clock.Now(),
	}, res)
	got, err := tk.Wait(ctx)
	require.NoError(t, err, "Wait")
	require.Equal(t, res, got, "Wait")
	require.Equal(t, 1, status(t, m, "web").Runs, "Runs")
}

// A storm of distinct revisions during one deploy collapses into one
// follow-up run of the newest.
func TestStormCollapsesIntoOneFollowUp(t *testing.T) {
	const storm = 1000
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	first := trigger(t, m, "web", "v0")
	c := nextCall(ctx, t, d)
	tickets := make([]*dedup.Ticket, storm)
	for i := range tickets {
		tickets[i] = trigger(t, m, "web", dedup.Revision(fmt.Sprintf("r%d", i)))
	}
	last := dedup.Revision(fmt.Sprintf("r%d", storm-1))
	s := status(t, m, "web")
	require.Equal(t, dedup.Revision("v0"), s.Running, "Running")
	require.Equal(t, last, s.Pending, "Pending")
	require.Equal(t, storm-1, s.Superseded, "Superseded")

	c.Finish(nil)
	c2 := nextCall(ctx, t, d)
	requireCall(t, c2, "web", last)
	c2.Finish(nil)
	requireResult(t, await(ctx, t, first), "v0", "v0", dedup.Deployed)
	for i, tk := range tickets {
		res := await(ctx, t, tk)
		o := dedup.Superseded
		if i == storm-1 {
			o = dedup.Deployed
		}
		requireResult(t, res, dedup.Revision(fmt.Sprintf("r%d", i)), last, o)
	}
	requireIdle(t, m, "web")
	require.Equal(t, []dedup.Revision{"v0", last}, d.Revisions("web"), "deployed revisions")
}

// overlap is a Deployer that counts how many deploys run at once, per key
// and in all, and which revisions it deployed.
type overlap struct {
	mu          sync.Mutex
	running     map[string]int
	maxPerKey   map[string]int
	all, maxAll int
	deployed    map[string]map[dedup.Revision]bool
}

func (o *overlap) Deploy(_ context.Context, key string, rev dedup.Revision) error {
	o.mu.Lock()
	o.running[key]++
	o.maxPerKey[key] = max(o.maxPerKey[key], o.running[key])
	o.all++
	o.maxAll = max(o.maxAll, o.all)
	o.mu.Unlock()
	runtime.Gosched()
	o.mu.Lock()
	o.running[key]--
	o.all--
	if o.deployed[key] == nil {
		o.deployed[key] = make(map[dedup.Revision]bool)
	}
	o.deployed[key][rev] = true
	o.mu.Unlock()
	return nil
}

// Many goroutines triggering many revisions: one deploy of a key at a time,
// every ticket settled by a run that deployed its Revision, and the last
// revision live.
func TestNoOverlapPerKeyUnderLoad(t *testing.T) {
	const (
		goroutines = 4
		perG       = 200
	)
	ctx := testContext(t)
	o := &overlap{running: map[string]int{}, maxPerKey: map[string]int{}, deployed: map[string]map[dedup.Revision]bool{}}
	m := newManager(t, o)
	keys := []string{"a", "b", "c"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		tickets []*dedup.Ticket
		errs    []error
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				key := keys[(g+i)%len(keys)]
				tk, err := m.Trigger(key, dedup.Revision(fmt.Sprintf("g%d-%d", g, i%7)))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					tickets = append(tickets, tk)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs, "Trigger errors")
	var finals []*dedup.Ticket
	for _, key := range keys {
		finals = append(finals, trigger(t, m, key, "final"))
	}
	for _, tk := range finals {
		requireResult(t, await(ctx, t, tk), "final", "final", dedup.Deployed)
	}
	for _, tk := range tickets {
		res := await(ctx, t, tk)
		require.Containsf(t, []dedup.Outcome{dedup.Deployed, dedup.Superseded, dedup.Unchanged}, res.Outcome, "Result %+v", res)
		o.mu.Lock()
		deployed := o.deployed[res.Key][res.Revision]
		o.mu.Unlock()
		require.Truef(t, deployed, "Result %+v: its Revision was never deployed", res)
	}
	for _, key := range keys {
		o.mu.Lock()
		most := o.maxPerKey[key]
		o.mu.Unlock()
		require.Equalf(t, 1, most, "most deploys of %q at once", key)
		s := status(t, m, key)
		require.Equalf(t, dedup.Revision("final"), s.Live, "Status(%q).Live", key)
		requireIdle(t, m, key)
	}
}

func TestKeysDeployInParallel(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	ta := trigger(t, m, "a", "v1")
	tb := trigger(t, m, "b", "v1")
	trigger(t, m, "a", "v2")
	c1, c2 := nextCall(ctx, t, d), nextCall(ctx, t, d)
	require.ElementsMatch(t, []string{"a", "b"}, []string{c1.Key, c2.Key}, "keys deploying at once")
	require.Equal(t, 2, d.Running(), "deploys running at once")
	c1.Finish(nil)
	c2.Finish(nil)
	requireResult(t, await(ctx, t, ta), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, tb), "v1", "v1", dedup.Deployed)
	c3 := nextCall(ctx, t, d)
	requireCall(t, c3, "a", "v2")
	c3.Finish(nil)
	require.Equal(t, 2, d.MaxRunning(), "MaxRunning")
}

func TestPanicInDeploy(t *testing.T) {
	errValue := errors.New("panic value")
	tests := []struct {
		name  string
		value any
	}{
		{"string", "kaboom"},
		{"error", errValue},
		{"int", 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			m := newManager(t, dedup.DeployFunc(func(_ context.Context, _ string, rev dedup.Revision) error {
				if rev == "bad" {
					panic(tt.value)
				}
				return nil
			}))
			res, err := m.Deploy(ctx, "web", "bad")
			requireResult(t, res, "bad", "bad", dedup.Failed)
			require.Equal(t, res.Err, err, "Deploy error")
			var pe *dedup.PanicError
			require.Truef(t, errors.As(err, &pe), "Deploy(bad) = %v; want a *PanicError", err)
			require.Equal(t, tt.value, pe.Value, "PanicError.Value")
			require.Truef(t, bytes.Contains(pe.Stack, []byte("TestPanicInDeploy")), "PanicError.Stack does not show the panicking function:\n%s", pe.Stack)
			require.Contains(t, err.Error(), fmt.Sprint(tt.value), "error message")
			if e, ok := tt.value.(error); ok {
				require.ErrorIs(t, err, e, "a panic with an error unwraps to it")
			}
			require.Equal(t, err, status(t, m, "web").LastErr, "Status.LastErr")

			// The key is not stuck.
			res, err = m.Deploy(ctx, "web", "good")
			require.NoError(t, err, "Deploy after a panic")
			requireResult(t, res, "good", "good", dedup.Deployed)
			require.NoError(t, status(t, m, "web").LastErr, "Status.LastErr after a success")
		})
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	tk := trigger(t, m, "web", "v1")
	c := nextCall(ctx, t, d)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithTimeout(ctx, -1)
	defer cancel2()
	for _, w := range []struct {
		name string
		ctx  context.Context
		err  error
	}{{"canceled", canceled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		res, err := tk.Wait(w.ctx)
		require.ErrorIsf(t, err, w.err, "Wait(%s ctx)", w.name)
		require.Equalf(t, dedup.Result{}, res, "Wait(%s ctx) Result", w.name)
	}
	require.NoError(t, c.Context().Err(), "an ended Wait canceled the deploy")
	requireNotSettled(t, tk, "after an ended Wait")

	c.Finish(nil)
	for i := range 2 {
		res, err := tk.Wait(ctx)
		require.NoErrorf(t, err, "Wait #%d", i+1)
		requireResult(t, res, "v1", "v1", dedup.Deployed)
	}
}

func TestDeployIsTriggerAndWait(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)

	type reply struct {
		res dedup.Result
		err error
	}
	replies := make(chan reply, 1)
	go func() {
		res, err := m.Deploy(ctx, "web", "v1")
		replies <- reply{res, err}
	}()
	c := nextCall(ctx, t, d)
	requireCall(t, c, "web", "v1")
	select {
	case r := <-replies:
		t.Fatalf("Deploy returned %+v, %v before the deploy ended", r.res, r.err)
	default:
	}
	c.Finish(errBoom)
	var r reply
	select {
	case r = <-replies:
	case <-ctx.Done():
		t.Fatal("Deploy did not return")
	}
	require.ErrorIs(t, r.err, errBoom, "Deploy error")
	requireResult(t, r.res, "v1", "v1", dedup.Failed)
	require.Equal(t, 1, r.res.Attempts, "Attempts")

	// A Deploy whose context ends first returns its error; the deploy
	// goes on.
	short, cancel := context.WithCancel(ctx)
	go func() {
		res, err := m.Deploy(short, "web", "v2")
		replies <- reply{res, err}
	}()
	c = nextCall(ctx, t, d)
	cancel()
	select {
	case r = <-replies:
	case <-ctx.Done():
		t.Fatal("Deploy did not return when its context ended")
	}
	require.ErrorIs(t, r.err, context.Canceled, "Deploy with an ended context")
	require.NoError(t, c.Context().Err(), "the end of Deploy's context canceled the deploy")
	tk := trigger(t, m, "web", "v2") // joins the deploy that goes on
	c.Finish(nil)
	requireResult(t, await(ctx, t, tk), "v2", "v2", dedup.Deployed)
}

func TestNotifyIsTriggerWithoutTicket(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	require.NoError(t, m.Notify("web", "v1"), "Notify(v1)")
	c1 := nextCall(ctx, t, d)
	requireCall(t, c1, "web", "v1")
	require.NoError(t, m.Notify("web", "v1"), "Notify(v1) again")
	require.NoError(t, m.Notify("web", "v2"), "Notify(v2)")
	require.NoError(t, m.Notify("web", "v3"), "Notify(v3)")
	tk := trigger(t, m, "web", "v3") // joins the notified pending revision
	s := status(t, m, "web")
	require.Equal(t, dedup.Revision("v1"), s.Running)
	require.Equal(t, dedup.Revision("v3"), s.Pending)
	c1.Finish(nil)
	c2 := nextCall(ctx, t, d)
	requireCall(t, c2, "web", "v3")
	c2.Finish(nil)
	requireResult(t, await(ctx, t, tk), "v3", "v3", dedup.Deployed)
	require.NoError(t, m.Notify("web", "v3"), "Notify of the live revision")
	requireIdle(t, m, "web")
	require.Equal(t, []dedup.Revision{"v1", "v3"}, d.Revisions("web"))
}

// TestTriggerAction checks what each Ticket says its trigger did.
func TestTriggerAction(t *testing.T) {
	type act struct {
		action   dedup.Action
		replaced dedup.Revision
	}
	// A step triggers rev (forced if force), or ends the running deploy
	// of done and waits for its ticket, or, when neither is set, waits for
	// the ticket of wait, or else advances the clock by debounce.
	type step struct {
		rev, done, wait dedup.Revision
		force           bool
	}
	trig := func(rev dedup.Revision) step { return step{rev: rev} }
	ok := func(rev dedup.Revision) step { return step{done: rev} }
	const debounce = time.Minute
	tests := []struct {
		name    string
		opts    []dedup.Option
		steps   []step
		actions []act // one per trigger, in order
	}{
		{
			name:  "start, join, queue, supersede, unchanged",
			steps: []step{trig("v1"), trig("v1"), trig("v2"), trig("v3"), trig("v3"), ok("v1"), ok("v3"), trig("v3")},
			actions: []act{
				{dedup.ActionStarted, ""}, {dedup.ActionJoinedRunning, ""}, {dedup.ActionQueued, ""},
				{dedup.ActionQueued, "v2"}, {dedup.ActionJoinedPending, ""}, {dedup.ActionUnchanged, ""},
			},
		},
		{
			name:    "force starts a live revision",
			steps:   []step{trig("v1"), ok("v1"), {rev: "v1", force: true}, ok("v1")},
			actions: []act{{dedup.ActionStarted, ""}, {dedup.ActionStarted, ""}},
		},
		{
			name:  "debounced, then taken back to the live revision",
			opts:  []dedup.Option{dedup.WithDebounce(debounce, 0)},
			steps: []step{trig("v1"), {}, ok("v1"), trig("v2"), trig("v1")},
			actions: []act{
				{dedup.ActionQueued, ""}, {dedup.ActionQueued, ""}, {dedup.ActionUnchanged, "v2"},
			},
		},
		{
			name:    "with a Store the first run starts, then reads it",
			opts:    []dedup.Option{dedup.WithStore(storeWith("web", "v1"))},
			steps:   []step{trig("v1"), {wait: "v1"}, trig("v2"), ok("v2")},
			actions: []act{{dedup.ActionStarted, ""}, {dedup.ActionStarted, ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			d := new(deduptest.Deployer)
			clock := new(deduptest.Clock)
			m := newManager(t, d, append(tt.opts, dedup.WithClock(clock))...)
			var got []act
			last := map[dedup.Revision]*dedup.Ticket{}
			for _, s := range tt.steps {
				switch {
				case s.rev != "":
					var opts []dedup.TriggerOption
					if s.force {
						opts = append(opts, dedup.Force())
					}
					tk := trigger(t, m, "web", s.rev, opts...)
					last[s.rev] = tk
					got = append(got, act{tk.Action(), tk.Replaced()})
				case s.done != "":
					c := nextCall(ctx, t, d)
					requireCall(t, c, "web", s.done)
					c.Finish(nil)
					await(ctx, t, last[s.done])
				case s.wait != "":
					await(ctx, t, last[s.wait])
				default:
					clock.Advance(debounce)
				}
			}
			require.Equal(t, tt.actions, got)
		})
	}
}

// storeWith returns a Store in which key's live revision is rev.
func storeWith(key string, rev dedup.Revision) dedup.Store {
	s := new(dedup.MemoryStore)
	if err := s.Save(context.Background(), key, rev); err != nil {
		panic(err)
	}
	return s
}
