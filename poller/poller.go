package poller

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/clockctx"
)

// Source reports the current revision of something watched: a branch, an
// HTTP resource, a file.
type Source interface {
	// Latest returns the current revision. It should return soon after ctx
	// is done. An error is reported and the key backs off; it never counts
	// as a revision. A Poller never calls Latest of one key concurrently,
	// but a Source watched under several keys is called concurrently.
	Latest(ctx context.Context) (dedup.Revision, error)
}

// SourceFunc adapts a function to the Source interface.
type SourceFunc func(ctx context.Context) (dedup.Revision, error)

// Latest calls f(ctx).
func (f SourceFunc) Latest(ctx context.Context) (dedup.Revision, error) { return f(ctx) }

// Trigger is what a Poller hands the revisions it finds to: the Notify
// method of a Manager. *dedup.Manager satisfies it, and so does any type
// with the same method (a Manager on several replicas, a wrapper that
// routes keys, a test double); NotifyFunc adapts a function.
//
// The Poller calls Notify after every successful poll, with the revision the
// source reported, changed or not (polling is level-triggered): a Manager
// answers a live revision as unchanged at almost no cost, and a revision
// whose deploy failed is deployed again. Notify must not block for long: the
// next poll of the key waits for it, and so do Watch and Unwatch of the key.
type Trigger interface {
	Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error
}

