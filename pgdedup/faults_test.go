package pgdedup_test

// Fault tests with real processes: the test binary re-executes itself as
// replica processes (childMain) that run a pgdedup.Manager against the real
// server, and deploy to a target in the test process that records every
// attempt and accepts a write only with the highest fence it has seen. The
// test kills, stops and resumes replicas, and restarts PostgreSQL itself.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

const childEnv = "PGDEDUP_TEST_CHILD"

// childMain is a replica process: it runs a Manager on the schema it is
// given, deploys by asking the target, triggers what its stdin says
// ("notify KEY REV") and reports on stdout ("ready", "fenced KEY FENCE").
func childMain() int {
	ttl, _ := time.ParseDuration(os.Getenv("PGDEDUP_TTL"))
	work, _ := time.ParseDuration(os.Getenv("PGDEDUP_WORK"))
	target, id := os.Getenv("PGDEDUP_TARGET"), os.Getenv("PGDEDUP_ID")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("PGDEDUP_URL"))
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	post := func(path, key string, rev dedup.Revision, fence int64) (int, error) {
		v := url.Values{"key": {key}, "rev": {string(rev)}, "fence": {fmt.Sprint(fence)}, "replica": {id}}
		resp, err := http.PostForm(target+path, v)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	d := dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fence, _ := pgdedup.Fence(ctx)
		if _, err := post("/start", key, rev, fence); err != nil {
			return err
		}
		t := time.NewTimer(work) // the deploy's work
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		// Write even when canceled, as a deploy whose write was already
		// on its way would: the target's fence check is what stops it.
		code, err := post("/write", key, rev, fence)
		switch {
		case err != nil:
			return err
		case code != http.StatusOK:
			return fmt.Errorf("target rejected fence %d: %d", fence, code)
		}
		return ctx.Err()
	})
	obs := func(e dedup.Event) {
		if e.Kind == dedup.EventAborted && e.Err != nil && strings.Contains(e.Err.Error(), "fenced off") {
			say("fenced %s %s", e.Key, e.Revision)
		}
	}
	m, err := pgdedup.New(ctx, pool, d, pgdedup.WithSchema(os.Getenv("PGDEDUP_SCHEMA")), pgdedup.WithLease(ttl),
		pgdedup.WithPollInterval(100*time.Millisecond), pgdedup.WithReplicaID(id), pgdedup.WithObserver(obs))
	if err != nil {
		say("err %v", err)
		return 1
	}
	say("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 3 && f[0] == "notify" {
			if err := m.Notify(f[1], dedup.Revision(f[2])); err != nil {
				say("notify-failed %s %s %v", f[1], f[2], err)
			} else {
				say("notified %s %s", f[1], f[2])
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m.Close(ctx)
	pool.Close()
	return 0
}

// target is what the replicas deploy to: it records attempts and accepts a
// write only with a fence at least the highest it has seen for the key.
type target struct {
	mu       sync.Mutex
	highest  map[string]int64
	starts   chan event
	writes   chan event
	accepted []event
	rejected []event
}

type event struct {
	key, rev, replica string
	fence             int64
	at                time.Time
	ok                bool
}

func newTarget(t *testing.T) (*target, string) {
	tg := &target{highest: map[string]int64{}, starts: make(chan event, 1000), writes: make(chan event, 1000)}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		fence, _ := strconv.ParseInt(r.Form.Get("fence"), 10, 64)
		e := event{key: r.Form.Get("key"), rev: r.Form.Get("rev"), replica: r.Form.Get("replica"), fence: fence, at: time.Now()}
		tg.mu.Lock()
		e.ok = fence >= tg.highest[e.key]
		if e.ok {
			tg.highest[e.key] = fence
		}
		if r.URL.Path == "/write" {
			if e.ok {
				tg.accepted = append(tg.accepted, e)
			} else {
				tg.rejected = append(tg.rejected, e)
			}
		}
		tg.mu.Unlock()
		if r.URL.Path == "/start" {
			tg.starts <- e
		} else {
			tg.writes <- e
		}
		if !e.ok {
			w.WriteHeader(http.StatusConflict)
		}
	}))
	t.Cleanup(s.Close)
	return tg, s.URL
}

