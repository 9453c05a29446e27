package dedup

import (
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"time"
)

// Policy is how one key is deployed: when a run may start, how a failed run
// is retried, how long an attempt may take, and whether a newer revision
// cancels the running deploy. The zero Policy starts a run at once, never
// retries, sets no timeout and lets a running deploy finish.
//
// Policy values are comparable; a Manager keeps one copy of each distinct
// Policy, however many keys use it, for the first 256 distinct policies
// (beyond that, each key keeps its own, which Forget frees).
type Policy struct {
	// Quiet delays the start of a run until no trigger of a new revision
	// for the key has arrived for Quiet (debounce). A trigger of the
	// revision already pending does not restart it: a poller hands over
	// every poll's revision, changed or not.
	Quiet time.Duration
	// MaxDelay bounds the debounce: a run starts at most MaxDelay after the
	// first trigger of the burst, however often triggers keep arriving.
	// Zero means no bound. When set, it must be at least Quiet.
	MaxDelay time.Duration
	// MinInterval is the least time between the starts of two runs
	// (attempts included) of the key.
	MinInterval time.Duration
	// Retry says how a failed run is retried.
	Retry RetryPolicy
	// Timeout bounds each attempt; zero means no bound.
	Timeout time.Duration
	// CancelInProgress makes a newer revision cancel the context of the
	// running deploy, so the newer one starts as soon as it returns.
	CancelInProgress bool
}

// RetryPolicy says how a failed run is retried: up to MaxAttempts attempts in
// all, waiting Initial after the first failure, then Multiplier times longer
// after each further one, capped at Max, each wait shortened by a random
// fraction of up to Jitter. A newer revision that arrives meanwhile replaces
// the retry.
//
// The zero RetryPolicy never retries. With MaxAttempts above 1, zero fields
// take defaults: Initial 1s, Multiplier 2, Max 5m.
type RetryPolicy struct {
	MaxAttempts int           // attempts in all, the first included; 0 and 1 mean no retry
	Initial     time.Duration // wait after the first failure
	Max         time.Duration // cap of a wait
	Multiplier  float64       // growth of the wait per failure; at least 1
	Jitter      float64       // in [0, 1]: each wait is cut by up to this fraction at random
}

// Defaults filled in by RetryPolicy when MaxAttempts > 1.
const (
	DefaultRetryInitial    = time.Second
	DefaultRetryMultiplier = 2.0
	DefaultRetryMax        = 5 * time.Minute
)

// WithDefaults returns p with the defaults filled in, as a Manager uses it:
// with MaxAttempts 0 or 1 the policy never retries (MaxAttempts 1, every
// other field zero); above that, zero Initial, Multiplier and Max take
// DefaultRetryInitial, DefaultRetryMultiplier and the larger of
// DefaultRetryMax and Initial.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.MaxAttempts <= 1 {
		return RetryPolicy{MaxAttempts: 1}
	}
	if p.Initial == 0 {
		p.Initial = DefaultRetryInitial
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultRetryMultiplier
	}
	if p.Max == 0 {
		p.Max = max(DefaultRetryMax, p.Initial)
	}
	return p
}

// Validate returns an error wrapping ErrInvalid, naming the field, if p has
// a bad value; New and WithKeyPolicy's keys check their policies with it.
func (p RetryPolicy) Validate() error {
	switch {
	case p.MaxAttempts < 0:
		return fmt.Errorf("%w: retry MaxAttempts %d is negative", ErrInvalid, p.MaxAttempts)
	case p.Initial < 0:
		return fmt.Errorf("%w: retry Initial %v is negative", ErrInvalid, p.Initial)
	case p.Max < 0:
		return fmt.Errorf("%w: retry Max %v is negative", ErrInvalid, p.Max)
	case p.Max > 0 && p.Max < p.Initial:
		return fmt.Errorf("%w: retry Max %v is less than Initial %v", ErrInvalid, p.Max, p.Initial)
	case math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0) || (p.Multiplier != 0 && p.Multiplier < 1):
		return fmt.Errorf("%w: retry Multiplier %v is not 0 (default) or at least 1", ErrInvalid, p.Multiplier)
	case math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("%w: retry Jitter %v is not in [0, 1]", ErrInvalid, p.Jitter)
	}
	return nil
}

// Validate returns an error wrapping ErrInvalid, naming the field, if p has
// a bad value: a negative duration, MaxDelay below Quiet, or a bad
// RetryPolicy. New checks the default policy with it, and a Manager checks
// each policy its key policy function returns.
func (p Policy) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"debounce quiet", p.Quiet}, {"debounce maxDelay", p.MaxDelay}, {"min interval", p.MinInterval}, {"timeout", p.Timeout}} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrInvalid, d.name, d.v)
		}
	}
	if p.MaxDelay > 0 && p.MaxDelay < p.Quiet {
		return fmt.Errorf("%w: debounce maxDelay %v is less than quiet %v", ErrInvalid, p.MaxDelay, p.Quiet)
	}
	return p.Retry.Validate()
}

// An Option configures a Manager made by New.
type Option func(*config)

