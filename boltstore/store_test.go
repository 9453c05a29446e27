package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
)

func requireLoad(t *testing.T, s *boltstore.Store, key string, want dedup.Revision, wantOK bool) {
	t.Helper()
	rev, ok, err := s.Load(context.Background(), key)
	require.NoErrorf(t, err, "Load(%q)", key)
	require.Equalf(t, wantOK, ok, "Load(%q) ok", key)
	require.Equalf(t, want, rev, "Load(%q)", key)
}

func TestSaveLoadDeleteReopen(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := boltstore.Open(path)
	require.NoError(t, err, "Open")
	require.Equal(t, path, s.Path())

	requireLoad(t, s, "web", "", false)
	require.NoError(t, s.Save(ctx, "web", "4f2a9c1"))
	require.NoError(t, s.Save(ctx, "api", "sha256:0123"))
	require.NoError(t, s.Save(ctx, "web", "77e0b3d")) // overwrites
	requireLoad(t, s, "web", "77e0b3d", true)
	require.NoError(t, s.Delete(ctx, "api"))
	require.NoError(t, s.Delete(ctx, "never-saved"), "Delete of a missing key")
	requireLoad(t, s, "api", "", false)
	require.NoError(t, s.Close())

	s, err = boltstore.Open(path)
	require.NoError(t, err, "reopen")
	defer s.Close()
	requireLoad(t, s, "web", "77e0b3d", true)
	requireLoad(t, s, "api", "", false)
}

func TestInvalidInput(t *testing.T) {
	ctx := testContext(t)
	s := open(t)
	for _, bad := range []string{"", "a\nb", "\x00", "bad\xffutf8", strings.Repeat("k", dedup.MaxLen+1)} {
		_, _, err := s.Load(ctx, bad)
		require.ErrorIsf(t, err, dedup.ErrInvalid, "Load(%q)", bad)
		require.ErrorIsf(t, s.Save(ctx, bad, "v1"), dedup.ErrInvalid, "Save(%q, v1)", bad)
		require.ErrorIsf(t, s.Save(ctx, "web", dedup.Revision(bad)), dedup.ErrInvalid, "Save(web, %q)", bad)
		require.ErrorIsf(t, s.Delete(ctx, bad), dedup.ErrInvalid, "Delete(%q)", bad)
	}
	// The longest valid key and revision fit.
	long := strings.Repeat("k", dedup.MaxLen)
	require.NoError(t, s.Save(ctx, long, dedup.Revision(long)))
	requireLoad(t, s, long, dedup.Revision(long), true)

	dir := t.TempDir()
	for name, opt := range map[string]boltstore.Option{
		"zero lock timeout":     boltstore.WithLockTimeout(0),
		"negative lock timeout": boltstore.WithLockTimeout(-time.Second),
		"empty bucket":          boltstore.WithBucket(""),
		"negative batch delay":  boltstore.WithBatch(-1, 10),
		"zero batch size":       boltstore.WithBatch(time.Millisecond, 0),
	} {
		_, err := boltstore.Open(filepath.Join(dir, "x.db"), opt)
		require.ErrorIsf(t, err, dedup.ErrInvalid, "Open with %s", name)
	}
	_, err := os.Stat(filepath.Join(dir, "x.db"))
	require.ErrorIs(t, err, os.ErrNotExist, "Open with a bad option created the file")

	_, err = boltstore.New(nil, "b")
	require.ErrorIs(t, err, dedup.ErrInvalid, "New(nil)")
}

func TestClosed(t *testing.T) {
	ctx := testContext(t)
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"))
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, "web", "v1"))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "second Close")

	_, _, err = s.Load(ctx, "web")
	require.ErrorIs(t, err, boltstore.ErrClosed, "Load after Close")
	require.ErrorIs(t, s.Save(ctx, "web", "v2"), boltstore.ErrClosed, "Save after Close")
	require.ErrorIs(t, s.Delete(ctx, "web"), boltstore.ErrClosed, "Delete after Close")
	require.NotErrorIs(t, s.Save(ctx, "web", "v2"), dedup.ErrClosed, "boltstore.ErrClosed is its own")
}

// Close waits for the calls in progress: every Save either completes
// durably or reports ErrClosed.
func TestCloseDuringSaves(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := boltstore.Open(path)
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		saved []string
	)
	started := make(chan struct{}, 16)
	for i := range 16 {
		wg.Go(func() {
			started <- struct{}{}
			key := fmt.Sprintf("k%d", i)
			err := s.Save(ctx, key, "v1")
			if err == nil {
				mu.Lock()
				saved = append(saved, key)
				mu.Unlock()
				return
			}
			assert.ErrorIsf(t, err, boltstore.ErrClosed, "Save(%q) during Close", key) // require would end only this goroutine
		})
	}
	for range 16 {
		<-started
	}
	require.NoError(t, s.Close())
	wg.Wait()

	s, err = boltstore.Open(path)
	require.NoError(t, err)
	defer s.Close()
	for _, key := range saved {
		requireLoad(t, s, key, "v1", true)
	}
}