// NotifyFunc adapts a function to the Trigger interface.
type NotifyFunc func(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error

// Notify calls f(key, rev, opts...).
func (f NotifyFunc) Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error {
	return f(key, rev, opts...)
}

// Sentinel errors, tested with errors.Is.
var (
	// ErrNotWatched is returned by PollNow for a key that is not watched.
	ErrNotWatched = errors.New("poller: key not watched")
	// ErrRunning is returned by Run while another call of Run has not
	// returned.
	ErrRunning = errors.New("poller: already running")
	// ErrGoexit is wrapped by the error of a poll whose Source or Trigger
	// called runtime.Goexit (as t.FailNow and require.* do in a test): the
	// poll fails with it, and the key goes on being polled. (An observer
	// that calls it loses nothing but its goroutine: the poll ends in a
	// new one.) It
	// is dedup.ErrGoexit, so one errors.Is test covers a Manager and a
	// Poller.
	ErrGoexit = dedup.ErrGoexit
)

// Poller polls a Source per watched key and hands the key's revision to the
// Trigger after every successful poll. Per key, a poll never overlaps the previous poll of the
// key; an idle key costs a place in the Poller's timer heap and no
// goroutine. A Poller is safe
// for concurrent use. Make one with New, add keys with Watch, and call Run.
type Poller struct {
	trigger  Trigger
	client   *http.Client // of git sources without a Client of their own
	clock    dedup.Clock
	observer func(Event)
	logger   *slog.Logger
	err      error // bad options given to New, reported by Watch and Run

	// wg counts the armed timers and the running polls, so that Run can
	// wait for all of them.
	wg sync.WaitGroup

	mu        sync.Mutex
	delivered sync.Cond // on mu: a key finished handing a revision to the Trigger
	keys      map[string]*keyState
	settings  map[settings]*settings  // one copy of each distinct settings
	remotes   map[string]*remoteGroup // keys whose sources share requests, by remote
	flight    singleflight.Group      // requests to a remote in flight
	running   bool                    // a Run has started and not returned
	live      bool                    // polls may start: Run runs and its ctx is not done
	base      context.Context         // while live: Run's context, the parent of every poll's context

	// The keys waiting for their next poll are in one heap, earliest
	// first, and one timer of the clock is armed for the earliest: a key
	// costs a place in the heap rather than a timer of its own.
	waiting timerHeap
	wake    dedup.Timer // armed for wakeAt while a key waits and Run runs
	wakeAt  time.Time
	wakeSeq uint64 // bumped when wake is armed: a stale callback does nothing
}

// keyState is the polling state of one key. Its fields are guarded by
// Poller.mu.
//
// A key is either waiting for its next poll (in the heap), polling (a
// goroutine calls Source.Latest), or, outside Run, neither. A key that is unwatched
// while it polls stays in the map, unwatched, until its poll ends.
type keyState struct {
	key    string
	src    Source
	set    *settings
	cancel context.CancelFunc // of the running poll
	group  *remoteGroup       // of a source that shares requests per remote, while watched
	wants  []string           // what the source needs from its group's remote
	gen    uint32             // bumped by Watch and Unwatch: a poll of an older generation is dropped
	slot   int32              // 1 + index in Poller.waiting while the key waits there, else 0

	watched    bool
	polling    bool
	due        bool // PollNow: poll again as soon as possible
	delivering bool // the poll is handing a revision to the Trigger
	emitting   bool // the observer has the poll's event: the next poll waits for it

	last     dedup.Revision // last revision the Trigger accepted
	err      error
	failures int
	polled   time.Time // when the last poll ended
	next     time.Time // when the next poll is due, while waiting
}

// New returns a Poller that hands the revisions it finds to t. It panics if
// t is nil. A bad option does not make New fail: Watch and Run
// report it, so it cannot go unnoticed.
func New(t Trigger, opts ...Option) *Poller {
	if f, ok := t.(NotifyFunc); t == nil || (ok && f == nil) {
		panic("poller: nil Trigger")
	}
	cfg := config{clock: dedup.SystemClock{}}
	for _, o := range opts {
		if o == nil {
			cfg.errorf("nil Option")
			continue
		}
		o(&cfg)
	}
	p := &Poller{
		trigger:  t,
		clock:    cfg.clock,
		observer: cfg.observer,
		logger:   cfg.logger,
		err:      errors.Join(cfg.errs...),
		client:   cfg.client,
		keys:     make(map[string]*keyState),
		settings: make(map[settings]*settings),
		remotes:  make(map[string]*remoteGroup),
	}
	p.delivered.L = &p.mu
	return p
}

// Watch starts watching key: while Run runs, src is polled as the options
// say (by default every minute, with 10% jitter), and every revision it
// reports is handed to the Trigger. The first poll comes promptly (after a
// random delay of up to Jitter×Every): a Manager that has its revision live
// already answers Unchanged. Watch called before Run takes effect when Run starts.
//
// Watching a key that is watched already replaces its source and options,
// as Unwatch followed by Watch would: a poll of the old source still running
// is canceled and its result dropped, and the new source's first poll
// starts after it returned.
//
// Watch returns an error wrapping dedup.ErrInvalid for an invalid key (see
// dedup.ValidKey), a nil src, a ready-made source with a bad argument, a bad
// option, or a bad option given to New. It does not block, except to wait
// for a revision of the replaced source being handed to the Trigger at that
// moment; so, like Unwatch, it must not be called for the same key from the
// Trigger.
func (p *Poller) Watch(key string, src Source, opts ...WatchOption) error {
	if p.err != nil {
		return p.err
	}
	if err := dedup.ValidKey(key); err != nil {
		return err
	}
	if src == nil {
		return fmt.Errorf("watch %q: %w: nil Source", key, dedup.ErrInvalid)
	}
	if f, ok := src.(SourceFunc); ok && f == nil {
		return fmt.Errorf("watch %q: %w: nil SourceFunc", key, dedup.ErrInvalid)
	}
	if c, ok := src.(checker); ok {
		if err := c.check(); err != nil {
			return fmt.Errorf("watch %q: %w", key, err)
		}
	}
	set, err := newSettings(opts)
	if err != nil {
		return fmt.Errorf("watch %q: %w", key, err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	if ks == nil {
		ks = &keyState{key: strings.Clone(key)} // do not retain the caller's buffer
		p.keys[ks.key] = ks
	} else {
		p.forget(ks)
		ks.last, ks.err, ks.failures, ks.polled = "", nil, 0, time.Time{}
	}
	ks.src, ks.set, ks.watched = src, p.intern(set), true
	if rs, ok := src.(remoteSource); ok {
		p.join(ks, rs)
	}
	if p.live && !ks.polling {
		p.arm(ks, ks.set.first())
	}
	// A polling key starts its new first poll when the old poll ends
	// (settle), so that polls of one key never overlap.
	for ks.delivering {
		p.delivered.Wait()
	}
	return nil
}

// Unwatch stops watching key: its timer is stopped and a poll of it that is
// running is canceled and its result dropped. When Unwatch returns, the
// Poller will not trigger key again (until it is watched again). Unwatching
// a key that is not watched does nothing. The Manager keeps the key's
// state; dedup.Manager.Forget drops it once its deploys are done.
//
// Unwatch does not block, except to wait while a revision of key is being
// handed to the Trigger at that moment; so it must not be called for the
// same key from the Trigger, nor from a dedup.Manager observer that runs
// inside the Trigger. The Poller's own observer may call it.
func (p *Poller) Unwatch(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	if ks == nil {
		return
	}
	if ks.watched {
		p.forget(ks)
		ks.watched, ks.src = false, nil
		if !ks.polling {
			delete(p.keys, key)
		}
	}
	for ks.delivering {
		p.delivered.Wait()
	}
}

// forget stops what ks was doing for its current generation: its timer, its
// poll, a PollNow that waits. It is called with p.mu held.
func (p *Poller) forget(ks *keyState) {
	p.leave(ks)
	ks.gen++
	ks.due = false
	p.disarm(ks)
	if ks.cancel != nil {
		ks.cancel()
	}
}

// PollNow polls key at once, e.g. when a webhook says it changed. If a poll
// of key is running, another one starts as soon as it ends (polls of a key
// never overlap, and several PollNow calls meanwhile make one poll). If Run
// is not running, key is polled as soon as Run starts. The next regular poll
// is counted from the end of this one.
//
// PollNow does not block. It returns an error wrapping ErrNotWatched if key
// is not watched.
func (p *Poller) PollNow(key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	if ks == nil || !ks.watched {
		return fmt.Errorf("%w: %q", ErrNotWatched, key)
	}
	if ks.polling || ks.emitting || !p.live {
		ks.due = true
		return nil
	}
	p.disarm(ks)
	p.start(ks, true)
	return nil
}

// Run polls the watched keys until ctx is done. When ctx is done, Run stops
// every timer, cancels the context of every running poll, waits for those
// polls to return, and returns nil: when Run returns, no goroutine and no
// timer of the Poller is left. It returns at once with nil if ctx is done
// already.
//
// Run may be called again after it returned: it resumes polling every
// watched key (each promptly, as after Watch), remembering the revisions
// seen before. It returns ErrRunning at once while another Run has not
// returned, and an error wrapping dedup.ErrInvalid if New was given a bad
// option.
func (p *Poller) Run(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return ErrRunning
	}
	if ctx.Err() != nil {
		p.mu.Unlock()
		return nil
	}
	// Polls see the values of ctx but are canceled by Run itself, after it
	// stopped accepting results, so that the end of Run is not mistaken for
	// failing sources.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	p.running, p.live, p.base = true, true, base
	for _, ks := range p.keys {
		switch {
		case !ks.watched, ks.polling:
		case ks.due:
			p.start(ks, true)
		default:
			p.arm(ks, ks.set.first())
		}
	}
	p.mu.Unlock()

	<-ctx.Done()

	p.mu.Lock()
	p.live, p.base = false, nil
	for _, ks := range p.waiting {
		ks.slot = 0
	}
	clear(p.waiting)
	p.waiting = p.waiting[:0]
	p.rewake()
	p.mu.Unlock()
	cancel() // every running poll
	p.wg.Wait()
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
	return nil
}

// Status is the polling state of one watched key.
type Status struct {
	Key      string         // the watched key
	Revision dedup.Revision // the last revision the Trigger accepted ("" if none yet)
	Err      error          // error of the last poll (source or Trigger), nil after a success
	Failures int            // failed polls in a row
	Polling  bool           // a poll is running
	Polled   time.Time      // when the last poll ended (zero if none)
	Next     time.Time      // when the next poll is due (zero while polling or outside Run)
}

// Status returns the state of key, and false if key is not watched. It does
// not block on polls.
func (p *Poller) Status(key string) (Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	if ks == nil || !ks.watched {
		return Status{}, false
	}
	return ks.status(), true
}

// Statuses returns the state of every watched key, sorted by key.
func (p *Poller) Statuses() []Status {
	p.mu.Lock()
	out := make([]Status, 0, len(p.keys))
	for _, ks := range p.keys {
		if ks.watched {
			out = append(out, ks.status())
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

func (ks *keyState) status() Status {
	st := Status{Key: ks.key, Revision: ks.last, Err: ks.err, Failures: ks.failures, Polling: ks.polling, Polled: ks.polled}
	if ks.slot != 0 {
		st.Next = ks.next
	}
	return st
}

func (p *Poller) intern(s settings) *settings {
	if q := p.settings[s]; q != nil {
		return q
	}
	q := &s
	p.settings[s] = q
	return q
}

// arm puts ks in the heap of waiting keys, to start its next poll after d.
// It is called with p.mu held, while p.live.
func (p *Poller) arm(ks *keyState, d time.Duration) {
	ks.next = p.clock.Now().Add(d)
	heap.Push(&p.waiting, ks)
	p.rewake()
}

// disarm takes ks out of the heap of waiting keys, if it is there. It is
// called with p.mu held.
func (p *Poller) disarm(ks *keyState) {
	if ks.slot == 0 {
		return
	}
	heap.Remove(&p.waiting, int(ks.slot-1))
	p.rewake()
}

// rewake arms the Poller's timer for the earliest waiting key, unless it is
// armed for that time already, and stops it when no key waits or Run ends.
// It is called with p.mu held.
func (p *Poller) rewake() {
	var at time.Time
	if len(p.waiting) > 0 && p.live {
		at = p.waiting[0].next
	}
	if p.wake != nil {
		if !at.IsZero() && at.Equal(p.wakeAt) {
			return
		}
		if p.wake.Stop() {
			p.wg.Done() // else the callback runs, finds itself stale, and calls Done
		}
		p.wake = nil
	}
	if at.IsZero() {
		return
	}
	p.wakeSeq++
	seq := p.wakeSeq
	p.wakeAt = at
	p.wg.Add(1)
	p.wake = p.clock.AfterFunc(max(at.Sub(p.clock.Now()), 0), func() { p.fire(seq) })
}

// fire is the callback of the Poller's timer: it starts the polls that are
// due. It never blocks for long: a fake clock calls it from the goroutine
// that advances time.
func (p *Poller) fire(seq uint64) {
	defer p.wg.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wake == nil || p.wakeSeq != seq {
		return // stopped, or re-armed, after it fell due
	}
	p.wake = nil
	now := p.clock.Now()
	for p.live && len(p.waiting) > 0 && !p.waiting[0].next.After(now) {
		ks := heap.Pop(&p.waiting).(*keyState)
		if ks.emitting {
			ks.due = true // after the observer returns: events of a key, one at a time
			continue
		}
		p.start(ks, false)
	}
	p.rewake()
}

// timerHeap is the keys waiting for their next poll, a min-heap by the time
// it is due (container/heap).
type timerHeap []*keyState

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot, h[j].slot = int32(i+1), int32(j+1)
}

func (h *timerHeap) Push(x any) {
	ks := x.(*keyState)
	ks.slot = int32(len(*h) + 1)
	*h = append(*h, ks)
}

func (h *timerHeap) Pop() any {
	old := *h
	ks := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	ks.slot = 0
	return ks
}

// start starts a poll of ks in its own goroutine; asked (by PollNow) means
// the poll must ask the source afresh, never reuse another key's answer. It
// is called with p.mu held, while p.live and no poll of ks runs.
func (p *Poller) start(ks *keyState, asked bool) {
	ctx, cancel := p.pollContext(ks.set.timeout)
	ks.polling, ks.cancel, ks.due = true, cancel, false
	p.wg.Add(1)
	r := &pollRun{ctx: ctx, cancel: cancel, base: p.base, ks: ks, gen: ks.gen, src: ks.src, set: ks.set,
		group: ks.group, wants: ks.wants, asked: asked, start: p.clock.Now()}
	go p.poll(r)
}

// pollRun is one poll of a key, from its start to its settling. The poll
// goes through three steps (ask the source, hand the revision to the
// Trigger, deliver the event), each of which calls user code; if that code
// calls runtime.Goexit, the goroutine ends and the next step runs in a new
// one, which takes over the poll's count in p.wg.
type pollRun struct {
	ctx    context.Context
	cancel context.CancelFunc
	base   context.Context // Run's context, parent of a request shared with other keys
	ks     *keyState
	gen    uint32
	src    Source
	set    *settings
	group  *remoteGroup // of a source that shares requests per remote
	wants  []string     // the refs the source needs from its group's remote
	asked  bool         // by PollNow: a request of its own, not another key's answer
	start  time.Time
}

// poll runs one poll of r.ks. The state of the key is updated in steps, so
// that no lock is held while user code runs: record what the source said,
// record what the Trigger said, and (after the event is delivered) schedule
// the next poll.
func (p *Poller) poll(r *pollRun) {
	rev, at, err := p.latest(r)
	p.polled(r, rev, at, err)
}

// polled records what the source of r reported and hands a revision to the
// Trigger. at is, for an answer that another key's request fetched, when that
// request started; the key's next poll is counted from then.
func (p *Poller) polled(r *pollRun, rev dedup.Revision, at time.Time, err error) {
	if err != nil && r.set.timeout > 0 && errors.Is(r.ctx.Err(), context.DeadlineExceeded) {
		err = timeoutError(r.set.timeout, err)
	}
	r.cancel()
	end := p.clock.Now()

	ks := r.ks
	p.mu.Lock()
	if ks.gen != r.gen || !p.live {
		// Unwatched, replaced, or Run is ending: the result is stale.
		p.settle(ks, r.gen, 0)
		p.mu.Unlock()
		p.wg.Done()
		return
	}
	ev := Event{Key: ks.key, Revision: rev, Duration: end.Sub(r.start), Time: end}
	ks.polled = end
	if err != nil {
		ks.failures++
		ks.err = err
		ev.Kind, ev.Err, ev.Failures = EventError, err, ks.failures
		ev.Delay = r.set.backoff(ks.failures)
		p.mu.Unlock()
		p.finish(r, ev)
		return
	}
	ks.failures, ks.err = 0, nil
	ev.Delay = r.set.interval()
	if !at.IsZero() {
		// Keys that share a remote count their interval from the request
		// that served them, so that they stay in one round.
		ev.Delay = max(ev.Delay-end.Sub(at), 0)
	}
	ev.Kind = EventPolled
	if rev != ks.last {
		ev.Kind, ev.Previous = EventChanged, ks.last
	}
	ks.delivering = true
	p.mu.Unlock()

	terr := p.deliver(r, ev)
	p.answered(r, ev, terr)
}

// answered records what the Trigger answered to ev.Revision.
func (p *Poller) answered(r *pollRun, ev Event, terr error) {
	ks := r.ks
	p.mu.Lock()
	ks.delivering = false
	p.delivered.Broadcast()
	if ks.gen == r.gen {
		if terr != nil {
			ks.err = terr
		} else {
			ks.last = ev.Revision
		}
	}
	p.mu.Unlock()
	if terr != nil {
		ev.Kind, ev.Err = EventTriggerFailed, terr
	}
	p.finish(r, ev)
}

// finish schedules the next poll of the key, then delivers ev: whoever
// sees the event finds the key scheduled already. The next poll does not
// start before the observer returns (one that falls due meanwhile, by its
// timer or PollNow, waits for it), so that the events of a key come one at
// a time and in order.
func (p *Poller) finish(r *pollRun, ev Event) {
	p.mu.Lock()
	r.ks.emitting = true
	p.settle(r.ks, r.gen, ev.Delay)
	p.mu.Unlock()
	p.emit(r, ev)
	p.emitted(r)
}

// emitted ends the poll r once its event was delivered, and starts the
// key's next poll if it fell due meanwhile.
func (p *Poller) emitted(r *pollRun) {
	p.mu.Lock()
	ks := r.ks
	ks.emitting = false
	if ks.due && !ks.polling && ks.watched && p.live {
		p.disarm(ks)
		p.start(ks, true)
	}
	p.mu.Unlock()
	p.wg.Done()
}

// settle ends the poll of generation gen of ks and schedules what comes
// next. It is called with p.mu held. A key whose event is being delivered
// (ks.emitting) is armed, or left due, but not started.
func (p *Poller) settle(ks *keyState, gen uint32, delay time.Duration) {
	ks.polling, ks.cancel = false, nil
	switch {
	case !ks.watched:
		delete(p.keys, ks.key) // unwatched while it polled
	case !p.live:
		// Run is ending; the next Run schedules ks again.
	case ks.due && ks.emitting:
		// emitted starts it
	case ks.due:
		p.start(ks, true)
	case ks.gen != gen:
		p.arm(ks, ks.set.first()) // replaced while it polled
	default:
		p.arm(ks, delay)
	}
}

// latest asks the source of r for its revision, turning a panic and an
// invalid revision into an error. If the source calls runtime.Goexit, latest
// does not return: the poll goes on in a new goroutine.
func (p *Poller) latest(r *pollRun) (rev dedup.Revision, at time.Time, err error) {
	err = guard("source", func() error {
		var err error
		if r.group != nil {
			rev, at, err = p.latestShared(r)
		} else {
			rev, err = r.src.Latest(r.ctx)
		}
		return err
	}, func(err error) { p.polled(r, "", time.Time{}, err) })
	if err != nil {
		return "", time.Time{}, err
	}
	if err := dedup.ValidRevision(rev); err != nil {
		return "", time.Time{}, fmt.Errorf("source reported a bad revision: %w", err)
	}
	return rev, at, nil
}

// deliver hands ev.Revision to the Trigger, turning a panic into an error.
// If the Trigger calls runtime.Goexit, deliver does not return: the poll goes
// on in a new goroutine.
func (p *Poller) deliver(r *pollRun, ev Event) error {
	return guard("trigger", func() error {
		return p.trigger.Notify(ev.Key, ev.Revision)
	}, func(err error) { p.answered(r, ev, err) })
}

// emit hands e to the logger and the observer. A panic in them is
// recovered and logged (to the Poller's logger, else slog's default, with
// its stack), as the Manager does; a Goexit ends the goroutine, and the
// poll ends in a new one.
func (p *Poller) emit(r *pollRun, e Event) {
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			l := p.logger
			if l == nil {
				l = slog.Default()
			}
			func() {
				defer func() { _ = recover() }() // a logger that panics again is not retried
				l.Error("poller: observer or logger panicked; the Poller goes on", "key", e.Key, "panic", v, "stack", string(debug.Stack()))
			}()
			return // recovered: finish goes on
		}
		go p.emitted(r)
	}()
	if p.logger != nil {
		e.log(p.logger)
	}
	if p.observer != nil {
		p.observer(e)
	}
	returned = true
}

// guard calls f and returns its error, or the error of its panic. If f calls
// runtime.Goexit, the calling goroutine ends as Goexit says, but first guard
// starts goexit, with an error wrapping ErrGoexit, in a new goroutine that
// carries on from there.
func guard(what string, f func() error, goexit func(error)) (err error) {
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			err = &panicError{what: what, value: v, stack: debug.Stack()}
			return
		}
		go goexit(fmt.Errorf("poller: %s: %w", what, ErrGoexit))
	}()
	err = f()
	returned = true
	return err
}

