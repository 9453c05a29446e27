package poller

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// An Option configures a Poller made by New. New cannot return an error, so
// a bad option value is reported, wrapping dedup.ErrInvalid, by every call of
// Watch and Run.
type Option func(*config)

type config struct {
	clock    dedup.Clock
	observer func(Event)
	logger   *slog.Logger
	client   *http.Client
	errs     []error
}

func (c *config) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w: "+format, append([]any{dedup.ErrInvalid}, args...)...))
}

// WithClock sets the clock that spaces polls and backoffs, bounds a poll
// with its Timeout, and stamps events and statuses. The default is the time
// package; pass a *deduptest.Clock (the Manager's, if it has one) to test
// polling without waiting.
//
// On such a clock the Poller has one timer armed while Run runs and a key
// waits for its next poll: for the earliest of the waiting keys (keys due at
// the same instant start together when it fires). A polling key adds the
// timer of its Timeout (default Every), which is stopped as soon as
// Source.Latest returns.
func WithClock(c dedup.Clock) Option {
	return func(cfg *config) {
		if c == nil {
			cfg.errorf("nil Clock")
			return
		}
		cfg.clock = c
	}
}

// WithObserver calls f with every Event. f is called from the goroutine of
// the poll that the event is about, with no lock held, so it may call the
// Poller (Watch, Unwatch, PollNow). Events of one key are delivered in order,
// one at a time; events of different keys may be delivered concurrently. An
// event is delivered after the key's next poll is scheduled; a poll that
// PollNow asked for meanwhile starts once f returns, so f should be quick.
// A panic in f is recovered and logged.
func WithObserver(f func(Event)) Option {
	return func(cfg *config) {
		if f == nil {
			cfg.errorf("nil observer")
			return
		}
		cfg.observer = f
	}
}

// WithLogger logs every Event to l: failed polls and refused triggers at
// Warn, new revisions at Info, unchanged ones at Debug.
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) {
		if l == nil {
			cfg.errorf("nil logger")
			return
		}
		cfg.logger = l
	}
}

// WithHTTPClient sets the client that git sources on http:// and https://
// remotes use when their own Client is nil (the default is a client of this
// package with keep-alive connections). Keep-alive is what makes a poll
// cheap: one request on an open connection instead of a TLS handshake.
func WithHTTPClient(c *http.Client) Option {
	return func(cfg *config) {
		if c == nil {
			cfg.errorf("nil HTTP client")
			return
		}
		cfg.client = c
	}
}

// Defaults of the watch options.
const (
	// DefaultEvery is the interval of a key watched without Every.
	DefaultEvery = time.Minute
	// DefaultJitter is the jitter of a key watched without Jitter.
	DefaultJitter = 0.1
	// MaxBackoffLimit is the longest default MaxBackoff for intervals up to
	// that long: the default cap of the wait after failures is ten times
	// Every, but at most the longer of Every and MaxBackoffLimit.
	MaxBackoffLimit = 10 * time.Minute
)

// A WatchOption configures how one key is polled. Watch validates them and
// returns an error wrapping dedup.ErrInvalid for a bad value.
type WatchOption func(*watchConfig)

type watchConfig struct {
	settings
	timeoutSet, backoffSet bool
	errs                   []error
}

func (c *watchConfig) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w: "+format, append([]any{dedup.ErrInvalid}, args...)...))
}

// Every sets the time between the end of one poll of the key and the start
// of the next (before jitter). It must be positive; the default is
// DefaultEvery.
func Every(d time.Duration) WatchOption {
	return func(c *watchConfig) { c.every = d }
}

// Jitter spreads the polls of many keys: each wait is multiplied by a random
// factor in [1-fraction, 1+fraction), and the first poll of a key starts
// after a random fraction of up to fraction×Every. fraction must be in
// [0, 1); the default is DefaultJitter. Jitter(0) makes every wait exact and
// the first poll immediate.
func Jitter(fraction float64) WatchOption {
	return func(c *watchConfig) { c.jitter = fraction }
}

// Timeout bounds one call of Source.Latest: its context ends d after the
// poll started, and the poll fails with an error wrapping
// context.DeadlineExceeded. The time is the Poller's Clock (with the default
// clock, the context carries the deadline). Zero means no bound; negative
// values are invalid. The default is Every, so a hung source cannot stop its
// key from being polled for longer than one interval.
func Timeout(d time.Duration) WatchOption {
	return func(c *watchConfig) { c.timeout, c.timeoutSet = d, true }
}

// MaxBackoff caps the wait after failed polls (before jitter). After n
// failures in a row the wait is Every×2^(n-1), capped at the larger of d and
// Every. d must be positive; the default is 10×Every, but at most the longer
// of Every and MaxBackoffLimit.
func MaxBackoff(d time.Duration) WatchOption {
	return func(c *watchConfig) {
		if d <= 0 {
			c.errorf("max backoff %v is not positive", d)
			return
		}
		c.maxBackoff, c.backoffSet = d, true
	}
}

// newSettings applies opts to the defaults and validates the result.
func newSettings(opts []WatchOption) (settings, error) {
	c := watchConfig{settings: settings{every: DefaultEvery, jitter: DefaultJitter}}
	for _, o := range opts {
		if o == nil {
			c.errorf("nil WatchOption")
			continue
		}
		o(&c)
	}
	if c.every <= 0 {
		c.errorf("every %v is not positive", c.every)
	}
	if math.IsNaN(c.jitter) || c.jitter < 0 || c.jitter >= 1 {
		c.errorf("jitter %v is not in [0, 1)", c.jitter)
	}
	if c.timeout < 0 {
		c.errorf("timeout %v is negative", c.timeout)
	}
	if len(c.errs) > 0 {
		return settings{}, errors.Join(c.errs...)
	}
	if !c.timeoutSet {
		c.timeout = c.every
	}
	if !c.backoffSet {
		c.maxBackoff = min(satMul(c.every, 10), max(c.every, MaxBackoffLimit))
	}
	c.maxBackoff = max(c.maxBackoff, c.every)
	return c.settings, nil
}

// settings is how one key is polled: a comparable value, so that a Poller
// keeps one copy of each distinct settings however many keys use it.
type settings struct {
	every      time.Duration
	jitter     float64
	timeout    time.Duration
	maxBackoff time.Duration
}

// first is the wait before the first poll of a key.
func (s *settings) first() time.Duration {
	if s.jitter == 0 {
		return 0
	}
	return scale(s.every, s.jitter*rand.Float64())
}

// interval is the wait between two successful polls.
func (s *settings) interval() time.Duration { return s.spread(s.every) }

// backoff is the wait after the given number (>= 1) of failed polls in a row.
func (s *settings) backoff(failures int) time.Duration {
	d := s.every
	for i := 1; i < failures && d < s.maxBackoff; i++ {
		if d > s.maxBackoff/2 {
			d = s.maxBackoff
		} else {
			d *= 2
		}
	}
	return s.spread(min(d, s.maxBackoff))
}

func (s *settings) spread(d time.Duration) time.Duration {
	if s.jitter == 0 {
		return d
	}
	return max(scale(d, 1+s.jitter*(2*rand.Float64()-1)), 1)
}

// scale returns d×f, saturating instead of overflowing.
func scale(d time.Duration, f float64) time.Duration {
	v := float64(d) * f
	if v >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(v)
}

func satMul(d time.Duration, n int64) time.Duration {
	if d > math.MaxInt64/time.Duration(n) {
		return math.MaxInt64
	}
	return d * time.Duration(n)
}
