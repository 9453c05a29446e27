package dedup_test

// What user code can do to a Manager: whatever a Deployer, a Store, an
// observer or a logger does (return, panic, runtime.Goexit), every started
// run ends, every ticket settles, slots are released, and Close returns.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// panicHandler is a slog.Handler that panics on every record.
type panicHandler struct{ slog.Handler }

func (panicHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (panicHandler) Handle(context.Context, slog.Record) error { panic("handler exploded") }

// tryTrigger calls m.Trigger and turns a panic out of it into an error, so
// that a test of a Manager that lets a panic escape fails instead of
// crashing.
func tryTrigger(m *dedup.Manager, key string, rev dedup.Revision) (tk *dedup.Ticket, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("Trigger(%q, %q) panicked: %v", key, rev, v)
		}
	}()
	return m.Trigger(key, rev)
}

// An observer or a logger that panics on every event: the panic is
// recovered and logged, every run still starts and settles, and Close
// returns.
func TestObserverPanicKeepsTheKeyGoing(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(log *syncBuffer) []dedup.Option
	}{
		{"observer", func(log *syncBuffer) []dedup.Option {
			return []dedup.Option{
				dedup.WithObserver(func(dedup.Event) { panic("observer exploded") }),
				dedup.WithLogger(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelError}))),
			}
		}},
		{"logger", func(*syncBuffer) []dedup.Option {
			return []dedup.Option{dedup.WithLogger(slog.New(panicHandler{}))}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			log := new(syncBuffer)
			m := newManager(t, instant(), tc.opts(log)...)
			for _, rev := range []dedup.Revision{"v1", "v2"} {
				tk, err := tryTrigger(m, "web", rev)
				require.NoError(t, err)
				requireResult(t, await(ctx, t, tk), rev, rev, dedup.Deployed)
			}
			require.Equal(t, dedup.Revision("v2"), status(t, m, "web").Live, "Status(web).Live")
			require.NoError(t, m.Close(ctx), "Close")
			if tc.name == "observer" && !strings.Contains(log.String(), "observer panicked") {
				t.Errorf("log = %q; want the observer's panic reported", log.String())
			}
		})
	}
}

// goexitStore calls runtime.Goexit in Load or Save.
type goexitStore struct {
	dedup.MemoryStore
	inLoad bool
}

func (s *goexitStore) Load(ctx context.Context, key string) (dedup.Revision, bool, error) {
	if s.inLoad {
		runtime.Goexit()
	}
	return s.MemoryStore.Load(ctx, key)
}

func (s *goexitStore) Save(ctx context.Context, key string, rev dedup.Revision) error {
	if !s.inLoad {
		runtime.Goexit()
	}
	return s.MemoryStore.Save(ctx, key, rev)
}

// A Deployer that calls runtime.Goexit (t.FailNow does) fails its attempt
// with ErrGoexit; the key, the concurrency slot and Close go on.
func TestGoexitInDeployIsAFailedAttempt(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, dedup.DeployFunc(func(_ context.Context, _ string, rev dedup.Revision) error {
		if rev == "bad" {
			runtime.Goexit()
		}
		return nil
	}), dedup.WithMaxConcurrent(1))
	res := await(ctx, t, trigger(t, m, "web", "bad"))
	requireResult(t, res, "bad", "bad", dedup.Failed)
	if !errors.Is(res.Err, dedup.ErrGoexit) {
		t.Fatalf("Result.Err = %v; want ErrGoexit", res.Err)
	}
	requireResult(t, await(ctx, t, trigger(t, m, "web", "good")), "good", "good", dedup.Deployed)
	requireResult(t, await(ctx, t, trigger(t, m, "api", "good")), "good", "good", dedup.Deployed)
	require.NoError(t, m.Close(ctx), "Close")
}

