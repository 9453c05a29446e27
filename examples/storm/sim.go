package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// The replay is exact without sleeping or polling because only the
// goroutine of replay moves the fake clock, and after every step it waits for
// explicit signals until the step's consequences are over: a deploy tells
// when it has begun (its timer armed), singleflight answers its callers, the
// Manager reports a success to its observer and Status counts the deploys
// it started. Polls are timers armed before any deploy, so a poll due at the
// same time as the end of a deploy fires first (deduptest.Clock fires timers
// due at the same time in the order they were armed).

// stackKey is the one stack of the replay.
const stackKey = "stack"

// Result is what one strategy did during the replay.
type Result struct {
	Strategy      string
	Deploys       []Deploy      // in the order they began
	MaxConcurrent int           // most deploys running at the same time
	Live          bool          // the last deploy to finish deployed the last commit
	LiveAfter     time.Duration // from the landing of the last commit to its deploy's end, when Live
	Stale         int           // polls answered "deployed" by a deploy of an older commit
	Polls         int           // polls made until the strategy went quiet
}

// Deploy is one deploy of the stack. Times are since the storm began.
type Deploy struct {
	Commit     int
	Start, End time.Duration
	Finished   bool // false: still running when the replay ended, then canceled
}

// strategy reacts to polls. Its methods are called from the goroutine that
// moves the clock and return once what they started has settled.
type strategy interface {
	// poll is called on every poll with the newest commit landed (0: none
	// yet). ctx is also the context of the deploys it starts; it is
	// canceled when the replay ends.
	poll(ctx context.Context, newest int) error
	// ended is called when a deploy's time is up, after the stack recorded
	// its end.
	ended(ctx context.Context) error
	// stop is called once ctx is canceled: it waits for every goroutine the
	// strategy started and returns how many of its answers were stale.
	stop(ctx context.Context) (stale int, err error)
}

// Run replays sc for each strategy, each on a clock of its own, in the
// order naive, singleflight, dedupdeploy.
func Run(ctx context.Context, sc Scenario) ([]Result, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	strategies := []struct {
		name string
		make func(*stack) (strategy, error)
	}{
		{"naive", func(s *stack) (strategy, error) { return &naive{s: s}, nil }},
		{"singleflight", func(s *stack) (strategy, error) { return &flight{s: s}, nil }},
		{"dedupdeploy", newManaged},
	}
	results := make([]Result, 0, len(strategies))
	for _, st := range strategies {
		r, err := replay(ctx, sc, st.make)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		r.Strategy = st.name
		results = append(results, r)
	}
	return results, nil
}

