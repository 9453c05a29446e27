package poller_test

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// gitServer is git http-backend, git's own smart HTTP server, behind
// net/http/cgi in an httptest server. It counts the requests it serves.
type gitServer struct {
	*httptest.Server
	url    string // of the repository
	caFile string // PEM of the server's certificate, for git over TLS

	mu       sync.Mutex
	requests []string // "GET info/refs", "POST ls-refs", "POST fetch"
	user     string   // basic authentication asked for, if not empty
	pass     string
	headers  []http.Header // of every request
}

type serverOpts struct {
	tls      bool
	v0       bool   // hide the Git-Protocol header from the backend: a server without v2
	user     string // ask for basic authentication
	pass     string
	redirect bool // serve the repository under /moved, redirecting /repo.git there
}

// newGitServer serves the repository dir over smart HTTP, as /repo.git.
func newGitServer(t testing.TB, dir string, o serverOpts) *gitServer {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	require.NoError(t, err, "git --exec-path")
	// The backend serves GIT_PROJECT_ROOT/<path>: a directory holding a
	// link to the repository.
	root := t.TempDir()
	require.NoError(t, os.Symlink(dir, filepath.Join(root, "repo.git")))
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=" + os.DevNull, "HOME=" + root},
	}
	s := &gitServer{user: o.user, pass: o.pass}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.redirect && strings.HasPrefix(r.URL.Path, "/repo.git/") {
			u := *r.URL
			u.Path = "/moved" + r.URL.Path
			http.Redirect(w, r, u.String(), http.StatusFound)
			return
		}
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/moved")
		what := r.Method + " " + r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			switch {
			case bytes.Contains(body, []byte("command=ls-refs")):
				what = "POST ls-refs"
			default:
				what = "POST fetch"
			}
		}
		s.mu.Lock()
		s.requests = append(s.requests, what)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		if s.user != "" {
			if u, p, ok := r.BasicAuth(); !ok || u != s.user || p != s.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		if o.v0 {
			r.Header.Del("Git-Protocol")
		}
		backend.ServeHTTP(w, r)
	})
	if o.tls {
		s.Server = httptest.NewTLSServer(handler)
		s.caFile = filepath.Join(t.TempDir(), "ca.pem")
		cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
		require.NoError(t, os.WriteFile(s.caFile, cert, 0o600))
	} else {
		s.Server = httptest.NewServer(handler)
	}
	t.Cleanup(s.Close)
	s.url = s.URL + "/repo.git"
	return s
}

// gitEnv is what git needs to reach s: the server's certificate.
func (s *gitServer) gitEnv() []string {
	if s.caFile == "" {
		return nil
	}
	return []string{"GIT_SSL_CAINFO=" + s.caFile}
}

// take returns the requests served since the last call.
func (s *gitServer) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requests
	s.requests = nil
	return r
}

func (s *gitServer) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r == what {
			n++
		}
	}
	return n
}

// addRefs adds n refs refs/pull/<i>/head pointing to commit, by writing
// packed-refs directly (update-ref of 10k refs takes seconds).
func addRefs(t testing.TB, dir, commit string, n int) {
	t.Helper()
	gitDir := dir
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		gitDir = filepath.Join(dir, ".git")
	}
	path := filepath.Join(gitDir, "packed-refs")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.Lines(string(old)) {
		if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "^") {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}
	for i := range n {
		lines = append(lines, fmt.Sprintf("%s refs/pull/%d/head", commit, i))
	}
	slices.SortFunc(lines, func(a, b string) int {
		return strings.Compare(a[strings.IndexByte(a, ' '):], b[strings.IndexByte(b, ' '):])
	})
	out := "# pack-refs with: peeled sorted \n" + strings.Join(lines, "\n") + "\n"
	require.NoError(t, os.WriteFile(path, []byte(out), 0o644))
}