// A Store that calls runtime.Goexit is a failing Store: the deploy goes
// on, and Status.StoreErr says what happened.
func TestGoexitInStore(t *testing.T) {
	for _, inLoad := range []bool{true, false} {
		t.Run(fmt.Sprintf("inLoad=%v", inLoad), func(t *testing.T) {
			ctx := testContext(t)
			m := newManager(t, instant(), dedup.WithStore(&goexitStore{inLoad: inLoad}), dedup.WithMaxConcurrent(1))
			requireResult(t, await(ctx, t, trigger(t, m, "web", "v1")), "v1", "v1", dedup.Deployed)
			if err := status(t, m, "web").StoreErr; !errors.Is(err, dedup.ErrGoexit) {
				t.Errorf("Status.StoreErr = %v; want ErrGoexit", err)
			}
			requireResult(t, await(ctx, t, trigger(t, m, "api", "v1")), "v1", "v1", dedup.Deployed)
			require.NoError(t, m.Close(ctx), "Close")
		})
	}
}

// An observer that calls runtime.Goexit, on the trigger's goroutine or on
// a deploy goroutine, loses events but no run.
func TestGoexitInObserver(t *testing.T) {
	t.Run("trigger", func(t *testing.T) {
		ctx := testContext(t)
		var once atomic.Bool
		m := newManager(t, instant(), dedup.WithObserver(func(e dedup.Event) {
			if e.Kind == dedup.EventStarted && once.CompareAndSwap(false, true) {
				runtime.Goexit()
			}
		}))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = m.Trigger("web", "v1") // its goroutine ends in the observer
		}()
		<-done
		res := await(ctx, t, trigger(t, m, "web", "v1"))
		if res.Revision != "v1" || (res.Outcome != dedup.Deployed && res.Outcome != dedup.Unchanged) {
			t.Fatalf("Trigger(web, v1) again = %+v; want v1 deployed or unchanged", res)
		}
		require.Equal(t, dedup.Revision("v1"), status(t, m, "web").Live, "Status(web).Live")
		require.NoError(t, m.Close(ctx), "Close")
	})
	t.Run("deploy", func(t *testing.T) {
		ctx := testContext(t)
		d := new(deduptest.Deployer)
		var once atomic.Bool
		m := newManager(t, d, dedup.WithObserver(func(e dedup.Event) {
			if e.Kind == dedup.EventSucceeded && once.CompareAndSwap(false, true) {
				runtime.Goexit()
			}
		}))
		trigger(t, m, "web", "v1")
		c := nextCall(ctx, t, d)
		t2 := trigger(t, m, "web", "v2") // the follow-up run
		c.Finish(nil)                    // its Succeeded event ends the goroutine
		nextCall(ctx, t, d).Finish(nil)
		requireResult(t, await(ctx, t, t2), "v2", "v2", dedup.Deployed)
		require.NoError(t, m.Close(ctx), "Close")
	})
}

// runsHeld counts the runs a key holds: its running and pending runs and
// every run whose tickets settle with them.
//
// Deploys that keep failing (or keep being canceled) while newer revisions
// keep arriving hold no more runs than tickets wait on them.
func TestFailingStormHoldsBoundedMemory(t *testing.T) {
	for _, tc := range []struct {
		cancel bool
		how    string // how the newer revisions arrive
	}{{false, "notify"}, {true, "notify"}, {false, "submit"}, {false, "trigger-and-drop"}, {true, "trigger-and-drop"}} {
		cancel := tc.cancel
		t.Run(fmt.Sprintf("cancelInProgress=%v/%s", cancel, tc.how), func(t *testing.T) {
			ctx := testContext(t)
			const runs = 2000
			var m *dedup.Manager
			var n int
			var maxHeld int
			d := dedup.DeployFunc(func(dctx context.Context, key string, rev dedup.Revision) error {
				n++
				if n%100 == 0 {
					runtime.GC() // tickets dropped by now are gone
					maxHeld = max(maxHeld, dedup.RunsHeld(m, key))
				}
				if n == runs {
					return nil
				}
				next := dedup.Revision(fmt.Sprint("v", n+1))
				var err error
				switch tc.how {
				case "notify":
					err = m.Notify(key, next)
				case "submit":
					_, _, err = m.Submit(key, next)
				default:
					_, err = m.Trigger(key, next) // and the ticket is dropped
				}
				if err != nil {
					return err
				}
				if cancel {
					<-dctx.Done()
					return dctx.Err()
				}
				return errBoom
			})
			opts := []dedup.Option{}
			if cancel {
				opts = append(opts, dedup.WithCancelInProgress())
			}
			m = newManager(t, d, opts...)
			res := await(ctx, t, trigger(t, m, "web", "v1"))
			requireResult(t, res, "v1", dedup.Revision(fmt.Sprint("v", runs)), dedup.Superseded)
			if maxHeld > 2 {
				t.Errorf("a key held up to %d runs over %d failed runs with one ticket held; want at most 2", maxHeld, runs)
			}
		})
	}
}

