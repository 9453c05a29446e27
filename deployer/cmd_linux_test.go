//go:build linux

package deployer_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/deployer"
)

// These tests check that no process is left behind. A process counts as
// gone once it has exited, whether or not its parent (often init) has
// reaped it yet; waitGone learns that from a pidfd, without polling.

const sysPidfdOpen = 434 // the same on every Linux architecture

// waitGone fails the test unless process pid exits within the test's guard.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno == syscall.ESRCH {
		return // exited and reaped
	}
	require.Zero(t, errno, "pidfd_open(%d): %v", pid, errno)
	defer syscall.Close(int(fd))

	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	require.NoError(t, err)
	defer syscall.Close(ep)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	require.NoError(t, syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, int(fd), &ev))
	deadline, _ := testContext(t).Deadline()
	for {
		n, err := syscall.EpollWait(ep, make([]syscall.EpollEvent, 1), int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		require.NoError(t, err)
		if n == 0 {
			t.Errorf("process %d still runs", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return
	}
}

var childLine = regexp.MustCompile(`(?m)^child (\d+)$`)

// childPids returns the pids of the lines "child PID" in out.
func childPids(t *testing.T, out string) []int {
	t.Helper()
	var pids []int
	for _, m := range childLine.FindAllStringSubmatch(out, -1) {
		pid, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	return pids
}

// fifo returns the path of a new named pipe, for a script's processes to
// tell each other they are ready.
func fifo(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(path, 0o600))
	return path
}

// TestCmdCancelKillsGroup stops a script whose children and grandchildren
// ignore SIGTERM, some holding its output and some not: after the grace,
// all of them must be killed, and Deploy must not return before the
// processes holding the output are.
func TestCmdCancelKillsGroup(t *testing.T) {
	script := `
trap '' TERM # an ignored signal stays ignored in children
echo "child $$"
sleep 1000 &
echo "child $!"
sleep 1000 </dev/null >/dev/null 2>&1 &
echo "child $!"
sh -c 'sleep 1000 & echo "child $!"; echo up > "$FIFO"; wait' &
echo "child $!"
read up < "$FIFO"
echo ready
wait
`
	w := newWatch("ready\n")
	c := &deployer.Cmd{
		Name:   "sh",
		Args:   []string{"-c", script},
		Env:    []string{"FIFO=" + fifo(t)},
		Stdout: w,
		Grace:  100 * time.Millisecond, // what is tested: SIGKILL comes after it
	}
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	result := deployAsync(ctx, t, c, "web", "v1")
	await(t, w.seen, "the ready line")
	cancel()
	err := result()

	require.ErrorIs(t, err, context.Canceled)
	var ee *deployer.ExitError
	require.ErrorAs(t, err, &ee)
	ws := ee.Err.Sys().(syscall.WaitStatus)
	assert.Equal(t, syscall.SIGKILL, ws.Signal(), "the script ended by %v", ws)
	pids := childPids(t, w.String())
	require.Len(t, pids, 5, "output:\n%s", w.String())
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

func TestCmdLeftoversAfterExit(t *testing.T) {
	tests := []struct {
		name   string
		script string
		grace  time.Duration
		output string // what the leftovers write before they go
	}{
		{
			name: "a child that holds the output gets SIGTERM",
			script: `
(trap 'echo "child got TERM"; exit 0' TERM; sh -c 'echo up > "$FIFO"; exec sleep 1000' & wait) &
echo "child $!"
read up < "$FIFO"
exit 0
`,
			// Long: a leftover that exits on SIGTERM ends the wait.
			grace:  time.Hour,
			output: "child got TERM",
		},
		{
			name: "a child that does not hold the output and ignores SIGTERM is killed",
			script: `
trap '' TERM
sleep 1000 </dev/null >/dev/null 2>&1 &
echo "child $!"
exit 0
`,
			// Long: a leftover that holds no output is not waited for.
			grace: time.Hour,
		},
		{
			name: "a child that holds the output and ignores SIGTERM is killed after the grace",
			script: `
trap '' TERM
sleep 1000 &
echo "child $!"
exit 4
`,
			grace: 100 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWatch("child ")
			c := &deployer.Cmd{
				Name:   "sh",
				Args:   []string{"-c", tt.script},
				Env:    []string{"FIFO=" + fifo(t)},
				Stdout: w,
				Grace:  tt.grace,
			}
			err := deployAsync(testContext(t), t, c, "web", "v1")()
			if code := exitCode(t, err); code != 0 {
				assert.Contains(t, tt.script, "exit "+strconv.Itoa(code))
			}
			assert.Contains(t, w.String(), tt.output)
			pids := childPids(t, w.String())
			require.NotEmpty(t, pids, "output:\n%s", w.String())
			for _, pid := range pids {
				waitGone(t, pid)
			}
		})
	}
}

// exitCode returns 0 for a nil err, the exit code of an *ExitError that is
// not a stop, and fails the test for anything else.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *deployer.ExitError
	require.ErrorAs(t, err, &ee)
	require.NoError(t, ee.Stopped)
	return ee.ExitCode()
}

// TestCmdEscapedOutputHolder has a child leave the process group and keep
// the output open: Deploy cannot kill it, but must not wait for it forever.
func TestCmdEscapedOutputHolder(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid program")
	}
	w := newWatch("child ")
	c := &deployer.Cmd{
		Name: "sh",
		Args: []string{"-c", `
setsid sh -c 'echo $$ > "$FIFO"; exec sleep 1000' &
read pid < "$FIFO"
echo "child $pid"
exit 0
`},
		Env:    []string{"FIFO=" + fifo(t)},
		Stdout: w,
		Grace:  50 * time.Millisecond, // what is tested: how long Deploy waits for the output
	}
	err := deployAsync(testContext(t), t, c, "web", "v1")()
	pids := childPids(t, w.String())
	require.Len(t, pids, 1, "output:\n%s", w.String())
	t.Cleanup(func() {
		_ = syscall.Kill(pids[0], syscall.SIGKILL)
		waitGone(t, pids[0])
	})
	require.ErrorIs(t, err, exec.ErrWaitDelay)
	var ee *deployer.ExitError
	assert.False(t, errors.As(err, &ee), "the run succeeded; got %v", err)
}
