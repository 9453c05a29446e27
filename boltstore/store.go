package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Sentinel errors, tested with errors.Is. Bad keys and revisions are
// reported with errors wrapping dedup.ErrInvalid, as in package dedup.
var (
	// ErrLocked is wrapped by the error of Open when another process (or
	// another Open of the same file in this process) holds the file and did
	// not let go within the lock timeout.
	ErrLocked = errors.New("another process holds the file")
	// ErrClosed is wrapped by the errors of Load, Save and Delete after
	// Close. It is distinct from dedup.ErrClosed, which is about a Manager.
	ErrClosed = errors.New("store closed")
	// ErrReadOnly is wrapped by the errors of Save and Delete on a Store
	// opened with ReadOnly.
	ErrReadOnly = errors.New("store is read-only")
	// ErrCorrupt is wrapped by the error of Open for a file that is not a
	// bbolt database or whose header is damaged, and by the error of Load
	// for a record that cannot be read.
	ErrCorrupt = errors.New("damaged file or not a store")
	// ErrFormat is wrapped by the error of Load for a record written in a
	// format version this package does not know: by a newer version of
	// it. The record is left as it is.
	ErrFormat = errors.New("unknown record format")
)

// DefaultBucket is the bucket Open keeps its records in.
const DefaultBucket = "dedupdeploy.revisions"

// DefaultLockTimeout is how long Open waits for another process to let go
// of the file before it gives up with ErrLocked.
const DefaultLockTimeout = time.Second

// DefaultMaxBatchDelay is how long a Save that overlaps others waits for
// more to join its commit, on a Store made by Open. See WithBatch for how
// it was chosen.
const DefaultMaxBatchDelay = time.Millisecond

// DefaultMaxBatchSize is the most Saves that share one commit, on a Store
// made by Open.
const DefaultMaxBatchSize = 1000

// formatV1 is the only record format so far: a uvarint format version (1),
// then the revision's bytes.
const formatV1 = 1

// maxRecord bounds the size of a record of any version so far: a longer
// value is damaged, whatever its version says.
const maxRecord = binary.MaxVarintLen64 + dedup.MaxLen

// Store is a dedup.Store in a bbolt database file. Save returns once the
// record is durable; concurrent Saves share commits.
//
// A Store is safe for concurrent use. Make one with Open or New, and Close
// it when done.
type Store struct {
	db     *bbolt.DB
	bucket []byte
	path   string
	owned  bool // Open opened db: Close closes it

	// mu is held for reading by every operation and for writing by Close,
	// so that after Close returns no operation touches db.
	mu     sync.RWMutex
	closed bool

	updating atomic.Int32 // Saves and Deletes in progress
}

var _ dedup.Store = (*Store)(nil)

type config struct {
	bucket      string
	lockTimeout time.Duration
	readOnly    bool
	batchDelay  time.Duration
	batchSize   int
	err         error
}

// Option configures Open.
type Option func(*config)

// WithLockTimeout sets how long Open waits for another process to let go of
// the file (default DefaultLockTimeout) before it returns an error wrapping
// ErrLocked. bbolt tries the lock every 50ms, so the wait is rounded to
// that. d must be positive.
func WithLockTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.err = errors.Join(c.err, fmt.Errorf("%w: lock timeout %v is not positive", dedup.ErrInvalid, d))
		}
		c.lockTimeout = d
	}
}

// WithBucket sets the bucket Open keeps its records in (default
// DefaultBucket). The name must be a valid dedup key.
func WithBucket(name string) Option {
	return func(c *config) {
		if err := checkBucket(name); err != nil {
			c.err = errors.Join(c.err, err)
		}
		c.bucket = name
	}
}

// checkBucket is the rule WithBucket and New apply to a bucket name.
func checkBucket(name string) error {
	if err := dedup.ValidKey(name); err != nil {
		return fmt.Errorf("bucket name: %w", err)
	}
	return nil
}

