//go:build unix

package boltstore_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// proc is a child process of the test: the test binary re-executed in a
// child mode (see child in main_test.go).
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   <-chan string // stdout, line by line; closed when it ends
}

func startChild(t *testing.T, mode string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, stdin: stdin, out: lines(stdout)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		p.drain()
		_ = cmd.Wait()
	})
	return p
}

// line returns the next line of the child's output.
func (p *proc) line(ctx context.Context, t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.out:
		require.True(t, ok, "child's output ended")
		return l
	case <-ctx.Done():
		t.Fatalf("no line from the child: %v", ctx.Err())
		return ""
	}
}

// drain reads the rest of the child's output, to its end, and returns it.
func (p *proc) drain() []string {
	var rest []string
	for l := range p.out {
		rest = append(rest, l)
	}
	return rest
}

// A child saves in a loop and the test kill -9s it at random moments, over
// and over: after each kill, every Save the child acknowledged is in the
// file, the file passes bbolt's consistency check, and it opens for the
// next child.
func TestKill9(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := boltstore.Open(path) // so that a kill before the first child opens it finds a file
	require.NoError(t, err)
	require.NoError(t, s.Close())
	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, 9))
	const budget, minRounds, maxRounds = 8 * time.Second, 10, 200
	start := time.Now()
	rounds, acked, beforeReady := 0, 0, 0
	hot := map[string]string{} // hot-g: the newest revision acknowledged
	for rounds < minRounds || (rounds < maxRounds && time.Since(start) < budget) {
		prefix := fmt.Sprintf("r%03d", rounds)
		p := startChild(t, "saver", "BOLTSTORE_PATH="+path, "BOLTSTORE_PREFIX="+prefix)
		// A kill in one round in four may land before the child opened
		// the file; the others land while it saves, at most 30ms in.
		var kill *time.Timer
		if rnd.IntN(4) == 0 {
			beforeReady++
			kill = time.AfterFunc(time.Duration(rnd.IntN(20))*time.Millisecond, func() { p.cmd.Process.Kill() })
		} else {
			l := p.line(ctx, t)
			require.Equalf(t, "ready", l, "round %d: first line of the child", rounds)
			kill = time.AfterFunc(time.Duration(rnd.IntN(30_000))*time.Microsecond, func() { p.cmd.Process.Kill() })
		}
		out := p.drain()
		kill.Stop()
		err := p.cmd.Wait()
		require.Errorf(t, err, "round %d: the child exited by itself: %v", rounds, out)
		ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		require.Truef(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "round %d: child ended with %v, not by kill -9; output: %v", rounds, err, out)

		// What the child acknowledged, by key.
		want := map[string]string{}
		for _, l := range out {
			f := strings.Fields(l)
			if len(f) == 0 || f[0] == "ready" {
				continue
			}
			require.Truef(t, len(f) == 3 && f[0] == "ack", "round %d: child wrote %q", rounds, l)
			want[f[1]] = f[2]
			if strings.HasPrefix(f[1], "hot-") {
				hot[f[1]] = f[2]
			}
		}
		acked += len(want)

		checkFile(t, path)
		s, err := boltstore.Open(path, boltstore.WithLockTimeout(5*time.Second))
		require.NoErrorf(t, err, "round %d: Open after kill -9", rounds)
		for key, rev := range want {
			got, ok, err := s.Load(ctx, key)
			require.NoErrorf(t, err, "round %d: Load(%q)", rounds, key)
			require.Truef(t, ok, "round %d: acknowledged Save(%q, %q) lost (seed %d)", rounds, key, rev, seed)
			if strings.HasPrefix(key, "hot-") {
				// Overwritten in place: at least as new as acknowledged.
				require.GreaterOrEqualf(t, string(got), rev, "round %d: Load(%q) (seed %d)", rounds, key, seed)
			} else {
				require.Equalf(t, dedup.Revision(rev), got, "round %d: Load(%q) (seed %d)", rounds, key, seed)
			}
		}
		for key, rev := range hot {
			got, ok, err := s.Load(ctx, key)
			require.NoError(t, err)
			require.Truef(t, ok && string(got) >= rev, "round %d: Load(%q) = %q, %v; acknowledged %q earlier (seed %d)", rounds, key, got, ok, rev, seed)
		}
		require.NoError(t, s.Close())
		rounds++
	}
	require.Positive(t, acked, "no Save was acknowledged in %d rounds", rounds)
	t.Logf("%d kill -9s (%d timed from the child's start, maybe before it opened the file) in %v: %d acknowledged saves, all there, file consistent",
		rounds, beforeReady, time.Since(start).Round(time.Millisecond), acked)
}

