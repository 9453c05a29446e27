// Command replicas runs three replicas of a service that deploys with
// pgdedup, against a throwaway PostgreSQL (or the server DEDUP_PG_URL
// names), storms them with triggers, kills one with SIGKILL in the middle
// of a deploy, and prints what happened: deploys per replica, the most
// deploys of one key that ever ran at once (1), how long the takeover took
// against the lease, and the fences each key went through.
//
//	go run ./examples/replicas            # from the pgdedup module
//
// Each replica is this program again, as a child process. They deploy to a
// target in the parent, an HTTP endpoint that records every deploy and
// accepts a write only with the highest fence it has seen for the key.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

const replicaEnv = "REPLICAS_EXAMPLE_REPLICA"

func main() {
	if os.Getenv(replicaEnv) != "" {
		os.Exit(replica())
	}
	keys := flag.Int("keys", 8, "keys to deploy")
	revs := flag.Int("revs", 6, "revisions triggered per key")
	lease := flag.Duration("lease", time.Second, "lease of a deploy")
	work := flag.Duration("work", 150*time.Millisecond, "how long a deploy takes")
	pace := flag.Duration("pace", 60*time.Millisecond, "time between two rounds of triggers")
	flag.Parse()
	srv, err := pgtest.Start()
	if err == nil {
		err = run(os.Stdout, srv.URL, *keys, *revs, *lease, *work, *pace)
		srv.Stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "replicas:", err)
		os.Exit(1)
	}
}

// target records deploys and checks fences.
type target struct {
	mu        sync.Mutex
	running   map[string][]start // deploys of a key running now
	maxAtOnce int
	highest   map[string]int64
	fences    map[string][]int64
	perRep    map[string]int
	rejected  int
	starts    chan start
}

type start struct {
	key, rev, replica string
	fence             int64
	at                time.Time
}

