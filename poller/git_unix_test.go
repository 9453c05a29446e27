//go:build unix

package poller_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// fakeGit writes an executable script standing in for git.
func fakeGit(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "git")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755))
	return path
}

// TestGitInvocation: git gets the arguments as separate words after "--",
// limited to branches and tags, and GIT_TERMINAL_PROMPT=0 even if Env says
// otherwise.
func TestGitInvocation(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	argsFile := filepath.Join(t.TempDir(), "args")
	path := fakeGit(t, `printf '%s\n' "$@" > "$ARGS_FILE"
[ "$GIT_TERMINAL_PROMPT" = 0 ] && printf '`+sha+`\trefs/heads/main\n'
exit 0
`)
	remote := "/srv/a repo; rm -rf /"
	src := &poller.GitSource{Remote: remote, Ref: "main", Git: path, Env: []string{"ARGS_FILE=" + argsFile, "GIT_TERMINAL_PROMPT=1"}}
	rev, err := src.Latest(testContext(t))
	require.NoError(t, err)
	require.Equal(t, dedup.Revision(sha), rev)
	args, err := os.ReadFile(argsFile)
	require.NoError(t, err)
	require.Equal(t, []string{"ls-remote", "--heads", "--tags", "--", remote, "refs/heads/main", "refs/tags/main", "refs/tags/main^{}"},
		strings.Split(strings.TrimSuffix(string(args), "\n"), "\n"))
}

// TestGitCancelKillsGroup: canceling stops git and what it started (here a
// child that holds its output open) without waiting for WaitDelay.
func TestGitCancelKillsGroup(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "started")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	path := fakeGit(t, `sleep 600 &
echo started > "$FIFO"
wait
`)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	src := &poller.GitSource{Remote: "/srv/repo", Ref: "main", Git: path, Env: []string{"FIFO=" + fifo}}
	done := make(chan error, 1)
	go func() {
		_, err := src.Latest(ctx)
		done <- err
	}()
	f, err := os.Open(fifo) // blocks until the script opens it for writing
	require.NoError(t, err)
	_, _ = f.Read(make([]byte, 16))
	f.Close()
	start := time.Now()
	cancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	// Without killing the group, the orphaned sleep would hold git's
	// output open until WaitDelay (2s) ran out.
	require.Less(t, time.Since(start), time.Second, "time for Latest to return after cancel")
}
