// Package pgtest gives pgdedup's tests a real PostgreSQL server: the one
// DEDUP_PG_URL names, or a throwaway cluster made with initdb and pg_ctl
// from the machine's PostgreSQL binaries in a temporary directory, listening
// on a free loopback port and a private socket directory, and removed by
// Stop. initdb refuses to run as root, so as root the cluster belongs to the
// unprivileged user "postgres" and its tools run through runuser.
//
// Each test gets a schema of its own (Schema), so tests sharing a server are
// independent.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Server is a PostgreSQL server for tests.
type Server struct {
	URL string // a connection string for the superuser

	bin  string // directory of initdb and pg_ctl; empty for DEDUP_PG_URL
	dir  string // the temp dir: data/ and the socket live there
	port int
	run  []string // prefix running a command as the cluster's owner
}

// Start returns the server of DEDUP_PG_URL, or starts a throwaway one.
func Start() (*Server, error) {
	if u := os.Getenv("DEDUP_PG_URL"); u != "" {
		return &Server{URL: u}, nil
	}
	return StartLocal()
}

// StartLocal starts a throwaway cluster, whatever DEDUP_PG_URL says: tests
// that restart the server need one of their own.
func StartLocal() (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	reapStale(bin)
	dir, err := os.MkdirTemp(tempBase(), "pgdedup-test-")
	if err != nil {
		return nil, err
	}
	// The owner file names the process the cluster belongs to, so that a
	// later run can stop a cluster whose process was killed before Stop.
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs the user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.run = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := s.cmd("initdb", "-D", s.data(), "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if s.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.Restart(); err != nil {
		s.Stop()
		return nil, err
	}
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) cmd(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, s.run...), filepath.Join(s.bin, name)), args...)
	c := exec.Command(argv[0], argv[1:]...)
	c.Dir = s.dir
	return c
}

// Local reports whether the server is a throwaway one that Kill and
// Restart can control.
func (s *Server) Local() bool { return s.bin != "" }

// Restart starts the throwaway server (again), waiting until it accepts
// connections.
func (s *Server) Restart() error {
	if !s.Local() {
		return errors.New("pgtest: cannot restart the server of DEDUP_PG_URL")
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c full_page_writes=off -c max_connections=200", s.port, s.dir)
	if out, err := s.cmd("pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pgtest: pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return nil
}

// Kill stops the throwaway server at once (pg_ctl stop -m immediate: the
// moral equivalent of a crash; it recovers on Restart).
func (s *Server) Kill() error {
	if !s.Local() {
		return errors.New("pgtest: cannot stop the server of DEDUP_PG_URL")
	}
	if out, err := s.cmd("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Stop stops a throwaway server and removes its files.
func (s *Server) Stop() {
	if !s.Local() {
		return
	}
	s.cmd("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop").Run()
	os.RemoveAll(s.dir)
}

var schemas atomic.Int64

// Schema returns a schema name no other test of this process uses, and
// drops it when the test ends.
func (s *Server) Schema(t testing.TB) string {
	name := fmt.Sprintf("t%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, schemas.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p, err := pgxpool.New(ctx, s.URL)
		if err != nil {
			return
		}
		defer p.Close()
		p.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
	})
	return name
}

// Pool returns a pool on the server, closed when the test ends.
func (s *Server) Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Need returns srv, or ends the test when there is no server: it fails
// with CI=true (a test that cannot get its server must not pass), and skips
// otherwise.
func Need(t testing.TB, srv *Server, err error) *Server {
	t.Helper()
	if srv != nil {
		return srv
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no PostgreSQL server: %v", err)
	}
	t.Skipf("no PostgreSQL server (set DEDUP_PG_URL, or install PostgreSQL): %v", err)
	return nil
}

func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pgtest: no initdb in /usr/lib/postgresql/*/bin or PATH")
}

func version(dir string) int {
	v, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(dir, "/usr/lib/postgresql/"), "/")[0])
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// reapStale stops and removes the throwaway clusters of processes that no
// longer exist (a test binary killed by a timeout, say).
func reapStale(bin string) {
	dirs, _ := filepath.Glob(filepath.Join(tempBase(), "pgdedup-test-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // its process lives: not ours to stop
		}
		s := &Server{bin: bin, dir: dir}
		if os.Geteuid() == 0 {
			s.run = []string{"runuser", "-u", "postgres", "--"}
		}
		s.Stop()
	}
}

// tempBase is where clusters go: as root, /tmp, which the user postgres can
// reach whatever TMPDIR says (it may be under /root); otherwise TMPDIR.
func tempBase() string {
	if os.Geteuid() == 0 {
		return "/tmp"
	}
	return os.TempDir()
}
