package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/promdedup"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctxT(t).Done():
		t.Fatal("nothing received")
		panic("unreachable")
	}
}

func newTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// gitRepo makes a bare repository with one commit on main and returns its
// path and the commit. It fails without git when CI is set, else skips.
func gitRepo(t *testing.T) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("git not installed: %v", err)
		}
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	git := func(dir string, args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "init.defaultBranch=main", "-c", "user.name=Test", "-c", "user.email=test@example.com"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return strings.TrimSpace(string(out))
	}
	bare, work := filepath.Join(dir, "web.git"), filepath.Join(dir, "work")
	git(dir, "init", "-q", "--bare", bare)
	git(dir, "init", "-q", work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "VERSION"), []byte("1\n"), 0o644))
	git(work, "add", "VERSION")
	git(work, "commit", "-q", "-m", "v1")
	git(work, "push", "-q", bare, "main")
	return bare, git(work, "rev-parse", "HEAD")
}

const testSecret = "s3cr3t"

// serve runs run on a local port; the channel yields what run returned.
func serve(t *testing.T, ctx context.Context, cfg config, d dedup.Deployer) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, cfg, d, newTestLogger(t)) }()
	return "http://" + ln.Addr().String(), done
}

func testConfig(remote string) config {
	// An hour between polls: within a test only deliveries poll.
	return config{secret: testSecret, remote: remote, repo: "acme/web", ref: "main", key: "web", every: time.Hour, grace: time.Minute}
}

// push sends a GitHub push of after to url, signed with secret, on a
// connection of its own so that none outlives the test.
func push(t *testing.T, url, secret, after string) (int, string) {
	t.Helper()
	body := []byte(`{"ref":"refs/heads/main","after":"` + after + `","repository":{"full_name":"acme/web"}}`)
	req, err := http.NewRequestWithContext(ctxT(t), "POST", url+"/hooks/github", bytes.NewReader(body))
	require.NoError(t, err)
	req.Close = true
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", after)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(reply)
}

func TestPushDeploys(t *testing.T) {
	remote, sha := gitRepo(t)
	d := new(deduptest.Deployer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	url, done := serve(t, ctx, testConfig(remote), d)

	code, reply := push(t, url, "guess", sha)
	assert.Equal(t, http.StatusUnauthorized, code, reply)
	code, reply = push(t, url, testSecret, sha)
	require.Equal(t, http.StatusAccepted, code, reply)
	assert.Contains(t, reply, `"result":"polled"`)

	call, err := d.Next(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, "web", call.Key)
	assert.Equal(t, dedup.Revision(sha), call.Revision, "the poll read the branch")
	call.Finish(nil)

	stop()
	require.NoError(t, receive(t, done))
	assert.Len(t, d.Calls(), 1, "the forged delivery deployed")
}

func TestShutdownWaitsForDeploys(t *testing.T) {
	remote, sha := gitRepo(t)
	d := new(deduptest.Deployer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	url, done := serve(t, ctx, testConfig(remote), d)

	code, reply := push(t, url, testSecret, sha)
	require.Equal(t, http.StatusAccepted, code, reply)
	call, err := d.Next(ctxT(t))
	require.NoError(t, err)

	stop() // as SIGTERM does
	call.Finish(nil)
	require.NoError(t, receive(t, done))
	assert.NoError(t, call.Err(), "shutdown canceled a deploy it had time to wait for")
}

func TestShutdownCancelsDeploysAfterGrace(t *testing.T) {
	remote, sha := gitRepo(t)
	d := new(deduptest.Deployer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cfg := testConfig(remote)
	cfg.grace = time.Nanosecond
	url, done := serve(t, ctx, cfg, d)

	code, reply := push(t, url, testSecret, sha)
	require.Equal(t, http.StatusAccepted, code, reply)
	call, err := d.Next(ctxT(t))
	require.NoError(t, err)

	stop() // the deploy never finishes by itself
	err = receive(t, done)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, call.Err(), context.Canceled)
}

func TestBadConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := testConfig("-upload-pack=evil")
	err = run(context.Background(), ln, cfg, new(deduptest.Deployer), newTestLogger(t))
	assert.ErrorIs(t, err, dedup.ErrInvalid)
	_, err = net.Dial("tcp", ln.Addr().String())
	assert.Error(t, err, "the listener was left open")
}

func TestSimulatedDeploy(t *testing.T) {
	deploy := simulatedDeploy(time.Hour, newTestLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := deploy(ctx, "web", "v1")
	assert.ErrorIs(t, err, context.Canceled)
	assert.NoError(t, simulatedDeploy(0, newTestLogger(t))(context.Background(), "web", "v1"))
}

// The server shows a read-only status page of its Manager (JSON for
// scripts, an HTML table for people) and its metrics.
func TestStatusPageAndMetrics(t *testing.T) {
	metrics := promdedup.New()
	m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }),
		dedup.WithObserver(metrics.Observe))
	require.NoError(t, err)
	defer m.Close(ctxT(t))
	metrics.SetSource(m)
	_, err = m.Deploy(ctxT(t), "web", "4f2a9c1")
	require.NoError(t, err)
	srv := httptest.NewServer(newMux(http.NotFoundHandler(), m, metrics))
	defer srv.Close()
	assert.Contains(t, get(t, srv.URL+"/status/web?format=json"), `"live": "4f2a9c1"`)
	assert.Contains(t, get(t, srv.URL+"/status/?format=html"), "4f2a9c1")
	assert.Contains(t, get(t, srv.URL+"/metrics"), `dedupdeploy_runs_total{outcome="deployed"} 1`)
}

// get returns the body of a GET of url.
func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), "GET", url, nil)
	require.NoError(t, err)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equalf(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, b)
	return string(b)
}