// pollContext returns the context of one poll: a child of Run's context,
// bounded by timeout on the Poller's clock when timeout > 0. It is called
// with p.mu held.
func (p *Poller) pollContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	return p.timeoutContext(p.base, timeout)
}

// timeoutContext returns a child of parent bounded by timeout on the
// Poller's clock when timeout > 0.
func (p *Poller) timeoutContext(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(parent)
	}
	if _, system := p.clock.(dedup.SystemClock); system {
		return context.WithTimeout(parent, timeout)
	}
	return clockctx.WithTimeout(parent, timeout, func(d time.Duration, f func()) func() bool {
		return p.clock.AfterFunc(d, f).Stop
	}, p.wg.Add)
}

// timeoutError says that a poll ran out of time, keeping err and, for
// errors.Is, context.DeadlineExceeded.
func timeoutError(d time.Duration, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("poll timed out after %v: %w", d, err)
	}
	return fmt.Errorf("poll timed out after %v: %w: %w", d, context.DeadlineExceeded, err)
}

// panicError is the error of a Source or Trigger that panicked: the Poller
// recovers, so that one broken source does not crash the host.
type panicError struct {
	what  string
	value any
	stack []byte
}

func (e *panicError) Error() string {
	return fmt.Sprintf("poller: %s panicked: %v\n\n%s", e.what, e.value, e.stack)
}

// Unwrap returns the panic value if it is an error.
func (e *panicError) Unwrap() error {
	err, _ := e.value.(error)
	return err
}

// checker is implemented by the ready-made sources, so that Watch rejects a
// bad argument at once instead of at every poll.
type checker interface {
	check() error
}

var (
	_ Source  = SourceFunc(nil)
	_ Trigger = (*dedup.Manager)(nil)
	_ Trigger = NotifyFunc(nil)
)