func TestContext(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, s.Save(ctx, "web", "v1"), context.Canceled, "Save with a done ctx")
	require.ErrorIs(t, s.Delete(ctx, "web"), context.Canceled, "Delete with a done ctx")
	_, _, err := s.Load(ctx, "web")
	require.ErrorIs(t, err, context.Canceled, "Load with a done ctx")
	requireLoad(t, s, "web", "", false)
}

// scripted is a context whose Err answers what its function says for the
// n-th call (from 1). Save calls Err once when it has counted itself among
// the Saves in progress, and once each time its commit function runs.
type scripted struct {
	context.Context
	calls atomic.Int32
	err   func(n int32) error
}

func (c *scripted) Err() error { return c.err(c.calls.Add(1)) }

// A ctx that ends while its Save waits in a batch makes that Save write
// nothing and return ctx.Err(); the other Saves of the batch are written.
func TestContextEndsInBatch(t *testing.T) {
	ctx := testContext(t)
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	defer db.Close()
	// A batch runs when its second Save arrives, never by its timer.
	db.MaxBatchDelay, db.MaxBatchSize = time.Hour, 2
	s, err := boltstore.New(db, "deploys")
	require.NoError(t, err)
	defer s.Close()

	// The first Save commits alone and is held inside its commit, so that
	// the next two go through bbolt's Batch, together.
	inCommit, release := make(chan struct{}), make(chan struct{})
	first := &scripted{Context: ctx, err: func(n int32) error {
		if n == 2 {
			close(inCommit)
			<-release
		}
		return nil
	}}
	counted := make(chan struct{}, 2)
	ending := &scripted{Context: ctx, err: func(n int32) error {
		if n == 1 {
			counted <- struct{}{}
			return nil
		}
		return context.Canceled // ended while it waited for its batch
	}}
	live := &scripted{Context: ctx, err: func(n int32) error {
		if n == 1 {
			counted <- struct{}{}
		}
		return nil
	}}
	errs := make(chan error, 3)
	go func() { errs <- s.Save(first, "first", "v1") }()
	<-inCommit
	go func() { errs <- s.Save(ending, "web", "v1") }()
	go func() { errs <- s.Save(live, "api", "a1") }()
	<-counted
	<-counted
	close(release)

	var canceled, ok int
	for range 3 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, context.Canceled):
			canceled++
		default:
			t.Fatalf("Save = %v; want nil or context.Canceled", err)
		}
	}
	require.Equal(t, 1, canceled, "Saves that returned context.Canceled")
	require.Equal(t, 2, ok, "Saves that succeeded")
	requireLoad(t, s, "web", "", false)
	requireLoad(t, s, "api", "a1", true)
	requireLoad(t, s, "first", "v1", true)
	require.GreaterOrEqual(t, ending.calls.Load(), int32(3), "calls of the ending Save's Err: counted, in the batch, alone")
}

// Many keys saved at once share commits and all of them land.
func TestConcurrentSaves(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := boltstore.Open(path)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for n := range 5 {
				if !assert.NoError(t, s.Save(ctx, fmt.Sprintf("k%d", i), dedup.Revision(fmt.Sprintf("v%d", n)))) {
					return // require would end only this goroutine
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, s.Close())
	s, err = boltstore.Open(path)
	require.NoError(t, err)
	defer s.Close()
	for i := range 64 {
		requireLoad(t, s, fmt.Sprintf("k%d", i), "v4", true)
	}
}

// Two Opens of one file in one process exclude each other as two processes
// do: the second gets ErrLocked, naming the path, after the timeout.
func TestLockedInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := boltstore.Open(path)
	require.NoError(t, err)
	defer s.Close()
	start := time.Now()
	_, err = boltstore.Open(path, boltstore.WithLockTimeout(100*time.Millisecond))
	took := time.Since(start)
	require.ErrorIs(t, err, boltstore.ErrLocked)
	require.ErrorContains(t, err, path)
	require.Less(t, took, 5*time.Second, "Open of a locked file took %v with a 100ms timeout", took)
}