// ReadOnly opens the file for reading only: Save and Delete return errors
// wrapping ErrReadOnly, and the file must exist.
//
// bbolt takes a shared lock for a read-only open and an exclusive one for
// a writer, so read-only Stores of one file open side by side (in one
// process or many), but never beside a writer: while a writer has the file
// open, a read-only Open waits for the lock timeout and fails with
// ErrLocked, and a writer's Open fails the same way while a reader has it.
func ReadOnly() Option { return func(c *config) { c.readOnly = true } }

// WithBatch sets how overlapping Saves share commits (bbolt's
// MaxBatchDelay and MaxBatchSize): a Save that overlaps others waits up to
// delay for more to join its commit, and a commit carries at most size
// Saves. The defaults are DefaultMaxBatchDelay and DefaultMaxBatchSize.
// A Save with no other in progress does not wait: it commits at once.
//
// Saves that arrive while a commit is being written gather in the next
// batch anyway, so the delay only needs to be about one commit long. With
// 16 and 256 savers saving in a loop (medians of 6 runs of go test -run
// '^$' -bench BatchDelay -count=6 ./boltstore/ on a noisy 2-vCPU VM), 1ms
// and 2ms were within noise of each other (16 saves per commit with 16
// savers; 190 and 250 with 256 savers, at 26µs and 22µs per save); 1ms is
// the default as the shorter wait for a Save that overlaps only a few
// others. 0 shares nothing (one commit per Save: 50 to 450 times slower),
// 500µs is too short to gather 256 savers (82 per commit, 8 times slower
// than 1ms), and 5ms or 10ms only add waiting, since savers that wait for
// their own Save cannot fill a batch of 1000.
// delay must not be negative and size must be positive.
func WithBatch(delay time.Duration, size int) Option {
	return func(c *config) {
		if delay < 0 || size <= 0 {
			c.err = errors.Join(c.err, fmt.Errorf("%w: batch delay %v and size %d: need delay >= 0, size > 0", dedup.ErrInvalid, delay, size))
		}
		c.batchDelay, c.batchSize = delay, size
	}
}

// Open opens the store in the bbolt database file at path, creating the
// file (mode 0600) if it is missing; its directory must exist. It blocks
// while another process holds the file, up to the lock timeout
// (WithLockTimeout), and then returns an error wrapping ErrLocked. A file
// that is not a bbolt database, or whose header is damaged, is an error
// wrapping ErrCorrupt that names the path.
//
// The caller must Close the Store, which closes the file.
func Open(path string, opts ...Option) (*Store, error) {
	cfg := config{
		bucket:      DefaultBucket,
		lockTimeout: DefaultLockTimeout,
		batchDelay:  DefaultMaxBatchDelay,
		batchSize:   DefaultMaxBatchSize,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, cfg.err)
	}
	db, err := openDB(path, &bbolt.Options{Timeout: cfg.lockTimeout, ReadOnly: cfg.readOnly})
	var pathErr *fs.PathError
	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("boltstore: open %s: %w (gave up after %v)", path, ErrLocked, cfg.lockTimeout)
	case errors.Is(err, ErrCorrupt), errors.As(err, &pathErr), errors.As(err, &errno):
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	default:
		// Any other error of bbolt.Open is about what the file holds: a
		// header that is not bbolt's, a checksum, a size that does not add
		// up ("file size too small", "mmap too large").
		return nil, fmt.Errorf("boltstore: open %s: %w: %v", path, ErrCorrupt, err)
	}
	db.MaxBatchDelay, db.MaxBatchSize = cfg.batchDelay, cfg.batchSize
	s, err := newStore(db, cfg.bucket)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// openDB is bbolt.Open, with a panic turned into an error wrapping
// ErrCorrupt: bbolt can panic on a damaged file that passes its header
// checks (e.g. while it loads the free list). The file it opened is then
// unlocked and closed, so that the path can be opened again; its mapping,
// if bbolt made one, cannot be reached and stays until the process exits.
func openDB(path string, o *bbolt.Options) (db *bbolt.DB, err error) {
	var f *os.File
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		var err error
		f, err = os.OpenFile(name, flag, perm)
		return f, err
	}
	defer func() {
		if p := recover(); p != nil {
			if f != nil {
				unlock(f)
				f.Close()
			}
			db, err = nil, fmt.Errorf("%w: bbolt: %v", ErrCorrupt, p)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return bbolt.Open(path, 0o600, o)
}

// guard turns a panic of bbolt on a damaged page (and a fault while it
// reads the file's mapping) into an error wrapping ErrCorrupt. Call it as
// defer guard(&err)() at the start of a transaction's function.
func guard(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			*err = fmt.Errorf("%w: bbolt: %v", ErrCorrupt, p)
		}
	}
}

