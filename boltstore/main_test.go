package boltstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// childEnv selects what the test binary does when a crash test re-executes
// it as a child process: "saver" or "holder" (see child).
const childEnv = "BOLTSTORE_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait of a test, so that a bug fails the test
// instead of hanging it.
const testTimeout = 20 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// open opens a Store at a new path in a temporary directory and closes it
// when the test ends.
func open(t testing.TB, opts ...boltstore.Option) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"), opts...)
	require.NoError(t, err, "Open")
	t.Cleanup(func() { require.NoError(t, s.Close(), "Close") })
	return s
}

// child is the main function of a child process. It returns the exit code.
//
// "saver" opens BOLTSTORE_PATH and saves in a loop from four goroutines
// until it is killed, writing "ack KEY REV" to stdout after each Save
// returned: each goroutine g saves a new key PREFIX-g-N and overwrites the
// key hot-g, with revision PREFIX-vN (N counts up, zero-padded, so that
// later revisions sort after earlier ones across rounds of PREFIX too).
//
// "holder" opens BOLTSTORE_PATH with the lock timeout BOLTSTORE_TIMEOUT
// (read-only if BOLTSTORE_READONLY is set), writes "open" and holds the
// file until its stdin ends; if the file is locked it writes "locked MS"
// with the milliseconds Open took.
func child(mode string) int {
	path := os.Getenv("BOLTSTORE_PATH")
	switch mode {
	case "saver":
		s, err := boltstore.Open(path, boltstore.WithLockTimeout(10*time.Second))
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("ready")
		prefix := os.Getenv("BOLTSTORE_PREFIX")
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for n := 0; ; n++ {
					rev := dedup.Revision(fmt.Sprintf("%s-v%08d", prefix, n))
					for _, key := range []string{fmt.Sprintf("%s-%d-%08d", prefix, g, n), fmt.Sprintf("hot-%d", g)} {
						if err := s.Save(context.Background(), key, rev); err != nil {
							fmt.Println("error", err)
							os.Exit(1)
						}
						// One write per line: lines from different
						// goroutines never interleave in the pipe.
						os.Stdout.WriteString("ack " + key + " " + string(rev) + "\n")
					}
				}
			})
		}
		wg.Wait()
		return 0
	case "holder":
		timeout, err := time.ParseDuration(os.Getenv("BOLTSTORE_TIMEOUT"))
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		opts := []boltstore.Option{boltstore.WithLockTimeout(timeout)}
		if os.Getenv("BOLTSTORE_READONLY") != "" {
			opts = append(opts, boltstore.ReadOnly())
		}
		start := time.Now()
		s, err := boltstore.Open(path, opts...)
		switch {
		case errors.Is(err, boltstore.ErrLocked):
			fmt.Println("locked", time.Since(start).Milliseconds(), err)
			return 0
		case err != nil:
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("open")
		io.Copy(io.Discard, os.Stdin)
		if err := s.Close(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		return 0
	}
	fmt.Println("unknown child mode", strconv.Quote(mode))
	return 2
}

// lines returns a channel of the lines of r, closed at its end.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
