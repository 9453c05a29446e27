package pgdedup_test

import (
	"context"
	"runtime"
	"testing"
	"time"

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
