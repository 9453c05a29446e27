package pgdedup_test

// Benchmarks against the real server, each beside its baseline in one run:
//
//	go test -run '^$' -bench . -count 6 ./ | tee bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl bench.txt
//
// Trigger: one Notify that supersedes the pending revision of a key whose
// deploy runs (a transaction of four round trips: BEGIN, SELECT ... FOR
// UPDATE, UPDATE, COMMIT) against the floor, one bare INSERT ... ON
// CONFLICT DO UPDATE round trip on the same pool. Handover: a replica
// closing finishes its attempt, and the follow-up starts on another
// replica, woken by NOTIFY or by its poll only. Takeover: a replica stops
// renewing its lease (as if it died) and the key runs again elsewhere, in
// units of the lease. Deploys: 1,000 keys triggered over three replicas.

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
)

func BenchmarkTrigger(b *testing.B) {
	s := server(b)
	ctx := context.Background()
	schema := s.Schema(b)
	pool := s.Pool(b)
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema+"; CREATE TABLE "+schema+".floor (key text PRIMARY KEY, rev text)"); err != nil {
		b.Fatal(err)
	}
	upsert := "INSERT INTO " + schema + ".floor (key, rev) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET rev = excluded.rev"
	block := make(chan struct{})
	m, err := pgdedup.New(ctx, pool, dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		<-block
		return nil
	}), pgdedup.WithSchema(schema))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	defer close(block) // before Close, which waits for the deploys
	var keys atomic.Int64
	newKey := func() string {
		k := fmt.Sprint("k", keys.Add(1))
		if err := m.Notify(k, "running"); err != nil { // its deploy blocks: later triggers supersede the pending one
			b.Fatal(err)
		}
		return k
	}
	revs := make([]dedup.Revision, 1024)
	for i := range revs {
		revs[i] = dedup.Revision(fmt.Sprint("v", i))
	}
	b.Run("impl=floor/serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := pool.Exec(ctx, upsert, "k", string(revs[i%len(revs)])); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=pgdedup/serial", func(b *testing.B) {
		k := newKey()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := m.Notify(k, revs[i%len(revs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=floor/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			k := fmt.Sprint("p", keys.Add(1))
			for i := 0; pb.Next(); i++ {
				if _, err := pool.Exec(ctx, upsert, k, string(revs[i%len(revs)])); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("impl=pgdedup/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			k := newKey()
			for i := 0; pb.Next(); i++ {
				if err := m.Notify(k, revs[i%len(revs)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkHandover: replica a runs a key's deploy, b holds the next
// revision pending; a closes, its deploy returns, and the follow-up must
// start on b. ns/op is from the deploy's return on a to the start on b.
func BenchmarkHandover(b *testing.B) {
	for _, mode := range []string{"notify", "poll"} {
		b.Run("wake="+mode, func(b *testing.B) {
			s := server(b)
			ctx := context.Background()
			schema := s.Schema(b)
			started := make(chan time.Time, 1)
			onB := dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
				started <- time.Now()
				return nil
			})
			opts := []pgdedup.Option{pgdedup.WithSchema(schema), pgdedup.WithPollInterval(500 * time.Millisecond)}
			if mode == "poll" {
				opts = append(opts, pgdedup.WithoutListen())
			}
			rb, err := pgdedup.New(ctx, s.Pool(b), onB, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer rb.Close(ctx)
			poolA := s.Pool(b)
			b.ReportAllocs()
			var total time.Duration
			for i := 0; b.Loop(); i++ {
				release, returned := make(chan struct{}), make(chan time.Time, 1)
				ra, err := pgdedup.New(ctx, poolA, dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
					<-release
					returned <- time.Now()
					return nil
				}), pgdedup.WithSchema(schema))
				if err != nil {
					b.Fatal(err)
				}
				key := fmt.Sprint("k", i)
				if t, err := ra.Trigger(key, "v1"); err != nil || t.Action() != dedup.ActionStarted {
					b.Fatalf("a.Trigger = %v, %v", t, err)
				}
				if err := rb.Notify(key, "v2"); err != nil {
					b.Fatal(err)
				}
				closed := make(chan error, 1)
				go func() { closed <- ra.Close(ctx) }()
				for !pgdedup.Closing(ra) { // a closing replica claims nothing: the follow-up is b's
					runtime.Gosched()
				}
				close(release)
				t0 := <-returned
				total += (<-started).Sub(t0)
				if err := <-closed; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-handover")
		})
	}
}

// BenchmarkTakeover: the replica running a key stops renewing its lease, as
// if it died; another replica runs the key again. lease-units is the time
// from the first attempt's start to the new start, in units of the lease.
func BenchmarkTakeover(b *testing.B) {
	s := server(b)
	ctx := context.Background()
	schema := s.Schema(b)
	const ttl = 500 * time.Millisecond
	type start struct {
		at      time.Time
		replica int
	}
	starts := make(chan start, 10)
	var ms []*pgdedup.Manager
	for i := range 2 {
		m, err := pgdedup.New(ctx, s.Pool(b), dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
			starts <- start{time.Now(), i}
			<-ctx.Done()
			return ctx.Err()
		}), pgdedup.WithSchema(schema), pgdedup.WithLease(ttl), pgdedup.WithPollInterval(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			// The last attempt runs until canceled: Close cancels it.
			c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			m.Close(c)
		}()
		ms = append(ms, m)
	}
	b.ReportAllocs()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		key := fmt.Sprint("k", i)
		claimed := time.Now()
		if err := ms[0].Notify(key, "v1"); err != nil {
			b.Fatal(err)
		}
		first := <-starts
		pgdedup.Abandon(ms[first.replica], key)
		second := <-starts
		total += second.at.Sub(claimed) - first.at.Sub(claimed)
		// The second attempt runs until Close cancels it.
	}
	b.ReportMetric(float64(total)/float64(b.N)/float64(ttl), "lease-units")
}

// BenchmarkDeploys1000Keys: 1,000 keys triggered over three replicas, each
// with a deploy that returns at once; an op is all 1,000 deployed.
func BenchmarkDeploys1000Keys(b *testing.B) {
	s := server(b)
	ctx := context.Background()
	schema := s.Schema(b)
	var ms []*pgdedup.Manager
	var deploys atomic.Int64
	for range 3 {
		m, err := pgdedup.New(ctx, s.Pool(b), dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
			deploys.Add(1)
			return nil
		}), pgdedup.WithSchema(schema))
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(ctx)
		ms = append(ms, m)
	}
	const keys = 1000
	b.ReportAllocs()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		ts := make([]*pgdedup.Ticket, 0, keys)
		for k := range keys {
			t, err := ms[k%3].Trigger(fmt.Sprint("k", k), dedup.Revision(fmt.Sprint("v", i)))
			if err != nil {
				b.Fatal(err)
			}
			ts = append(ts, t)
		}
		for _, t := range ts {
			if r, err := t.Wait(ctx); err != nil || r.Outcome != dedup.Deployed {
				b.Fatalf("%+v, %v", r, err)
			}
		}
	}
	b.ReportMetric(float64(deploys.Load())/time.Since(start).Seconds(), "deploys/s")
}