// gatedStore blocks Load until released, and reports that it was entered.
type gatedStore struct {
	dedup.MemoryStore
	entered, release chan struct{}
	rev              dedup.Revision
	ok               bool
}

func (s *gatedStore) Load(ctx context.Context, key string) (dedup.Revision, bool, error) {
	close(s.entered)
	select {
	case <-s.release:
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
	return s.rev, s.ok, nil
}

// A forced trigger that joins a first run while the Store is being read
// still deploys, even when the Store says the revision is live.
func TestForceWhileTheStoreIsRead(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	store := &gatedStore{entered: make(chan struct{}), release: make(chan struct{}), rev: "v1", ok: true}
	m := newManager(t, d, dedup.WithStore(store))
	plain := trigger(t, m, "web", "v1")
	<-store.entered
	forced := trigger(t, m, "web", "v1", dedup.Force())
	close(store.release)
	c := nextCall(ctx, t, d)
	requireCall(t, c, "web", "v1")
	c.Finish(nil)
	requireResult(t, await(ctx, t, forced), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, plain), "v1", "v1", dedup.Deployed)
}

// A Store that answers ok=false means "not known", whatever revision it
// returns beside it.
func TestStoreNotOKIgnoresItsRevision(t *testing.T) {
	ctx := testContext(t)
	var deployed []dedup.Revision
	d := dedup.DeployFunc(func(_ context.Context, _ string, rev dedup.Revision) error {
		deployed = append(deployed, rev)
		return nil
	})
	store := &gatedStore{entered: make(chan struct{}), release: make(chan struct{}), rev: "v1", ok: false}
	close(store.release)
	m := newManager(t, d, dedup.WithStore(store))
	requireResult(t, await(ctx, t, trigger(t, m, "web", "v1")), "v1", "v1", dedup.Deployed)
	require.Equal(t, []dedup.Revision{"v1"}, deployed, "deploys")
}

// gatedClock is the bubble's clock, whose Now blocks while gated.
type gatedClock struct {
	dedup.SystemClock
	mu      sync.Mutex
	gate    chan struct{} // non-nil: Now waits for it to close
	blocked chan struct{} // closed by the first Now that waits
}

func (c *gatedClock) Now() time.Time {
	c.mu.Lock()
	gate, blocked := c.gate, c.blocked
	c.blocked = nil
	c.mu.Unlock()
	if gate != nil {
		if blocked != nil {
			close(blocked)
		}
		<-gate
	}
	return time.Now()
}

// A second Close, concurrent with the first, returns only after every
// pending ticket is settled.
func TestConcurrentCloseWaitsForAborts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := new(gatedClock)
		m, err := dedup.New(instant(), dedup.WithClock(clock), dedup.WithDebounce(time.Minute, 0))
		require.NoError(t, err)
		tk := trigger(t, m, "web", "v1") // pending: it waits for its quiet minute

		gate, blocked := make(chan struct{}), make(chan struct{})
		clock.mu.Lock()
		clock.gate, clock.blocked = gate, blocked
		clock.mu.Unlock()
		first := make(chan error, 1)
		go func() { first <- m.Close(context.Background()) }()
		<-blocked // the first Close is settling the pending ticket

		second := make(chan bool, 1)
		go func() {
			_ = m.Close(context.Background())
			select {
			case <-tk.Done():
				second <- true
			default:
				second <- false
			}
		}()
		synctest.Wait()
		select {
		case settled := <-second:
			if !settled {
				t.Fatal("the second Close returned before the pending ticket was settled")
			}
		default: // still waiting for the first Close: right
		}
		close(gate)
		require.NoError(t, <-first, "first Close")
		synctest.Wait()
		requireSettled(t, tk, "pending ticket after Close")
		require.Equal(t, dedup.Aborted, tk.Result().Outcome, "Result.Outcome")
	})
}

