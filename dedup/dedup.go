package dedup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Revision identifies what is deployed: a commit SHA, an image digest, an
// ETag. It is opaque to this package and only compared for equality.
type Revision string

// Deployer deploys one revision of one key.
//
// The Manager never calls Deploy twice at once for the same key, but calls it
// concurrently for different keys. Deploy should return when ctx is done;
// the Manager cancels ctx on timeout, on Close, and (with cancel-in-progress)
// when a newer revision arrives. A panic in Deploy is recovered and reported
// as a *PanicError. When ctx is done, return an error that says so;
// context.Cause(ctx) tells a timeout (context.DeadlineExceeded) from a
// cancellation.
type Deployer interface {
	Deploy(ctx context.Context, key string, rev Revision) error
}

// DeployFunc adapts a function to the Deployer interface.
type DeployFunc func(ctx context.Context, key string, rev Revision) error

// Deploy calls f(ctx, key, rev).
func (f DeployFunc) Deploy(ctx context.Context, key string, rev Revision) error {
	return f(ctx, key, rev)
}

// Clock is the source of time of a Manager. The default is the time package,
// so a Manager also works inside a testing/synctest bubble; deduptest.Clock
// is a fake one that tests advance by hand.
//
// The Manager calls Now, AfterFunc and Timer.Stop with the lock of a key
// held: they must return promptly, must not panic and must not call the
// Manager. Unlike a Deployer or a Store, a Clock is not guarded: a panic
// in it leaves that lock held.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, like
	// time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer made by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the timer from firing. It reports whether it stopped the
	// timer; false means the timer had already fired or been stopped.
	Stop() bool
}

// Store keeps the last successfully deployed revision of each key, so that a
// revision that is already live is not deployed again, also across restarts
// when the Store is durable. The default keeps it in memory.
//
// The Manager calls Load once per key, before the key's first deploy, and
// Save after every successful deploy. Calls for one key never overlap; calls
// for different keys may. Load reports ok=false for a key it does not know.
type Store interface {
	Load(ctx context.Context, key string) (rev Revision, ok bool, err error)
	Save(ctx context.Context, key string, rev Revision) error
}

// Sentinel errors, tested with errors.Is.
var (
	// ErrClosed is returned by Trigger and Deploy after Close, and carried
	// by the results of tickets that Close aborted.
	ErrClosed = errors.New("dedup: manager closed")
	// ErrInvalid is wrapped by every error about bad input: an empty,
	// oversized or malformed key or revision, a nil Deployer, a bad option.
	ErrInvalid = errors.New("dedup: invalid argument")
	// ErrGoexit is wrapped by the error of a user call that called
	// runtime.Goexit instead of returning (t.FailNow and testify's require
	// do, in a test): of a Deployer, which fails the attempt, or of a
	// Store's Load or Save, which is a Store error (Status.StoreErr) and
	// leaves the deploy alone. The Manager goes on in a new goroutine.
	ErrGoexit = errors.New("dedup: runtime.Goexit called")
)

// MaxLen is the largest key or revision, in bytes.
const MaxLen = 1024

// ValidKey reports whether key may be used with a Manager: an error wrapping
// ErrInvalid if it is empty, longer than MaxLen bytes, not UTF-8, or holds a
// control character.
func ValidKey(key string) error { return validate("key", key) }

// ValidRevision is like ValidKey, for revisions.
func ValidRevision(rev Revision) error { return validate("revision", string(rev)) }

func validate(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	if len(s) > MaxLen {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalid, what, len(s), MaxLen)
	}
	if printableASCII(s) {
		return nil // the common case, checked 8 bytes at a time
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("%w: %s has control character %#02x at byte %d", ErrInvalid, what, c, i)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("%w: %s is not valid UTF-8 at byte %d", ErrInvalid, what, i)
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s has control character %U at byte %d", ErrInvalid, what, r, i)
		}
		i += n
	}
	return nil
}

// printableASCII reports whether every byte of s is in [0x20, 0x7e].
func printableASCII(s string) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		// A byte is bad if its high bit is set, if it is below 0x20, or
		// if it is 0x7f (then w+1 sets its high bit).
		if (w|(w-lo*0x20)|(w+lo))&hi != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// PanicError is the error of a Deployer or Store call that panicked. The
// Manager recovers the panic, so one broken deploy does not crash the host.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the stack of the panicking goroutine
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("dedup: panic: %v\n\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// callDeploy runs d.Deploy, turning a panic into a *PanicError.
func callDeploy(ctx context.Context, d Deployer, key string, rev Revision) (err error) {
	defer recoverInto(&err)
	return d.Deploy(ctx, key, rev)
}

// recoverInto, deferred, turns a panic into a *PanicError in *err.
func recoverInto(err *error) {
	if v := recover(); v != nil {
		*err = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// recoverPanic, deferred, turns a panic into a *PanicError in *p.
func recoverPanic(p **PanicError) {
	if v := recover(); v != nil {
		*p = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// goexitError is the error of a user call that called runtime.Goexit.
func goexitError(call string) error {
	return fmt.Errorf("%w in %s (t.FailNow or a testify require in a test's code does this)", ErrGoexit, call)
}

// MemoryStore is a Store that keeps revisions in memory. Its zero value is
// ready to use; it is safe for concurrent use. It is the default Store.
type MemoryStore struct {
	mu   sync.Mutex
	revs map[string]Revision
}

// Load returns the revision saved for key.
func (s *MemoryStore) Load(_ context.Context, key string) (Revision, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, ok := s.revs[key]
	return rev, ok, nil
}

// Save records rev as the live revision of key.
func (s *MemoryStore) Save(_ context.Context, key string, rev Revision) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revs == nil {
		s.revs = make(map[string]Revision)
	}
	s.revs[key] = rev
	return nil
}

// SystemClock is the time package as a Clock: the default of a Manager.
// It works inside a testing/synctest bubble, whose time is fake.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc returns time.AfterFunc(d, f).
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var (
	_ Deployer = DeployFunc(nil)
	_ Store    = (*MemoryStore)(nil)
	_ Clock    = SystemClock{}
)
