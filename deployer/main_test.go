package deployer_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testContext bounds how long a test waits for anything. Waits end on
// explicit signals; this is only the guard that turns a hang into a failure.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// watch is an io.Writer that keeps what is written and closes seen once the
// output contains want.
type watch struct {
	want string
	seen chan struct{}

	mu  sync.Mutex
	buf bytes.Buffer
}

func newWatch(want string) *watch { return &watch{want: want, seen: make(chan struct{})} }

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.want)
	w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
	}
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// await fails the test if ch is not closed within the test's guard.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-testContext(t).Done():
		t.Fatalf("gave up waiting for %s", what)
	}
}

// deployAsync starts d.Deploy in a goroutine and returns a func that waits
// for its result.
func deployAsync(ctx context.Context, t *testing.T, d dedup.Deployer, key string, rev dedup.Revision) func() error {
	errc := make(chan error, 1)
	go func() { errc <- d.Deploy(ctx, key, rev) }()
	return func() error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-testContext(t).Done():
			t.Fatalf("Deploy(%q, %q) did not return", key, rev)
			return nil
		}
	}
}