// A typed nil Deployer is refused by New, not found by the first deploy.
func TestNewRefusesATypedNilDeployer(t *testing.T) {
	var nilFunc dedup.DeployFunc
	for _, d := range []dedup.Deployer{(*deduptest.Deployer)(nil), nilFunc, (*nilDeployer)(nil)} {
		if _, err := dedup.New(d); !errors.Is(err, dedup.ErrInvalid) {
			t.Errorf("New(%T(nil)) = %v; want ErrInvalid", d, err)
		}
	}
	if _, err := dedup.New(instant(), dedup.WithStore((*dedup.MemoryStore)(nil))); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("New(WithStore((*MemoryStore)(nil))) = %v; want ErrInvalid", err)
	}
	if _, err := dedup.New(instant(), dedup.WithClock((*deduptest.Clock)(nil))); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("New(WithClock((*deduptest.Clock)(nil))) = %v; want ErrInvalid", err)
	}
}

type nilDeployer struct{}

func (*nilDeployer) Deploy(context.Context, string, dedup.Revision) error { return nil }

// A key policy function that panics makes the trigger fail with the panic
// as its error; the Manager goes on.
func TestKeyPolicyPanicIsAnError(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, instant(), dedup.WithKeyPolicy(func(key string) dedup.Policy {
		if key == "bad" {
			panic("policy exploded")
		}
		return dedup.Policy{}
	}))
	_, err := m.Trigger("bad", "v1")
	var pe *dedup.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Trigger(bad) = %v; want a *PanicError", err)
	}
	requireResult(t, await(ctx, t, trigger(t, m, "good", "v1")), "v1", "v1", dedup.Deployed)
}

// ctxStore is a MemoryStore that, like a Store over a network or a
// database driver, refuses to work for a done context.
type ctxStore struct{ dedup.MemoryStore }

func (s *ctxStore) Save(ctx context.Context, key string, rev dedup.Revision) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.MemoryStore.Save(ctx, key, rev)
}

// A deploy that succeeds after Close's context ended (and canceled it) is
// saved all the same: else a restart deploys the live revision again.
func TestSaveAfterCloseCanceled(t *testing.T) {
	ctx := testContext(t)
	store := new(ctxStore)
	rec := newRecorder()
	entered, finish := make(chan struct{}), make(chan struct{})
	m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error {
		close(entered)
		<-finish // cannot be interrupted: say, a database migration
		return nil
	}), dedup.WithStore(store), dedup.WithObserver(rec.observe))
	require.NoError(t, err)
	tk := trigger(t, m, "web", "v1")
	<-entered
	expired, cancel := context.WithCancel(ctx)
	cancel()
	closed := make(chan error, 1)
	go func() { closed <- m.Close(expired) }()
	rec.waitFor(ctx, t, "canceled", ofKind(dedup.EventCanceled, "v1")) // Close canceled the deploy's context
	close(finish)
	require.ErrorIs(t, <-closed, context.Canceled)
	requireResult(t, await(ctx, t, tk), "v1", "v1", dedup.Deployed)
	rev, ok, _ := store.MemoryStore.Load(ctx, "web")
	if !ok || rev != "v1" {
		t.Fatalf("Store after the deploy succeeded = %q, %v; want v1 saved", rev, ok)
	}
}

// nilErr is an error type whose Error method fails on a nil receiver.
type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

// A Deployer's odd errors (a typed nil whose Error panics, an empty text)
// still marshal, and still read back as errors.
func TestJSONOfOddErrors(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, dedup.DeployFunc(func(_ context.Context, key string, _ dedup.Revision) error {
		if key == "typed-nil" {
			var e *nilErr
			return e
		}
		return errors.New("")
	}))
	for _, key := range []string{"typed-nil", "empty"} {
		res := await(ctx, t, trigger(t, m, key, "v1"))
		b, err := json.Marshal(res)
		require.NoErrorf(t, err, "json.Marshal(Result of %s)", key)
		var back dedup.Result
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, dedup.Failed, back.Outcome)
		require.Errorf(t, back.Err, "Result %s read back with Outcome failed and no error", b)
	}
	_, err := json.Marshal(m.Statuses())
	require.NoError(t, err, "json.Marshal(Statuses)")
	for _, v := range []any{dedup.Result{}, dedup.Status{}, dedup.Event{}} {
		_, err := json.Marshal(v)
		require.NoErrorf(t, err, "json.Marshal(%T{})", v)
	}
}