// checkFile runs bbolt's consistency check on the file at path.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	require.NoError(t, err, "bbolt.Open after kill -9")
	defer db.Close()
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check of %s: %v", path, err)
		}
		return nil
	}))
}

// Processes racing for one file: one wins, the other gets ErrLocked within
// the lock timeout, never a hang, also while the winner is stopped
// (SIGSTOP); once the winner is killed, the file is free at once. Readers
// (ReadOnly) share the file with each other but not with a writer.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	const timeout = 300 * time.Millisecond
	holder := func() *proc {
		return startChild(t, "holder", "BOLTSTORE_PATH="+path, "BOLTSTORE_TIMEOUT="+timeout.String())
	}
	// locked checks that p reported ErrLocked within the bound.
	locked := func(p *proc, what string, l string) {
		t.Helper()
		f := strings.Fields(l)
		require.Truef(t, len(f) >= 2 && f[0] == "locked", "%s: child wrote %q; want locked", what, l)
		ms, err := strconv.Atoi(f[1])
		require.NoError(t, err)
		took := time.Duration(ms) * time.Millisecond
		require.GreaterOrEqualf(t, took, timeout-60*time.Millisecond, "%s: gave up after %v, before the timeout %v", what, took, timeout)
		require.Lessf(t, took, timeout+2*time.Second, "%s: gave up after %v; timeout %v", what, took, timeout)
		require.Containsf(t, l, path, "%s: the error names the file", what)
		p.drain()
		require.NoError(t, p.cmd.Wait(), what)
	}

	a, b := holder(), holder()
	la, lb := a.line(ctx, t), b.line(ctx, t)
	var winner, loser *proc
	var ll string
	switch {
	case la == "open":
		winner, loser, ll = a, b, lb
	case lb == "open":
		winner, loser, ll = b, a, la
	default:
		t.Fatalf("neither process opened the file: %q, %q", la, lb)
	}
	locked(loser, "the process that lost the race", ll)

	require.NoError(t, winner.cmd.Process.Signal(syscall.SIGSTOP))
	c := holder()
	locked(c, "a process beside a stopped holder", c.line(ctx, t))

	require.NoError(t, winner.cmd.Process.Kill()) // SIGKILL ends a stopped process too
	winner.drain()
	_ = winner.cmd.Wait()
	d := holder()
	require.Equal(t, "open", d.line(ctx, t), "a process after the holder was killed")

	// Read-only processes share the file with each other, not with a
	// writer.
	reader := func() *proc {
		return startChild(t, "holder", "BOLTSTORE_PATH="+path, "BOLTSTORE_TIMEOUT="+timeout.String(), "BOLTSTORE_READONLY=1")
	}
	r := reader()
	locked(r, "a reader beside a writer", r.line(ctx, t))
	require.NoError(t, d.stdin.Close())
	d.drain()
	require.NoError(t, d.cmd.Wait(), "the holder closes the file and exits")
	r1, r2 := reader(), reader()
	require.Equal(t, "open", r1.line(ctx, t), "a reader")
	require.Equal(t, "open", r2.line(ctx, t), "a second reader beside the first")
	w := holder()
	locked(w, "a writer beside readers", w.line(ctx, t))
	for _, r := range []*proc{r1, r2} {
		require.NoError(t, r.stdin.Close())
		r.drain()
		require.NoError(t, r.cmd.Wait(), "a reader closes the file and exits")
	}
}