func TestReadOnly(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")

	_, err := boltstore.Open(path, boltstore.ReadOnly())
	require.ErrorIs(t, err, os.ErrNotExist, "read-only Open of a missing file")

	w, err := boltstore.Open(path)
	require.NoError(t, err)
	require.NoError(t, w.Save(ctx, "web", "v1"))
	// A writer holds the file exclusively: a reader is locked out.
	_, err = boltstore.Open(path, boltstore.ReadOnly(), boltstore.WithLockTimeout(50*time.Millisecond))
	require.ErrorIs(t, err, boltstore.ErrLocked, "read-only Open beside a writer")
	require.NoError(t, w.Close())

	// Readers share the file, and lock a writer out.
	r1, err := boltstore.Open(path, boltstore.ReadOnly())
	require.NoError(t, err)
	defer r1.Close()
	r2, err := boltstore.Open(path, boltstore.ReadOnly())
	require.NoError(t, err, "second read-only Open beside the first")
	defer r2.Close()
	requireLoad(t, r1, "web", "v1", true)
	requireLoad(t, r2, "web", "v1", true)
	_, err = boltstore.Open(path, boltstore.WithLockTimeout(50*time.Millisecond))
	require.ErrorIs(t, err, boltstore.ErrLocked, "writer Open beside a reader")

	require.ErrorIs(t, r1.Save(ctx, "web", "v2"), boltstore.ErrReadOnly)
	require.ErrorIs(t, r1.Delete(ctx, "web"), boltstore.ErrReadOnly)

	// A read-only Store of a database without the bucket knows no key.
	r3, err := boltstore.Open(path, boltstore.ReadOnly(), boltstore.WithBucket("other"))
	require.NoError(t, err)
	defer r3.Close()
	requireLoad(t, r3, "web", "", false)
}

// A Store made by New lives in a bucket of the caller's database and leaves
// the database open when closed.
func TestNew(t *testing.T) {
	ctx := testContext(t)
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "app.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("app"))
		if err != nil {
			return err
		}
		return b.Put([]byte("web"), []byte("not a record"))
	}))

	_, err = boltstore.New(db, "bad\nname")
	require.ErrorIs(t, err, dedup.ErrInvalid, "New with a bad bucket name")

	s, err := boltstore.New(db, "deploys")
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, "web", "v1"))
	requireLoad(t, s, "web", "v1", true)
	require.NoError(t, s.Close())
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, "not a record", string(tx.Bucket([]byte("app")).Get([]byte("web"))), "the app's own bucket")
		return nil
	}), "db after Store.Close")

	// The bucket is created again if the caller dropped it.
	s, err = boltstore.New(db, "deploys")
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte("deploys")) }))
	requireLoad(t, s, "web", "", false)
	require.NoError(t, s.Save(ctx, "web", "v2"))
	requireLoad(t, s, "web", "v2", true)

	require.NoError(t, db.Close())
	_, _, err = s.Load(ctx, "web")
	require.Error(t, err, "Load after the caller closed the db")
	_, err = boltstore.New(db, "deploys")
	require.ErrorIs(t, err, boltstore.ErrClosed, "New on a closed db")
}

// Records carry a format version; records this package cannot read are
// errors naming the file and key, never a misread.
func TestRecordFormat(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	defer db.Close()
	s, err := boltstore.New(db, "deploys")
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Save(ctx, "web", "4f2a9c1"))
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, "\x014f2a9c1", string(tx.Bucket([]byte("deploys")).Get([]byte("web"))), "version 1 record")
		return nil
	}))

	for _, c := range []struct {
		rec  string
		want error
	}{
		{"\x02v1", boltstore.ErrFormat},
		{"\x80\x01v1", boltstore.ErrFormat}, // version 128
		{"", boltstore.ErrCorrupt},
		{"\x80", boltstore.ErrCorrupt}, // a version cut short
		{"\x01", boltstore.ErrCorrupt}, // no revision
		{"\x01v\n1", boltstore.ErrCorrupt},
		{"\x01" + strings.Repeat("v", dedup.MaxLen+1), boltstore.ErrCorrupt},
		// Longer than any record can be: not read at all.
		{"\x01" + strings.Repeat("v", dedup.MaxLen+10), boltstore.ErrCorrupt},
	} {
		require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("deploys")).Put([]byte("odd"), []byte(c.rec))
		}))
		_, _, err := s.Load(ctx, "odd")
		require.ErrorIsf(t, err, c.want, "Load of record %q", c.rec)
		require.ErrorContainsf(t, err, path, "Load of record %q", c.rec)
		require.ErrorContainsf(t, err, `"odd"`, "Load of record %q", c.rec)
		if len(c.rec) > dedup.MaxLen+10 {
			require.ErrorContainsf(t, err, fmt.Sprintf("record of %d bytes", len(c.rec)), "Load of a record longer than any version's")
		}
	}
	requireLoad(t, s, "web", "4f2a9c1", true) // the other records are fine
}