// Keys with policies of their own (a timeout per preview environment, say)
// that come and go do not leave their policies behind.
func TestPoliciesOfForgottenKeys(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, instant(), dedup.WithKeyPolicy(func(key string) dedup.Policy {
		n, _ := strconv.Atoi(key)
		return dedup.Policy{Timeout: time.Duration(n+1) * time.Minute}
	}))
	for i := range 1000 {
		key := strconv.Itoa(i)
		requireResult(t, await(ctx, t, trigger(t, m, key, "v1")), "v1", "v1", dedup.Deployed)
		require.Truef(t, m.Forget(key), "Forget(%q)", key)
	}
	if n := dedup.InternedPolicies(m); n > 256 {
		t.Errorf("%d policies kept after every key was forgotten; want at most 256", n)
	}
}

// Submit says what a trigger did, as a Ticket would, without one.
func TestSubmit(t *testing.T) {
	ctx := testContext(t)
	d := new(deduptest.Deployer)
	m := newManager(t, d)
	for _, step := range []struct {
		rev      dedup.Revision
		action   dedup.Action
		replaced dedup.Revision
	}{
		{"v1", dedup.ActionStarted, ""},
		{"v1", dedup.ActionJoinedRunning, ""},
		{"v2", dedup.ActionQueued, ""},
		{"v3", dedup.ActionQueued, "v2"},
		{"v3", dedup.ActionJoinedPending, ""},
	} {
		action, replaced, err := m.Submit("web", step.rev)
		if err != nil || action != step.action || replaced != step.replaced {
			t.Fatalf("Submit(%q) = %v, %q, %v; want %v, %q", step.rev, action, replaced, err, step.action, step.replaced)
		}
	}
	nextCall(ctx, t, d).Finish(nil)
	nextCall(ctx, t, d).Finish(nil)
	if res := await(ctx, t, trigger(t, m, "web", "v3")); res.Revision != "v3" { // joins v3's run or finds it live
		t.Fatalf("Trigger(v3) = %+v; want v3", res)
	}
	if action, _, err := m.Submit("web", "v3"); err != nil || action != dedup.ActionUnchanged {
		t.Fatalf("Submit(live v3) = %v, %v; want unchanged", action, err)
	}
	if _, _, err := m.Submit("web", ""); !errors.Is(err, dedup.ErrInvalid) {
		t.Fatalf("Submit(empty revision) = %v; want ErrInvalid", err)
	}
}

// A failed run waiting for its retry that a newer revision supersedes
// starts afresh: if it then settles without an attempt (here, Close), its
// Result says it started when it settled, not when the old revision ran.
func TestSupersededRetryStartsAfresh(t *testing.T) {
	ctx := testContext(t)
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	rec := newRecorder()
	m, err := dedup.New(d, dedup.WithClock(clock), dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Minute}),
		dedup.WithMinInterval(time.Hour), dedup.WithObserver(rec.observe))
	require.NoError(t, err)
	tk := trigger(t, m, "web", "v1")
	nextCall(ctx, t, d).Finish(errBoom)
	rec.waitFor(ctx, t, "retrying", ofKind(dedup.EventRetrying, "v1")) // v1 waits for its retry
	clock.Advance(10 * time.Second)
	tk2 := trigger(t, m, "web", "v2") // replaces the retry; the min interval holds it back
	require.NoError(t, m.Close(ctx))
	for _, r := range []dedup.Result{await(ctx, t, tk), await(ctx, t, tk2)} {
		require.Equal(t, dedup.Aborted, r.Outcome, "%+v", r)
		require.Zerof(t, r.Attempts, "Result.Attempts of %s", r.Requested)
		require.Equalf(t, at(10*time.Second), r.Started, "Result.Started of %s", r.Requested)
	}
}