func (t *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	key, rev, rep := r.Form.Get("key"), r.Form.Get("rev"), r.Form.Get("replica")
	fence, _ := strconv.ParseInt(r.Form.Get("fence"), 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	if fence < t.highest[key] {
		t.rejected++
		w.WriteHeader(http.StatusConflict) // a stale replica's fence
		return
	}
	t.highest[key] = fence
	switch r.URL.Path {
	case "/start":
		t.running[key] = append(t.running[key], start{key, rev, rep, fence, time.Now()})
		t.maxAtOnce = max(t.maxAtOnce, len(t.running[key]))
		t.fences[key] = append(t.fences[key], fence)
		select {
		case t.starts <- start{key, rev, rep, fence, time.Now()}:
		default:
		}
	case "/end":
		t.running[key] = slices.DeleteFunc(t.running[key], func(s start) bool { return s.fence == fence })
		t.perRep[rep]++
	}
}

// oneRunning returns a deploy running now, if any.
func (t *target) oneRunning() (start, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ss := range t.running {
		if len(ss) > 0 {
			return ss[0], true
		}
	}
	return start{}, false
}

// abandoned forgets the running deploys of a killed replica.
func (t *target) abandoned(replica string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ss := range t.running {
		t.running[k] = slices.DeleteFunc(ss, func(s start) bool { return s.replica == replica })
	}
}

type child struct {
	id    string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// run runs the story against the server at url.
func run(w io.Writer, url string, nKeys, nRevs int, lease, work, pace time.Duration) error {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	schema := fmt.Sprintf("replicas_%d", time.Now().UnixNano())
	defer pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")

	tg := &target{running: map[string][]start{}, highest: map[string]int64{}, fences: map[string][]int64{}, perRep: map[string]int{}, starts: make(chan start, 10000)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: tg}
	go hs.Serve(l)
	defer hs.Close()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var children []*child
	defer func() {
		for _, c := range children {
			c.stdin.Close()
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	}()
	for i := range 3 {
		c := &child{id: fmt.Sprintf("replica-%d", i+1)}
		c.cmd = exec.Command(exe)
		c.cmd.Env = append(os.Environ(), replicaEnv+"=1", "R_URL="+url, "R_SCHEMA="+schema, "R_ID="+c.id,
			"R_TARGET=http://"+l.Addr().String(), "R_LEASE="+lease.String(), "R_WORK="+work.String())
		c.cmd.Stderr = os.Stderr
		c.stdin, _ = c.cmd.StdinPipe()
		stdout, _ := c.cmd.StdoutPipe()
		c.out = bufio.NewScanner(stdout)
		if err := c.cmd.Start(); err != nil {
			return err
		}
		if !c.out.Scan() || c.out.Text() != "ready" {
			return fmt.Errorf("%s did not start", c.id)
		}
		children = append(children, c)
	}

	// The storm: every revision of every key, through all three replicas.
	keyName := func(k int) string { return fmt.Sprintf("app-%02d", k) }
	var victim start
	var killedAt time.Time
	live := children
	for r := range nRevs {
		sent := map[*child]int{}
		for k := range nKeys {
			c := live[(r+k)%len(live)]
			fmt.Fprintf(c.stdin, "notify %s v%d\n", keyName(k), r)
			sent[c]++
		}
		for c, n := range sent {
			for range n {
				c.out.Scan() // "notified": the round is committed
			}
		}
		time.Sleep(pace) // the storm's rhythm: some triggers land mid-deploy, some between
		if r == nRevs/2 {
			// Kill a replica in the middle of a deploy.
			var ok bool
			if victim, ok = tg.oneRunning(); !ok {
				return fmt.Errorf("no deploy runs mid-storm; try a longer -work")
			}
			for i, c := range live {
				if c.id == victim.replica {
					c.cmd.Process.Signal(syscall.SIGKILL)
					killedAt = time.Now()
					c.cmd.Wait()
					live = append(live[:i:i], live[i+1:]...)
					break
				}
			}
			tg.abandoned(victim.replica)
		}
	}
	// Wait for the takeover and for every key to reach its last revision.
	var takeover start
	deadline := time.Now().Add(30*time.Second + 3*lease)
	last := fmt.Sprintf("v%d", nRevs-1)
	for {
		for drained := false; !drained; {
			select {
			case s := <-tg.starts:
				if s.key == victim.key && s.fence > victim.fence && takeover.key == "" {
					takeover = s
				}
			default:
				drained = true
			}
		}
		var done int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".keys WHERE live = $1 AND running_rev IS NULL AND pending_rev IS NULL", last).Scan(&done)
		if err == nil && done == nKeys && takeover.key != "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d keys reached %s (%v)", done, nKeys, last, err)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the cluster to drain
	}

	tg.mu.Lock()
	defer tg.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "replica\tdeploys finished\t")
	for _, c := range children {
		note := ""
		if c.id == victim.replica {
			note = fmt.Sprintf("killed (SIGKILL) mid-deploy of %s@%s, fence %d", victim.key, victim.rev, victim.fence)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", c.id, tg.perRep[c.id], note)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmost deploys of one key at once: %d\n", tg.maxAtOnce)
	fmt.Fprintf(w, "takeover: %s ran %s@%s with fence %d, %v after the kill (lease %v)\n",
		takeover.replica, takeover.key, takeover.rev, takeover.fence, takeover.at.Sub(killedAt).Round(10*time.Millisecond), lease)
	fmt.Fprintf(w, "stale writes rejected by the target: %d\n\nfences per key (strictly increasing):\n", tg.rejected)
	var names []string
	for k := range tg.fences {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fs := make([]string, len(tg.fences[k]))
		for i, f := range tg.fences[k] {
			fs[i] = fmt.Sprint(f)
		}
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(fs, " "))
	}
	return nil
}

// replica is one replica process: a pgdedup.Manager whose deploys report
// to the target, triggered by "notify KEY REV" lines on stdin.
func replica() int {
	lease, _ := time.ParseDuration(os.Getenv("R_LEASE"))
	work, _ := time.ParseDuration(os.Getenv("R_WORK"))
	id, tgt := os.Getenv("R_ID"), os.Getenv("R_TARGET")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("R_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	report := func(path, key string, rev dedup.Revision, fence int64) error {
		resp, err := http.PostForm(tgt+path, url.Values{"key": {key}, "rev": {string(rev)}, "replica": {id}, "fence": {fmt.Sprint(fence)}})
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("target refused fence %d", fence)
		}
		return nil
	}
	d := dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fence, _ := pgdedup.Fence(ctx)
		if err := report("/start", key, rev, fence); err != nil {
			return err
		}
		t := time.NewTimer(work)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		return report("/end", key, rev, fence)
	})
	m, err := pgdedup.New(ctx, pool, d, pgdedup.WithSchema(os.Getenv("R_SCHEMA")), pgdedup.WithLease(lease),
		pgdedup.WithPollInterval(200*time.Millisecond), pgdedup.WithReplicaID(id))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var key, rev string
		if _, err := fmt.Sscanf(in.Text(), "notify %s %s", &key, &rev); err == nil {
			if err := m.Notify(key, dedup.Revision(rev)); err != nil {
				fmt.Fprintln(os.Stderr, id, err)
			}
			fmt.Println("notified")
		}
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m.Close(c)
	pool.Close()
	return 0
}
