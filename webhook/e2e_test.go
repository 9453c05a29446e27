package webhook_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

// The hook mode of the test binary: a git post-receive hook runs it with
// these in its environment, and it sends a signed GitHub push for each
// ref git updated.
const (
	sendHookEnv   = "WEBHOOK_TEST_HOOK_URL"
	hookSecretEnv = "WEBHOOK_TEST_HOOK_SECRET"
	hookRepoEnv   = "WEBHOOK_TEST_HOOK_REPO"
)

// sendHook reads post-receive's stdin ("<old> <new> <ref>" per line) and
// POSTs a GitHub push event for each line. It returns the exit status.
func sendHook(stdin io.Reader, stderr io.Writer) int {
	url, secret, repo := os.Getenv(sendHookEnv), os.Getenv(hookSecretEnv), os.Getenv(hookRepoEnv)
	lines := bufio.NewScanner(stdin)
	status := 0
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) != 3 {
			fmt.Fprintf(stderr, "webhook hook: bad line %q\n", lines.Text())
			return 2
		}
		var push struct {
			Ref        string `json:"ref"`
			Before     string `json:"before"`
			After      string `json:"after"`
			Deleted    bool   `json:"deleted"`
			Repository struct {
				FullName string `json:"full_name"`
			} `json:"repository"`
		}
		push.Before, push.After, push.Ref = f[0], f[1], f[2]
		push.Deleted = strings.Trim(push.After, "0") == ""
		push.Repository.FullName = repo
		body, err := json.Marshal(push)
		if err != nil {
			fmt.Fprintln(stderr, "webhook hook:", err)
			return 2
		}
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			fmt.Fprintln(stderr, "webhook hook:", err)
			return 2
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", rand.Text())
		req.Header.Set("X-Hub-Signature-256", "sha256="+hexHMAC(secret, body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Fprintln(stderr, "webhook hook:", err)
			return 1
		}
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(stderr, "webhook hook: %s %s", resp.Status, reply)
		if resp.StatusCode/100 != 2 {
			status = 1
		}
	}
	return status
}

// requireGit returns the git executable; without one it skips, or fails
// when CI is set.
func requireGit(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("git not installed (scripts/test.sh installs it): %v", err)
		}
		t.Skip("git not installed")
	}
	return path
}

func runGit(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "init.defaultBranch=main", "-c", "user.name=Test", "-c", "user.email=test@example.com"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %s: %s", strings.Join(args, " "), out)
	return strings.TrimSpace(string(out))
}

// TestGitPushDeploys is the whole path with real parts: git push to a bare
// repository, whose post-receive hook sends a signed GitHub push to the
// Handler, which makes a Poller poll the repository with `git ls-remote`,
// which triggers a Manager, which deploys the pushed commit.
func TestGitPushDeploys(t *testing.T) {
	requireGit(t)
	const secret = "e2e-secret"
	dir := t.TempDir()
	bare, work := filepath.Join(dir, "web.git"), filepath.Join(dir, "work")
	runGit(t, dir, nil, "init", "-q", "--bare", bare)
	runGit(t, dir, nil, "init", "-q", work)
	runGit(t, work, nil, "remote", "add", "origin", bare)

	deployed := make(chan dedup.Revision, 16)
	m, err := dedup.New(dedup.DeployFunc(func(_ context.Context, key string, rev dedup.Revision) error {
		deployed <- rev
		return nil
	}))
	require.NoError(t, err)
	defer closeNow(m)
	p := poller.New(m)
	// An hour between polls: within the test only the webhook polls.
	require.NoError(t, p.Watch("web", poller.Git(bare, "main"), poller.Every(time.Hour)))
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		stop()
		require.NoError(t, <-ran)
	}()

	h, err := webhook.New(webhook.GitHub(secret), webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}}, p)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	// The hook runs this test binary in its hook mode (see TestMain); the
	// mode and its settings are in the script, and -test.run matches no
	// test in case the environment is lost on the way.
	exe, err := os.Executable()
	require.NoError(t, err)
	for _, s := range []string{exe, srv.URL} {
		require.NotContains(t, s, "'", "the hook quotes it in single quotes")
	}
	hook := fmt.Sprintf("#!/bin/sh\n%s='%s' %s='%s' %s='acme/web' exec '%s' -test.run='^$'\n",
		sendHookEnv, srv.URL, hookSecretEnv, secret, hookRepoEnv, exe)
	require.NoError(t, os.WriteFile(filepath.Join(bare, "hooks", "post-receive"), []byte(hook), 0o755))

	for i := range 3 {
		require.NoError(t, os.WriteFile(filepath.Join(work, "VERSION"), []byte(fmt.Sprintln(i)), 0o644))
		runGit(t, work, nil, "add", "VERSION")
		runGit(t, work, nil, "commit", "-q", "-m", fmt.Sprint("release ", i))
		sha := runGit(t, work, nil, "rev-parse", "HEAD")
		out := runGit(t, work, nil, "push", "-q", "origin", "main")
		require.Contains(t, out, `"result":"polled"`, "the hook's delivery")
		select {
		case rev := <-deployed:
			require.Equal(t, dedup.Revision(sha), rev, "push %d deployed another commit; push output:\n%s", i, out)
		case <-testContext(t).Done():
			t.Fatalf("push %d: nothing deployed; push output:\n%s", i, out)
		}
		t.Logf("push %d deployed %s", i, sha)
	}

	// Another branch: not routed. Deleting it: answered 200. Neither
	// deploys.
	out := runGit(t, work, nil, "push", "origin", "main:refs/heads/tmp")
	require.Contains(t, out, `"reason":"no route for acme/web refs/heads/tmp"`)
	out = runGit(t, work, nil, "push", "origin", "--delete", "tmp")
	require.Contains(t, out, `"reason":"acme/web refs/heads/tmp deleted"`)
	require.Empty(t, deployed)
}
