//go:build linux

package statuspage_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/statuspage"
)

// chromium returns the path of a Chromium to test the page in: $CHROMIUM,
// else chromium or chromium-browser on $PATH. Without one the test skips,
// or fails when CI=true (scripts/test.sh installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: install it (apt-get install chromium) or set CHROMIUM")
	}
	t.Skip("chromium not found: install it (apt-get install chromium) or set CHROMIUM to test the page in a browser")
	return ""
}

// headless runs Chromium headless with args, and returns its stdout. It
// kills Chromium's whole process group when it ends or times out.
func headless(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	require.NoErrorf(t, err, "chromium %s\nstderr:\n%s", strings.Join(args, " "), stderr.String())
	return stdout.String()
}

// The page as a browser renders it: the DOM Chromium builds holds the
// table, the hostile key and revision as text, no element they could
// inject, and working links.
func TestChromium(t *testing.T) {
	bin := chromium(t)
	m, clock := scenario(t)
	mux := http.NewServeMux()
	mux.Handle("GET /status/", statuspage.Handler("/status/", m, statuspage.WithClock(clock)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	dom := headless(t, bin, "--dump-dom", srv.URL+"/status/")
	require.Contains(t, dom, "<h1>Deploy status</h1>", "DOM:\n%s", dom)
	require.Equal(t, 5, strings.Count(dom, "<tr"), "rows in the DOM:\n%s", dom)
	require.Contains(t, dom, "&lt;script&gt;alert(1)&lt;/script&gt;", "the hostile key, as text")
	require.Contains(t, dom, "\"&gt;&lt;img src=x onerror=alert(2)&gt;", "the hostile revision, as text")
	require.NotContains(t, dom, "<script", "a script element in the DOM")
	require.NotContains(t, dom, "<img", "an img element in the DOM")
	require.NotContains(t, dom, "<b>", "a b element in the DOM")
	require.Contains(t, dom, `<tr class="slow">`, "web's row is marked slow")
	require.Contains(t, dom, "<summary>exit status 1</summary>")

	// A browser resolves the hostile key's link to a page of that key.
	start := strings.Index(dom, `<td><a href="`)
	require.GreaterOrEqual(t, start, 0)
	href := dom[start+len(`<td><a href="`):]
	href = href[:strings.IndexByte(href, '"')]
	one := headless(t, bin, "--dump-dom", srv.URL+strings.ReplaceAll(href, "&amp;", "&"))
	require.Contains(t, one, "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>", "DOM of %s:\n%s", href, one)
	require.Equal(t, 2, strings.Count(one, "<tr"), "rows of one key")

	// A screenshot, for a person to look at: STATUSPAGE_SCREENSHOT=path.
	if path := os.Getenv("STATUSPAGE_SCREENSHOT"); path != "" {
		abs, err := filepath.Abs(path)
		require.NoError(t, err)
		headless(t, bin, "--hide-scrollbars", "--window-size=1500,420", "--screenshot="+abs, srv.URL+"/status/")
		info, err := os.Stat(abs)
		require.NoError(t, err, "screenshot")
		require.Positive(t, info.Size(), "screenshot size")
	}
}
