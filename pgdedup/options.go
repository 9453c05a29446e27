package pgdedup

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// An Option configures a Manager made by New. Every replica of a cluster
// must be given the same policies (WithDebounce, WithRetry, WithKeyPolicy,
// ...): each applies them to whatever key it touches.
type Option func(*config)

type config struct {
	schema    string
	lease     time.Duration
	poll      time.Duration
	retention time.Duration
	replica   string
	listen    bool
	policy    dedup.Policy
	keyPolicy func(string) dedup.Policy
	observer  func(dedup.Event)
	logger    *slog.Logger
	errs      []error
}

func (c *config) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%w: pgdedup: "+format, append([]any{dedup.ErrInvalid}, args...)...))
}

// Defaults of the options.
const (
	DefaultSchema       = "dedupdeploy"
	DefaultLease        = 30 * time.Second
	DefaultPollInterval = 2 * time.Second
	DefaultRetention    = time.Hour
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// WithSchema sets the schema pgdedup's tables live in (default
// "dedupdeploy"): lower-case letters, digits and underscores, at most 48
// bytes. Replicas that share a schema share their keys.
func WithSchema(name string) Option {
	return func(c *config) {
		if !schemaName.MatchString(name) {
			c.errorf("schema %q is not a lower-case identifier of at most 48 bytes", name)
		}
		c.schema = name
	}
}

// WithLease sets how long a key's lease lasts without renewal (default 30s,
// at least 100ms). The owner renews it every third of ttl; a replica that
// dies leaves its key to another one after at most ttl (plus a poll
// interval); a deploy whose lease cannot be renewed for ttl is canceled.
func WithLease(ttl time.Duration) Option {
	return func(c *config) {
		if ttl < 100*time.Millisecond {
			c.errorf("lease %v is shorter than 100ms", ttl)
		}
		c.lease = ttl
	}
}

// WithPollInterval sets how often a replica looks for work without being
// woken by a notification (default 2s): the bound on the delay a lost
// notification causes.
func WithPollInterval(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.errorf("poll interval %v is not positive", d)
		}
		c.poll = d
	}
}

// WithoutListen turns LISTEN/NOTIFY wake-ups off: the replica polls only.
// Use it behind a pooler in transaction mode, which cannot LISTEN.
func WithoutListen() Option { return func(c *config) { c.listen = false } }

// WithReplicaID names the replica in the keys' owner column and in Status
// (default: host name, process id and a random suffix).
func WithReplicaID(id string) Option {
	return func(c *config) {
		if err := dedup.ValidKey(id); err != nil {
			c.errs = append(c.errs, fmt.Errorf("pgdedup: replica id: %w", err))
		}
		c.replica = id
	}
}

// WithResultRetention sets how long the end of a run stays readable by the
// tickets waiting on it (default an hour).
func WithResultRetention(d time.Duration) Option {
	return func(c *config) {
		if d < time.Second {
			c.errorf("result retention %v is shorter than a second", d)
		}
		c.retention = d
	}
}

// WithDebounce is dedup.WithDebounce across the cluster: a run starts only
// after quiet without a trigger on any replica, and at most maxDelay after
// the burst's first trigger.
func WithDebounce(quiet, maxDelay time.Duration) Option {
	return func(c *config) { c.policy.Quiet, c.policy.MaxDelay = quiet, maxDelay }
}

// WithMinInterval is dedup.WithMinInterval across the cluster.
func WithMinInterval(d time.Duration) Option {
	return func(c *config) { c.policy.MinInterval = d }
}

// WithCancelInProgress is dedup.WithCancelInProgress across the cluster: a
// trigger on one replica cancels the attempt running on another within a
// notification's delay, or a third of the lease when notifications are
// lost.
func WithCancelInProgress() Option {
	return func(c *config) { c.policy.CancelInProgress = true }
}

// WithRetry is dedup.WithRetry: a failed run is retried by whichever
// replica claims it when its backoff has passed.
func WithRetry(p dedup.RetryPolicy) Option {
	return func(c *config) { c.policy.Retry = p }
}

// WithTimeout is dedup.WithTimeout: it bounds each attempt.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.policy.Timeout = d }
}

// WithKeyPolicy is dedup.WithKeyPolicy: f gives each key its policy. It is
// called, with no lock held, whenever the replica applies the rules to the
// key, so it must be cheap and give every replica the same answer.
func WithKeyPolicy(f func(key string) dedup.Policy) Option {
	return func(c *config) {
		if f == nil {
			c.errorf("nil key policy function")
		}
		c.keyPolicy = f
	}
}

// WithObserver calls f with every Event of this replica: the changes it
// made, not those of the other replicas. f is called with no lock held and
// no transaction open.
func WithObserver(f func(dedup.Event)) Option {
	return func(c *config) {
		if f == nil {
			c.errorf("nil observer")
		}
		c.observer = f
	}
}

// WithLogger logs every Event of this replica to l.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l == nil {
			c.errorf("nil logger")
		}
		c.logger = l
	}
}
