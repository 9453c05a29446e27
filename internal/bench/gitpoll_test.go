package bench_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/dedupdeploy/dedupdeploy/poller"
)

// The git poll benchmarks put the three ways to ask a smart HTTP server for
// a branch's commit side by side: poller.Git (in process, protocol v2
// ls-refs over a kept-alive connection), `git ls-remote` run per poll (what
// poller.Git did before), and go-git's Remote.List (protocol v0). The
// server, git http-backend behind net/http/cgi, runs in a child process (this
// test binary), so that the CPU measured is the client's: the test process's
// and that of the git processes it runs and waits for.

const serverEnv = "BENCH_GIT_SERVER_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(serverEnv); root != "" {
		serveGit(root)
		return
	}
	code := m.Run()
	stopServer()
	os.Exit(code)
}

// serveGit serves the repositories under root over HTTP and HTTPS, prints
// both URLs and the certificate's file, and serves until stdin closes.
func serveGit(root string) {
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "git --exec-path:", err)
		os.Exit(2)
	}
	h := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=" + os.DevNull, "HOME=" + root},
	}
	plain, tls := httptest.NewServer(h), httptest.NewTLSServer(h)
	cert := filepath.Join(root, "cert.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tls.Certificate().Raw})
	if err := os.WriteFile(cert, pemBytes, 0o600); err != nil {
		os.Exit(2)
	}
	fmt.Println(plain.URL, tls.URL, cert)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent goes
	plain.Close()
	tls.Close()
}

type benchServer struct {
	plain, tls string // base URLs
	cert       string // PEM file
	pool       *x509.CertPool
	pemBytes   []byte
	heads      map[string]string // repository -> commit of main
	cmd        *exec.Cmd
	stdin      interface{ Close() error }
}

var (
	serverOnce sync.Once
	server     *benchServer
	serverErr  error
)

func stopServer() {
	if server != nil {
		server.stdin.Close()
		_ = server.cmd.Wait()
		os.RemoveAll(filepath.Dir(server.cert))
	}
}

// gitServer starts the server process once, with two repositories: small.git
// (a branch and a tag) and many.git (the same plus 10,000 pull-request refs).
func gitServer(b *testing.B) *benchServer {
	serverOnce.Do(func() { server, serverErr = startServer() })
	if serverErr != nil {
		b.Fatal(serverErr)
	}
	return server
}

func run(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=b", "-c", "user.email=b@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %v: %w: %s", args, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func startServer() (*benchServer, error) {
	root, err := os.MkdirTemp("", "bench-git-")
	if err != nil {
		return nil, err
	}
	s := &benchServer{heads: map[string]string{}}
	for _, name := range []string{"small.git", "many.git"} {
		dir := filepath.Join(root, name)
		steps := [][]string{{"init", "-q", "-b", "main", dir}, {"-C", dir, "commit", "-q", "--allow-empty", "-m", "one"},
			{"-C", dir, "tag", "-a", "-m", "v1", "v1"}, {"-C", dir, "commit", "-q", "--allow-empty", "-m", "two"}}
		for _, args := range steps {
			if _, err := run(root, args...); err != nil {
				return nil, err
			}
		}
		head, err := run(dir, "rev-parse", "HEAD")
		if err != nil {
			return nil, err
		}
		s.heads[name] = head
		if name == "many.git" {
			if _, err := run(dir, "pack-refs", "--all"); err != nil {
				return nil, err
			}
			f, err := os.OpenFile(filepath.Join(dir, ".git", "packed-refs"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return nil, err
			}
			// Appended after refs/heads and refs/tags, "refs/pull/" sorts
			// between them: git reads packed-refs without the sorted
			// trait by sorting them itself.
			w := bufio.NewWriter(f)
			for i := range 10_000 {
				fmt.Fprintf(w, "%s refs/pull/%d/head\n", head, i)
			}
			if err := w.Flush(); err != nil {
				return nil, err
			}
			f.Close()
			if _, err := run(dir, "pack-refs", "--all"); err != nil {
				return nil, err
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serverEnv+"="+root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.cmd, s.stdin = cmd, stdin
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return nil, fmt.Errorf("server said %q", line)
	}
	s.plain, s.tls, s.cert = fields[0], fields[1], fields[2]
	if s.pemBytes, err = os.ReadFile(s.cert); err != nil {
		return nil, err
	}
	s.pool = x509.NewCertPool()
	s.pool.AppendCertsFromPEM(s.pemBytes)
	return s, nil
}

// cpuTime is the CPU time, user and system, of this process and of its
// children that were waited for.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

// BenchmarkGitPoll: one poll of a branch's commit. cpu-ns/op is the CPU
// time per poll of the client, git processes included; polls/s the rate of
// polls one after another.
func BenchmarkGitPoll(b *testing.B) {
	s := gitServer(b)
	targets := []struct{ name, url, head string }{
		{"http", s.plain + "/small.git", s.heads["small.git"]},
		{"https", s.tls + "/small.git", s.heads["small.git"]},
		{"https-10k-refs", s.tls + "/many.git", s.heads["many.git"]},
	}
	tlsClient := &http.Client{Transport: func() *http.Transport {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig.RootCAs = s.pool
		return t
	}()}
	b.Cleanup(tlsClient.CloseIdleConnections)
	for _, tg := range targets {
		b.Run("poller.Git/"+tg.name, func(b *testing.B) {
			src := &poller.GitSource{Remote: tg.url, Ref: "main", Client: tlsClient}
			poll(b, tg.head, func(ctx context.Context) (string, error) {
				rev, err := src.Latest(ctx)
				return string(rev), err
			})
		})
		b.Run("git-ls-remote/"+tg.name, func(b *testing.B) {
			poll(b, tg.head, func(ctx context.Context) (string, error) {
				// The arguments poller.Git ran git with before it spoke
				// HTTP itself.
				cmd := exec.CommandContext(ctx, "git", "ls-remote", "--", tg.url, "refs/heads/main", "refs/tags/main", "refs/tags/main^{}")
				cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_SSL_CAINFO="+s.cert)
				out, err := cmd.Output()
				if err != nil {
					return "", err
				}
				sha, _, _ := strings.Cut(string(out), "\t")
				return sha, nil
			})
		})
		b.Run("go-git/"+tg.name, func(b *testing.B) {
			remote := gogit.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: "origin", URLs: []string{tg.url}})
			poll(b, tg.head, func(ctx context.Context) (string, error) {
				refs, err := remote.ListContext(ctx, &gogit.ListOptions{CABundle: s.pemBytes})
				if err != nil {
					return "", err
				}
				for _, r := range refs {
					if r.Name() == "refs/heads/main" {
						return r.Hash().String(), nil
					}
				}
				return "", fmt.Errorf("no main among %d refs", len(refs))
			})
		})
	}
}

func poll(b *testing.B, head string, latest func(context.Context) (string, error)) {
	ctx := context.Background()
	if rev, err := latest(ctx); err != nil || rev != head {
		b.Fatalf("Latest = %q, %v; want %q", rev, err, head)
	}
	b.ReportAllocs()
	cpu0, start := cpuTime(), time.Now()
	for b.Loop() {
		if _, err := latest(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "polls/s")
}
