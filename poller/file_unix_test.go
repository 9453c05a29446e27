//go:build unix

package poller_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// latestWithin calls src.Latest in a goroutine and fails the test if it
// does not return within a few seconds; unblock then makes it return, so
// that no goroutine is left behind.
func latestWithin(t *testing.T, ctx context.Context, src poller.Source, unblock func()) (dedup.Revision, error) {
	t.Helper()
	type result struct {
		rev dedup.Revision
		err error
	}
	done := make(chan result, 1)
	go func() {
		rev, err := src.Latest(ctx)
		done <- result{rev, err}
	}()
	select {
	case r := <-done:
		return r.rev, r.err
	case <-time.After(5 * time.Second):
		unblock()
		<-done
		t.Fatal("Latest blocked")
		return "", nil
	}
}

// unblockFIFO opens fifo for writing and closes it, which releases a reader
// blocked in open or read.
func unblockFIFO(fifo string) func() {
	return func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
	}
}

// TestFileNotRegular: a named pipe, a link to one, a device and a socket
// are clear errors, at once (issue 8, item 7: a named pipe blocked forever).
func TestFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(fifo, link))
	sock := filepath.Join(dir, "sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	defer syscall.Close(fd)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}))

	for _, tc := range []struct {
		name, path, want string
	}{
		{"named pipe", fifo, "named pipe"},
		{"link to a named pipe", link, "named pipe"},
		{"character device", os.DevNull, "character device"},
		{"socket", sock, "socket"},
		{"directory", dir, "directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.path); err != nil {
				t.Skipf("%s: %v", tc.path, err)
			}
			rev, err := latestWithin(t, context.Background(), poller.File(tc.path), unblockFIFO(fifo))
			require.Errorf(t, err, "Latest = %q", rev)
			require.Empty(t, rev)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "not a regular file")
		})
	}
}

// TestFileNamedPipeCanceled: Latest on a named pipe returns at once when its
// context is done, whatever the path is.
func TestFileNamedPipeCanceled(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := latestWithin(t, ctx, poller.File(fifo), unblockFIFO(fifo))
	require.Error(t, err)
}

// TestFileNamedPipeRun: a Poller watching a named pipe reports errors and
// Run returns when its context ends.
func TestFileNamedPipeRun(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	h := newHarness(t, nil)
	h.watch("web", poller.File(fifo), poller.Jitter(0), poller.Timeout(time.Second))
	h.run()
	h.advance()
	var e poller.Event
	select {
	case e = <-h.events:
	case <-time.After(5 * time.Second):
		unblockFIFO(fifo)()
		t.Fatal("the poll of a named pipe did not end")
	}
	require.Equal(t, poller.EventError, e.Kind)
	require.ErrorContains(t, e.Err, "named pipe")
	h.stop()
}