// A file that is not a store, or is damaged, is an error wrapping
// ErrCorrupt that names the path, never a panic, and leaves the path free
// to open again.
func TestCorruptFile(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := boltstore.Open(good)
	require.NoError(t, err)
	// One Save at a time: one commit each, so the file's layout, and what
	// the flipped bytes below hit, is the same on every run.
	for i := range 500 {
		require.NoError(t, s.Save(ctx, fmt.Sprintf("key-%04d", i), "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"))
	}
	require.NoError(t, s.Close())
	data, err := os.ReadFile(good)
	require.NoError(t, err)

	rnd := rand.New(rand.NewPCG(1, 2))
	garbage := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	cases := map[string][]byte{
		"one byte":        {1},
		"text":            []byte("version: 3\nservices: {}\n"),
		"a page of noise": garbage(4096),
		"noise":           garbage(100_000),
		"two pages kept":  data[:8192],
		"half kept":       data[:len(data)/2],
	}
	path := filepath.Join(dir, "bad.db")
	for name, content := range cases {
		require.NoError(t, os.WriteFile(path, content, 0o600))
		_, err := boltstore.Open(path, boltstore.WithLockTimeout(50*time.Millisecond))
		require.ErrorIsf(t, err, boltstore.ErrCorrupt, "Open of %s", name)
		require.ErrorContainsf(t, err, path, "Open of %s", name)
	}

	// Damaged pages: bytes flipped past the two header pages. Open or Load
	// may catch it, or the damage hit nothing a Load reads; nothing panics.
	caught := 0
	for round := range 20 {
		d := append([]byte(nil), data...)
		for range 16 {
			d[8192+rnd.IntN(len(d)-8192)] ^= byte(1 + rnd.IntN(255))
		}
		require.NoError(t, os.WriteFile(path, d, 0o600))
		s, err := boltstore.Open(path, boltstore.WithLockTimeout(50*time.Millisecond))
		if err != nil {
			require.ErrorIsf(t, err, boltstore.ErrCorrupt, "round %d: Open", round)
			require.ErrorContainsf(t, err, path, "round %d: Open", round)
			caught++
			continue
		}
		for i := range 500 {
			if _, _, err := s.Load(ctx, fmt.Sprintf("key-%04d", i)); err != nil {
				require.Truef(t, errors.Is(err, boltstore.ErrCorrupt) || errors.Is(err, boltstore.ErrFormat), "round %d: Load = %v", round, err)
				caught++
			}
		}
		require.NoError(t, s.Close())
	}
	require.Positive(t, caught, "damage found by Open or Load in 20 damaged files")

	require.NoError(t, os.Mkdir(filepath.Join(dir, "adir"), 0o700))
	_, err = boltstore.Open(filepath.Join(dir, "adir"))
	require.Error(t, err, "Open of a directory")
	require.ErrorContains(t, err, filepath.Join(dir, "adir"))
	_, err = boltstore.Open(filepath.Join(dir, "missing", "state.db"))
	require.ErrorIs(t, err, os.ErrNotExist, "Open in a missing directory")
}

// The Store does what it is for: a Manager that restarts with it does not
// deploy again what is live.
func TestRestartDeploysNothingLive(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	var deploys []string
	var mu sync.Mutex
	deploy := dedup.DeployFunc(func(_ context.Context, key string, rev dedup.Revision) error {
		mu.Lock()
		defer mu.Unlock()
		deploys = append(deploys, key+"@"+string(rev))
		return nil
	})
	run := func() []dedup.Outcome {
		store, err := boltstore.Open(path)
		require.NoError(t, err)
		defer func() { require.NoError(t, store.Close()) }()
		m, err := dedup.New(deploy, dedup.WithStore(store))
		require.NoError(t, err)
		defer func() { require.NoError(t, m.Close(ctx)) }()
		var outs []dedup.Outcome
		for _, kr := range [][2]string{{"web", "v1"}, {"api", "a1"}} {
			res, err := m.Deploy(ctx, kr[0], dedup.Revision(kr[1]))
			require.NoError(t, err)
			outs = append(outs, res.Outcome)
		}
		return outs
	}
	require.Equal(t, []dedup.Outcome{dedup.Deployed, dedup.Deployed}, run(), "first run")
	require.Equal(t, []dedup.Outcome{dedup.Unchanged, dedup.Unchanged}, run(), "after a restart")
	require.Equal(t, []string{"web@v1", "api@a1"}, deploys)
}
