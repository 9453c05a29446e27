package pgdedup_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
)

// TestListenReconnects: the LISTEN connections are killed on the server;
// the replicas listen again, and a hand-over between them is woken by a
// notification, not by the poll (which is set to a minute here).
func TestListenReconnects(t *testing.T) {
	s := server(t)
	schema := s.Schema(t)
	admin := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listening := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = $1`,
			`LISTEN "dedupdeploy_`+schema+`"`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitListening := func(want int) {
		for listening() != want {
			if ctx.Err() != nil {
				t.Fatalf("%d replicas listen; want %d", listening(), want)
			}
			time.Sleep(10 * time.Millisecond) // polling the server for a condition, with a deadline
		}
	}
	ga, gb := newGated(), newGated()
	slowPoll := pgdedup.WithPollInterval(time.Minute)
	a, err := pgdedup.New(ctx, s.Pool(t), ga, pgdedup.WithSchema(schema), slowPoll)
	if err != nil {
		t.Fatal(err)
	}
	b := newManager(t, schema, gb, slowPoll)
	waitListening(2)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1`,
		`LISTEN "dedupdeploy_`+schema+`"`); err != nil {
		t.Fatal(err)
	}
	waitListening(2) // the killed connections are gone, new ones listen

	if err := a.Notify("k", "v1"); err != nil {
		t.Fatal(err)
	}
	ca := ga.next(t, 5*time.Second)
	if err := b.Notify("k", "v2"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close(ctx) }()
	for !pgdedup.Closing(a) { // a closing replica claims nothing: v2 is b's
		runtime.Gosched()
	}
	ca.finish <- nil
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	c := gb.next(t, 5*time.Second) // far below the minute of the poll
	if c.rev != "v2" {
		t.Fatalf("b deployed %q; want v2", c.rev)
	}
	c.finish <- nil
}

// TestListenReconnectSweeps: a run ends elsewhere while a replica's LISTEN
// connection is down (and its pool cannot connect), so its 's'
// notification is lost; once the replica listens again it checks every
// key it has tickets on, and its ticket settles at once, not at the poll
// (a minute here).
func TestListenReconnectSweeps(t *testing.T) {
	s := server(t)
	schema := s.Schema(t)
	admin := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listenQuery := `LISTEN "dedupdeploy_` + schema + `"`
	waitListening := func(want int) {
		for {
			var n int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = $1`, listenQuery).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%d replicas listen; want %d", n, want)
			}
			time.Sleep(10 * time.Millisecond) // polling the server for a condition, with a deadline
		}
	}

	// a's pool refuses every connection while blocked is set: a cannot
	// listen again until the test allows it.
	var blocked atomic.Bool
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PrepareConn = func(context.Context, *pgx.Conn) (bool, error) {
		if blocked.Load() {
			return true, errors.New("test: pool blocked")
		}
		return true, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	a, err := pgdedup.New(ctx, pool, newGated(), pgdedup.WithSchema(schema), pgdedup.WithPollInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	gb := newGated()
	b := newManager(t, schema, gb, pgdedup.WithoutListen()) // only a listens
	waitListening(1)

	tb, err := b.Trigger("k", "v1")
	if err != nil {
		t.Fatal(err)
	}
	c := gb.next(t, 5*time.Second)
	ta, err := a.Trigger("k", "v1")
	if err != nil || ta.Action() != dedup.ActionJoinedRunning {
		t.Fatalf("a.Trigger(v1) = %v, %v; want joined running", ta, err)
	}
	blocked.Store(true)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1`, listenQuery); err != nil {
		t.Fatal(err)
	}
	waitListening(0)
	c.finish <- nil
	if r, err := tb.Wait(ctx); err != nil || r.Outcome != dedup.Deployed {
		t.Fatalf("b's ticket: %+v, %v; want deployed", r, err)
	}
	select {
	case <-ta.Done():
		t.Fatal("a's ticket settled while a could not reach the server")
	default:
	}
	blocked.Store(false)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second) // the reconnect backoff is at most 2s; the poll is a minute
	defer wcancel()
	if r, err := ta.Wait(wctx); err != nil || r.Outcome != dedup.Deployed {
		t.Fatalf("a's ticket after the reconnect: %+v, %v; want deployed", r, err)
	}
}

// TestCloseRecordsAfterRenewal: Close with an ended context cancels a
// deploy that has run longer than one lease (renewed meanwhile) while the
// database is briefly unreachable. The replica keeps trying to record the
// end as long as its last renewal's lease lasts, not only the claim's, so
// once the database is back the key is handed back at once.
func TestCloseRecordsAfterRenewal(t *testing.T) {
	s := server(t)
	schema := s.Schema(t)
	admin := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var blocked atomic.Bool
	hit := make(chan struct{}, 1)
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PrepareConn = func(context.Context, *pgx.Conn) (bool, error) {
		if blocked.Load() {
			select {
			case hit <- struct{}{}:
			default:
			}
			return true, errors.New("test: pool blocked")
		}
		return true, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const lease = 1200 * time.Millisecond
	g := newGated()
	m, err := pgdedup.New(ctx, pool, g, pgdedup.WithSchema(schema), pgdedup.WithLease(lease),
		pgdedup.WithPollInterval(time.Minute), pgdedup.WithoutListen())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Notify("k", "v1"); err != nil {
		t.Fatal(err)
	}
	g.next(t, 5*time.Second)
	// Wait, on the server's clock, until the claim's lease has passed and
	// the lease was renewed.
	for {
		var past bool
		if err := admin.QueryRow(ctx, `SELECT clock_timestamp() > last_started + $1::interval AND lease_until > last_started + $1::interval
			FROM `+pgx.Identifier{schema}.Sanitize()+`.keys WHERE key = 'k'`, "1200 milliseconds").Scan(&past); err != nil {
			t.Fatal(err)
		}
		if past {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the lease was not renewed past the claim's")
		}
		time.Sleep(10 * time.Millisecond) // polling the server for a condition, with a deadline
	}
	blocked.Store(true)
	ended, endNow := context.WithCancel(context.Background())
	endNow()
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ended) }()
	<-hit // the end could not be recorded
	blocked.Store(false)
	if err := <-closed; !errors.Is(err, context.Canceled) {
		t.Fatalf("Close(ended context) = %v; want context.Canceled", err)
	}
	var owner *string
	if err := admin.QueryRow(ctx, `SELECT owner FROM `+pgx.Identifier{schema}.Sanitize()+`.keys WHERE key = 'k'`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != nil {
		t.Errorf("after Close the key is still owned by %q; want it handed back", *owner)
	}
}