// replay runs one strategy through the storm until it is quiet (the last
// commit has landed and nothing runs after a poll) or the polls run out.
func replay(ctx context.Context, sc Scenario, newStrategy func(*stack) (strategy, error)) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	s := &stack{clock: new(deduptest.Clock), duration: sc.Deploy, started: make(chan struct{}), last: -1}
	s.epoch = s.clock.Now()
	st, err := newStrategy(s)
	if err != nil {
		return Result{}, err
	}
	s.onEnd = func() error { return st.ended(ctx) }

	var (
		res     Result
		quiet   bool
		pollErr error
	)
	polls := sc.polls()
	timers := make([]dedup.Timer, 0, polls)
	for k := 1; k <= polls; k++ {
		timers = append(timers, s.clock.AfterFunc(time.Duration(k)*sc.Interval, func() {
			if quiet || pollErr != nil {
				return
			}
			newest := sc.newest(s.since())
			if pollErr = st.poll(ctx, newest); pollErr != nil {
				return
			}
			res.Polls = k
			quiet = newest == sc.Commits && s.idle()
		}))
	}
	horizon := time.Duration(polls) * sc.Interval
	for !quiet && pollErr == nil && s.failed() == nil {
		d, ok := s.clock.Next()
		if !ok || s.since()+d > horizon {
			break
		}
		s.clock.AdvanceNext()
	}
	for _, t := range timers {
		t.Stop()
	}

	cancel() // deploys still running at the horizon
	stale, stopErr := st.stop(ctx)
	if err := firstErr(pollErr, s.failed(), stopErr); err != nil {
		return Result{}, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	res.Deploys = s.deploys
	res.MaxConcurrent = s.maxRunning
	res.Stale = stale
	if s.last >= 0 && s.deploys[s.last].Commit == sc.Commits {
		res.Live = true
		res.LiveAfter = s.deploys[s.last].End - sc.landed(sc.Commits)
	}
	return res, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// stack is the simulated stack: a deploy arms a timer on the fake clock for
// the deploy duration and waits for it, or for its context to end.
type stack struct {
	clock    *deduptest.Clock
	epoch    time.Time
	duration time.Duration
	started  chan struct{} // a deploy began and armed its timer
	onEnd    func() error  // the strategy takes in the end of a deploy

	mu         sync.Mutex
	deploys    []Deploy
	last       int // index of the last deploy to finish; -1 if none did
	running    int
	maxRunning int
	err        error // the first failure inside a clock callback
}

func (s *stack) since() time.Duration { return s.clock.Since(s.epoch) }

// deploy deploys commit: it takes s.duration of fake time. It returns once
// the time is up, or ctx.Err() if ctx ends first.
func (s *stack) deploy(ctx context.Context, commit int) error {
	s.mu.Lock()
	i := len(s.deploys)
	s.deploys = append(s.deploys, Deploy{Commit: commit, Start: s.since()})
	s.running++
	s.maxRunning = max(s.maxRunning, s.running)
	s.mu.Unlock()

	done := make(chan struct{})
	timer := s.clock.AfterFunc(s.duration, func() {
		// The clock's goroutine runs this, at the deploy's end exactly.
		s.mu.Lock()
		s.deploys[i].End, s.deploys[i].Finished = s.since(), true
		s.last = i
		s.running--
		s.mu.Unlock()
		close(done)
		if err := s.onEnd(); err != nil {
			s.fail(err)
		}
	})
	select {
	case s.started <- struct{}{}:
	case <-ctx.Done():
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if timer.Stop() {
			s.mu.Lock()
			s.running--
			s.mu.Unlock()
		}
		return ctx.Err()
	}
}

// waitStarted waits for a deploy to begin.
func (s *stack) waitStarted(ctx context.Context) error {
	select {
	case <-s.started:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a deploy to begin: %w", ctx.Err())
	}
}

func (s *stack) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running == 0
}

func (s *stack) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *stack) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// naive starts a deploy whenever a poll sees a commit other than the one
// the previous poll saw.
type naive struct {
	s    *stack
	seen int
	wg   sync.WaitGroup
}

func (n *naive) poll(ctx context.Context, newest int) error {
	if newest == 0 || newest == n.seen {
		return nil
	}
	n.seen = newest
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		_ = n.s.deploy(ctx, newest) // its only error is the end of the replay
	}()
	return n.s.waitStarted(ctx)
}

func (n *naive) ended(context.Context) error { return nil }

// stop waits for the deploys. Each poll's answer is its own deploy, never
// an older one.
func (n *naive) stop(context.Context) (int, error) {
	n.wg.Wait()
	return 0, nil
}

// flight is the seed's fix: the deploy runs through a singleflight.Group
// keyed by stack, whenever a poll sees a commit other than the last one
// deployed. A poll during a deploy joins it, whatever commit it deploys.
type flight struct {
	s        *stack
	g        singleflight.Group
	deployed int
	waiting  []flightCall // DoChan calls not answered yet
	stale    int
}

type flightCall struct {
	commit int
	ch     <-chan singleflight.Result
}

func (f *flight) poll(ctx context.Context, newest int) error {
	if newest == 0 || newest == f.deployed {
		return nil
	}
	// Every answer is collected when a deploy ends, so calls are waiting
	// exactly while a deploy runs: with none, DoChan starts one.
	starts := len(f.waiting) == 0
	ch := f.g.DoChan(stackKey, func() (any, error) {
		return newest, f.s.deploy(ctx, newest)
	})
	f.waiting = append(f.waiting, flightCall{commit: newest, ch: ch})
	if starts {
		return f.s.waitStarted(ctx)
	}
	return nil
}