// replica is a replica process.
type replica struct {
	id    string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startReplicas(t *testing.T, n int, pgURL, schema, targetURL string, ttl, work time.Duration) []*replica {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var rs []*replica
	for i := range n {
		r := &replica{id: fmt.Sprintf("replica-%d", i+1), lines: make(chan string, 1000)}
		r.cmd = exec.Command(exe)
		r.cmd.Env = append(os.Environ(), childEnv+"=1", "PGDEDUP_URL="+pgURL, "PGDEDUP_SCHEMA="+schema, "PGDEDUP_TARGET="+targetURL,
			"PGDEDUP_ID="+r.id, "PGDEDUP_TTL="+ttl.String(), "PGDEDUP_WORK="+work.String())
		r.cmd.Stderr = os.Stderr
		r.stdin, _ = r.cmd.StdinPipe()
		stdout, _ := r.cmd.StdoutPipe()
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(r.lines)
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				r.lines <- s.Text()
			}
		}()
		t.Cleanup(func() {
			r.cmd.Process.Signal(syscall.SIGCONT)
			r.stdin.Close()
			done := make(chan struct{})
			go func() { r.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				r.cmd.Process.Kill()
				<-done
			}
		})
		rs = append(rs, r)
	}
	for _, r := range rs {
		r.expect(t, "ready", 30*time.Second)
	}
	return rs
}

// expect waits for a line starting with prefix from the replica.
func (r *replica) expect(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("%s exited before saying %q", r.id, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
			t.Logf("%s: %s", r.id, l)
		case <-deadline:
			t.Fatalf("%s did not say %q within %v", r.id, prefix, d)
		}
	}
}

func (r *replica) notify(t *testing.T, key, rev string) {
	t.Helper()
	fmt.Fprintf(r.stdin, "notify %s %s\n", key, rev)
}

func byID(rs []*replica, id string) *replica {
	for _, r := range rs {
		if r.id == id {
			return r
		}
	}
	return nil
}

func next(t *testing.T, ch <-chan event, what string, d time.Duration) event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(d):
		t.Fatalf("no %s within %v", what, d)
		return event{}
	}
}

func TestKillOwner(t *testing.T) {
	s := server(t)
	const ttl = time.Second
	tg, turl := newTarget(t)
	rs := startReplicas(t, 3, s.URL, s.Schema(t), turl, ttl, 300*time.Millisecond)

	rs[0].notify(t, "app", "v1")
	first := next(t, tg.starts, "first attempt", 10*time.Second)
	owner := byID(rs, first.replica)
	killed := time.Now()
	owner.cmd.Process.Kill() // kill -9, mid-deploy
	second := next(t, tg.starts, "takeover", ttl+5*time.Second)
	if second.replica == first.replica || second.rev != "v1" || second.fence <= first.fence {
		t.Fatalf("after the kill: %s ran %s with fence %d; want another replica running v1 with a fence above %d", second.replica, second.rev, second.fence, first.fence)
	}
	w := next(t, tg.writes, "the deploy's write", 5*time.Second)
	done := time.Since(killed)
	if !w.ok || w.fence != second.fence {
		t.Fatalf("write %+v; want accepted with fence %d", w, second.fence)
	}
	if bound := ttl + 1500*time.Millisecond; done > bound {
		t.Errorf("the key was deployed %v after the kill; want within the lease %v plus a small bound (%v in all)", done, ttl, bound)
	}
	t.Logf("kill -9 of %s (fence %d) mid-deploy of app@v1: %s took over with fence %d after %v (lease %v), v1 deployed %v after the kill",
		first.replica, first.fence, second.replica, second.fence, second.at.Sub(killed).Round(time.Millisecond), ttl, done.Round(time.Millisecond))
}