// New makes a Store that keeps its records in the named bucket of db, a
// database the caller already has open; it creates the bucket if db is
// writable and the bucket is missing. Saves use db.Batch with the
// MaxBatchDelay and MaxBatchSize the caller set on db (bbolt's defaults
// are 10ms and 1000). The bucket must not hold anything but this Store's
// records. Like Open, New reads the bucket's pages once, so that a damaged
// file is its error (wrapping ErrCorrupt) rather than a later Save's.
//
// Close does not close db: the caller closes it after closing the Store.
func New(db *bbolt.DB, bucket string) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("boltstore: %w: nil *bbolt.DB", dedup.ErrInvalid)
	}
	if err := checkBucket(bucket); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	return newStore(db, bucket)
}

func newStore(db *bbolt.DB, bucket string) (*Store, error) {
	s := &Store{db: db, bucket: []byte(bucket), path: db.Path()}
	err := db.View(s.verify)
	if err == nil && !db.IsReadOnly() {
		err = db.Update(func(tx *bbolt.Tx) (err error) {
			defer guard(&err)()
			_, err = tx.CreateBucketIfNotExists(s.bucket)
			return err
		})
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return nil, fmt.Errorf("boltstore: %s: %w", s.path, ErrClosed)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: %s: bucket %q: %w", s.path, bucket, err)
	}
	return s, nil
}

// verify reads every page of the bucket once, so that a damaged file is an
// error of Open or New rather than of a later Save, whose commit may run in
// a goroutine of bbolt's where nothing can catch a panic. Records are
// decoded by Load only: one unreadable record does not make the others
// unreachable.
func (s *Store) verify(tx *bbolt.Tx) (err error) {
	defer guard(&err)()
	b := tx.Bucket(s.bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
	}
	return nil
}

// Path reports the file the Store keeps its records in.
func (s *Store) Path() string { return s.path }

// Load reports the revision saved for key, and ok=false if there is none.
// It blocks only for a read transaction (no disk write, no lock another
// Load waits for) and is safe for concurrent use. A record this package
// cannot read is an error wrapping ErrCorrupt, or ErrFormat if a newer
// version wrote it; either names the file and key.
func (s *Store) Load(ctx context.Context, key string) (rev dedup.Revision, ok bool, err error) {
	if err := dedup.ValidKey(key); err != nil {
		return "", false, fmt.Errorf("boltstore: load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return "", false, fmt.Errorf("boltstore: load %q: %w", key, ErrClosed)
	}
	var (
		rec   []byte
		found bool
	)
	err = s.db.View(func(tx *bbolt.Tx) (err error) {
		defer guard(&err)()
		b := tx.Bucket(s.bucket)
		if b == nil {
			return nil // a read-only Store of a file no writer has used
		}
		v := b.Get([]byte(key))
		if v == nil {
			return nil
		}
		if len(v) > maxRecord {
			// A damaged page can claim any length: do not read it.
			return fmt.Errorf("%w: record of %d bytes, more than any revision needs", ErrCorrupt, len(v))
		}
		rec, found = append([]byte(nil), v...), true // v is only valid in the transaction
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("boltstore: load %q from %s: %w", key, s.path, err)
	}
	if !found {
		return "", false, nil
	}
	rev, err = decode(rec)
	if err != nil {
		return "", false, fmt.Errorf("boltstore: load %q from %s: %w", key, s.path, err)
	}
	return rev, true, nil
}

// Save records rev as key's revision. It returns once the record is
// durable: written in a bbolt commit, which fsyncs the file, so it survives
// a crash of the process or of the machine from the moment Save returns.
// Concurrent Saves share commits (bbolt's Batch), so it is safe for
// concurrent use and cheap per Save under load.
//
// Save blocks for one commit, plus the batch delay if other Saves are in
// progress. If ctx is done before the record joins a commit, Save returns
// ctx.Err() and writes nothing (once the commit ahead of it ended: bbolt
// offers no way to stop waiting for it); once the record is in a commit,
// Save waits for that commit and reports its outcome, whatever ctx does: a
// nil error always means durable, an error means not saved, and a ctx never
// leaves a record half-written.
func (s *Store) Save(ctx context.Context, key string, rev dedup.Revision) error {
	if err := dedup.ValidKey(key); err != nil {
		return fmt.Errorf("boltstore: save: %w", err)
	}
	if err := dedup.ValidRevision(rev); err != nil {
		return fmt.Errorf("boltstore: save %q: %w", key, err)
	}
	rec := encode(rev)
	return s.update(ctx, "save", key, func(b *bbolt.Bucket) error { return b.Put([]byte(key), rec) })
}

// Delete removes key's record; a key without one is not an error. It is
// durable on return, blocks and shares commits like Save, and is safe for
// concurrent use.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := dedup.ValidKey(key); err != nil {
		return fmt.Errorf("boltstore: delete: %w", err)
	}
	return s.update(ctx, "delete", key, func(b *bbolt.Bucket) error { return b.Delete([]byte(key)) })
}