type config struct {
	clock         Clock
	store         Store
	policy        Policy
	keyPolicy     func(key string) Policy
	maxConcurrent int
	observer      func(Event)
	logger        *slog.Logger
	slotHook      func(key string) // tests only: see export_test.go
	slow          slowPolicy
	errs          []error
}

func (c *config) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
}

// WithClock sets the clock that debounce, minimum intervals, retries and
// result times use. The default is the time package.
func WithClock(c Clock) Option {
	return func(cfg *config) {
		if isNil(c) {
			cfg.errorf("nil Clock (%T)", c)
		}
		cfg.clock = c
	}
}

// WithStore sets where the last deployed revision of each key is kept. The
// default keeps it in the Manager's memory only.
func WithStore(s Store) Option {
	return func(cfg *config) {
		if isNil(s) {
			cfg.errorf("nil Store (%T)", s)
		}
		cfg.store = s
	}
}

// WithDebounce starts a run only after quiet has passed with no trigger of
// a new revision for the key (a trigger of the pending revision does not
// count), but never later than maxDelay after the first trigger of the
// burst (zero maxDelay: no bound). It sets Policy.Quiet and Policy.MaxDelay
// of the default policy.
func WithDebounce(quiet, maxDelay time.Duration) Option {
	return func(cfg *config) { cfg.policy.Quiet, cfg.policy.MaxDelay = quiet, maxDelay }
}

// WithMinInterval keeps at least d between the starts of two runs of a key
// (Policy.MinInterval of the default policy).
func WithMinInterval(d time.Duration) Option {
	return func(cfg *config) { cfg.policy.MinInterval = d }
}

// WithCancelInProgress makes a newer revision cancel the context of the
// running deploy of its key, like GitHub Actions' cancel-in-progress
// (Policy.CancelInProgress of the default policy). Off by default: a running
// deploy is let finish and the newer revision follows it.
func WithCancelInProgress() Option {
	return func(cfg *config) { cfg.policy.CancelInProgress = true }
}

// WithRetry sets how failed runs are retried (Policy.Retry of the default
// policy). By default a failed run is not retried.
func WithRetry(p RetryPolicy) Option {
	return func(cfg *config) { cfg.policy.Retry = p }
}

// WithTimeout bounds every attempt to deploy by d (Policy.Timeout of the
// default policy). By default there is no bound.
func WithTimeout(d time.Duration) Option {
	return func(cfg *config) { cfg.policy.Timeout = d }
}

// WithMaxConcurrent allows at most n deploys at once across all keys; zero,
// the default, means no limit. Keys ready to start wait in FIFO order and go
// on coalescing triggers while they wait. A waiting key has served its
// debounce already: it starts when a slot frees, also if triggered again
// meanwhile.
func WithMaxConcurrent(n int) Option {
	return func(cfg *config) {
		if n < 0 {
			cfg.errorf("max concurrent %d is negative", n)
		}
		cfg.maxConcurrent = n
	}
}

// WithKeyPolicy sets the policy of each key: f is called when the key is
// first triggered (more than once if first triggers race; one result is
// kept), with no lock held, and its result replaces the
// default policy built by the other options for that key. An invalid Policy
// returned by f makes that Trigger fail with an error wrapping ErrInvalid.
func WithKeyPolicy(f func(key string) Policy) Option {
	return func(cfg *config) {
		if f == nil {
			cfg.errorf("nil key policy function")
		}
		cfg.keyPolicy = f
	}
}

// WithObserver calls f with every Event. f is called synchronously from the
// goroutine that made the change, after it and with no lock held, so it may
// call the Manager, except Close: Close waits for the deploy goroutines that
// deliver events. It may be called from several goroutines at once; Event.Seq
// orders the events. A slow f slows down whoever made the change.
//
// A panic in f is recovered and logged (to the Manager's logger, else
// slog's default, with the stack), the way net/http logs a panicking
// handler; the other events are still delivered and the Manager goes on.
// If f calls runtime.Goexit, the events not yet delivered from that change
// are lost; the change itself, and every run it started, is not.
//
// f must not wait for a deploy (Manager.Deploy, Ticket.Wait): the run it
// would wait for may be the next one of the goroutine that delivers the
// event, which then waits for itself. Trigger or Notify and return.
func WithObserver(f func(Event)) Option {
	return func(cfg *config) {
		if f == nil {
			cfg.errorf("nil observer")
		}
		cfg.observer = f
	}
}

// WithLogger logs every Event to l: failures at Warn, coalescing at Debug,
// the rest at Info. A handler that panics or calls runtime.Goexit is
// treated as an observer that does (see WithObserver); its panics are
// reported to slog's default logger.
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) {
		if l == nil {
			cfg.errorf("nil logger")
		}
		cfg.logger = l
	}
}

// TriggerOption modifies one call of Trigger or Deploy.
type TriggerOption struct {
	force bool
}

// Force deploys the revision even if it is already live. A forced trigger
// still joins a run of the same revision that is pending or running.
func Force() TriggerOption { return TriggerOption{force: true} }

// isNil reports whether v is nil, or an interface holding a nil pointer,
// func, map, channel or slice: a typed nil such as (*deployer.Cmd)(nil)
// would only fail at its first call, deep in a deploy.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Chan, reflect.Slice, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}