func TestStopOwnerPastLease(t *testing.T) {
	s := server(t)
	const ttl = time.Second
	tg, turl := newTarget(t)
	rs := startReplicas(t, 3, s.URL, s.Schema(t), turl, ttl, 300*time.Millisecond)

	rs[0].notify(t, "app", "v1")
	first := next(t, tg.starts, "first attempt", 10*time.Second)
	owner := byID(rs, first.replica)
	owner.cmd.Process.Signal(syscall.SIGSTOP) // frozen mid-deploy, lease and all
	second := next(t, tg.starts, "takeover", ttl+5*time.Second)
	if second.replica == first.replica || second.fence <= first.fence {
		t.Fatalf("takeover by %s with fence %d; want another replica, fence above %d", second.replica, second.fence, first.fence)
	}
	w := next(t, tg.writes, "the new owner's write", 5*time.Second)
	if !w.ok || w.fence != second.fence {
		t.Fatalf("new owner's write %+v; want accepted", w)
	}
	owner.cmd.Process.Signal(syscall.SIGCONT)
	stale := next(t, tg.writes, "the stale owner's write", 10*time.Second)
	if stale.ok || stale.fence != first.fence {
		t.Fatalf("stale write %+v; want fence %d rejected", stale, first.fence)
	}
	owner.expect(t, "fenced app", 10*time.Second) // its finish was rejected by the fence
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for i := 1; i < len(tg.accepted); i++ {
		if tg.accepted[i].fence < tg.accepted[i-1].fence {
			t.Errorf("target accepted fence %d after %d", tg.accepted[i].fence, tg.accepted[i-1].fence)
		}
	}
	t.Logf("SIGSTOP of %s (fence %d) past its lease: %s took over with fence %d; after SIGCONT the stale write (fence %d) was rejected by the target and its finish by the fence",
		first.replica, first.fence, second.replica, second.fence, stale.fence)
}

func TestPostgresRestart(t *testing.T) {
	s, err := pgtest.StartLocal()
	if err != nil {
		pgtest.Need(t, nil, err)
	}
	t.Cleanup(s.Stop)
	const ttl = 4 * time.Second
	tg, turl := newTarget(t)
	schema := "restart"
	rs := startReplicas(t, 3, s.URL, schema, turl, ttl, 200*time.Millisecond)
	keys := []string{"k1", "k2", "k3", "k4", "k5", "k6"}

	// A storm of triggers, each key's revisions through different
	// replicas; a round commits before the next, so v4 is the newest.
	for i := range 5 {
		for j, k := range keys {
			rs[(i+j)%3].notify(t, k, fmt.Sprintf("v%d", i))
		}
		for _, r := range rs {
			for range len(keys) / 3 {
				r.expect(t, "notified", 30*time.Second)
			}
		}
	}
	// PostgreSQL crashes while a deploy runs, and that deploy ends while
	// it is down.
	next(t, tg.starts, "a deploy", 10*time.Second)
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	next(t, tg.writes, "a deploy ending during the outage", 10*time.Second)
	for j, k := range keys { // triggers while it is down fail, and say so
		rs[j%3].notify(t, k, "lost")
	}
	for j := range keys {
		rs[j%3].expect(t, "notify-failed", 10*time.Second)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	downFor := time.Since(down)

	// The ends are recorded, the pending revisions resume: every key ends
	// with v4 live and nothing running or pending.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for {
		var done int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM restart.keys WHERE live = 'v4' AND running_rev IS NULL AND pending_rev IS NULL`).Scan(&done)
		if err == nil && done == len(keys) {
			break
		}
		if ctx.Err() != nil {
			dump(t, pool)
			tg.mu.Lock()
			for _, e := range tg.accepted {
				t.Logf("accepted %+v", e)
			}
			tg.mu.Unlock()
			t.Fatalf("%d of %d keys reached v4: %v", done, len(keys), err)
		}
		time.Sleep(50 * time.Millisecond) // polling the database for a condition, with a deadline
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range tg.accepted {
		if id := e.key + "@" + e.rev; seen[id] {
			t.Errorf("%s deployed twice", id)
		} else {
			seen[id] = true
		}
	}
	if len(tg.rejected) > 0 {
		t.Errorf("target rejected %d writes: %+v", len(tg.rejected), tg.rejected)
	}
	t.Logf("PostgreSQL killed mid-deploy and restarted after %v: replicas reconnected, the pending revisions resumed, %d keys at v4, %d deploys in all, none twice",
		downFor.Round(time.Millisecond), len(keys), len(tg.accepted))
}

// dump logs the keys table.
func dump(t *testing.T, pool *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT key, coalesce(live, ''), coalesce(running_rev, ''), coalesce(pending_rev, ''), coalesce(owner, ''), fence,
		coalesce(lease_until::text, ''), coalesce(due_at::text, ''), clock_timestamp()::text FROM restart.keys ORDER BY key`)
	if err != nil {
		t.Logf("dump: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var k, live, run, pend, owner, lease, due, now string
		var fence int64
		rows.Scan(&k, &live, &run, &pend, &owner, &fence, &lease, &due, &now)
		t.Logf("%s live %q running %q pending %q owner %q fence %d lease %s due %s now %s", k, live, run, pend, owner, fence, lease, due, now)
	}
}