// ended collects the answers of the deploy that ended: once they are in,
// singleflight has forgotten the call, so the next poll starts a new one.
func (f *flight) ended(ctx context.Context) error {
	for _, c := range f.waiting {
		select {
		case r := <-c.ch:
			f.answer(c, r)
		case <-ctx.Done():
			return fmt.Errorf("waiting for singleflight to answer: %w", ctx.Err())
		}
	}
	f.waiting = f.waiting[:0]
	return nil
}

func (f *flight) answer(c flightCall, r singleflight.Result) {
	if r.Err != nil {
		return
	}
	got := r.Val.(int)
	f.deployed = got
	if got < c.commit {
		f.stale++
	}
}

func (f *flight) stop(context.Context) (int, error) {
	for _, c := range f.waiting {
		f.answer(c, <-c.ch) // the deploy returns, its context is canceled
	}
	f.waiting = nil
	return f.stale, nil
}

// managed triggers a dedup.Manager with the newest commit on every poll.
type managed struct {
	s         *stack
	m         *dedup.Manager
	succeeded chan struct{} // the Manager recorded a deploy's success
	begun     int           // deploys seen to begin
	tickets   []pollTicket
}

type pollTicket struct {
	commit int
	t      *dedup.Ticket
}

func newManaged(s *stack) (strategy, error) {
	d := &managed{s: s, succeeded: make(chan struct{}, 1)}
	deploy := func(ctx context.Context, _ string, rev dedup.Revision) error {
		n, err := commitOf(rev)
		if err != nil {
			return err
		}
		return s.deploy(ctx, n)
	}
	m, err := dedup.New(dedup.DeployFunc(deploy),
		dedup.WithClock(s.clock),
		dedup.WithObserver(func(e dedup.Event) {
			// One deploy runs at a time and each success is taken in
			// before the clock moves again: the buffer never overflows.
			if e.Kind == dedup.EventSucceeded {
				d.succeeded <- struct{}{}
			}
		}))
	if err != nil {
		return nil, err
	}
	d.m = m
	return d, nil
}

func (d *managed) poll(ctx context.Context, newest int) error {
	if newest == 0 {
		return nil
	}
	t, err := d.m.Trigger(stackKey, dedup.Revision(revision(newest)))
	if err != nil {
		return err
	}
	d.tickets = append(d.tickets, pollTicket{commit: newest, t: t})
	return d.settle(ctx)
}

// ended waits for the Manager to record the success; by then it has also
// started the follow-up deploy, if one is pending.
func (d *managed) ended(ctx context.Context) error {
	select {
	case <-d.succeeded:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Manager to record a deploy: %w", ctx.Err())
	}
	return d.settle(ctx)
}

// settle waits until every deploy the Manager started has begun.
func (d *managed) settle(ctx context.Context) error {
	st, _ := d.m.Status(stackKey)
	for ; d.begun < st.Runs; d.begun++ {
		if err := d.s.waitStarted(ctx); err != nil {
			return err
		}
	}
	return nil
}

// stop closes the Manager, which cancels the deploys still running (ctx is
// done), and counts the tickets that were told "deployed" about an older
// commit than theirs. The Manager says Superseded only about newer ones.
func (d *managed) stop(ctx context.Context) (int, error) {
	if err := d.m.Close(ctx); err != nil && ctx.Err() == nil {
		return 0, err
	}
	stale := 0
	for _, pt := range d.tickets {
		r := pt.t.Result() // settled: Close settles every ticket
		if r.Err != nil {
			continue
		}
		n, err := commitOf(r.Revision)
		if err != nil {
			return 0, err
		}
		if n < pt.commit {
			stale++
		}
	}
	return stale, nil
}

func commitOf(rev dedup.Revision) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(string(rev), "c"))
	if err != nil {
		return 0, fmt.Errorf("revision %q is not a commit of the replay", rev)
	}
	return n, nil
}