// update runs change in a commit of its own if no other update is in
// progress, so that a lone Save does not wait for a batch that nobody else
// joins, and else in a commit shared by bbolt's Batch.
//
// Batch may call the function more than once (a failing function is taken
// out of the batch and re-run alone), so it only puts or deletes, which is
// idempotent, and checks ctx each time: a ctx that ended while the Save
// waited for its batch fails the function, which bbolt then re-runs alone,
// where it fails again, so the Save writes nothing and returns ctx.Err().
func (s *Store) update(ctx context.Context, op, key string, change func(*bbolt.Bucket) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("boltstore: %s %q: %w", op, key, ErrClosed)
	}
	if s.db.IsReadOnly() {
		return fmt.Errorf("boltstore: %s %q in %s: %w", op, key, s.path, ErrReadOnly)
	}
	alone := s.updating.Add(1) == 1
	defer s.updating.Add(-1)
	if err := ctx.Err(); err != nil {
		return err
	}
	fn := func(tx *bbolt.Tx) (err error) {
		defer guard(&err)()
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(s.bucket) // New's caller may have deleted it
		if err != nil {
			return err
		}
		return change(b)
	}
	var err error
	if alone {
		err = s.db.Update(fn)
	} else {
		err = s.db.Batch(fn)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return err
		}
		return fmt.Errorf("boltstore: %s %q in %s: %w", op, key, s.path, err)
	}
	return nil
}

// Close makes every later call return an error wrapping ErrClosed, waits for
// the calls in progress (at most a commit), and closes the file if Open
// opened it; a Store made by New leaves its database open. A second Close
// returns nil. Close is safe to call concurrently with other methods.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.owned {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("boltstore: close %s: %w", s.path, err)
		}
	}
	return nil
}

func encode(rev dedup.Revision) []byte {
	rec := make([]byte, 1+len(rev))
	rec[0] = formatV1 // a one-byte uvarint
	copy(rec[1:], rev)
	return rec
}

func decode(rec []byte) (dedup.Revision, error) {
	v, n := binary.Uvarint(rec)
	if n <= 0 {
		return "", fmt.Errorf("%w: record of %d bytes has no format version", ErrCorrupt, len(rec))
	}
	if v != formatV1 {
		return "", fmt.Errorf("%w: record format version %d; this package reads version %d", ErrFormat, v, formatV1)
	}
	rev := dedup.Revision(rec[n:])
	if err := dedup.ValidRevision(rev); err != nil {
		return "", fmt.Errorf("%w: the record holds no valid revision (%v)", ErrCorrupt, err)
	}
	return rev, nil
}
