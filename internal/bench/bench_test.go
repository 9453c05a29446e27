package bench_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sync/singleflight"
	"k8s.io/client-go/util/workqueue"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// revs are distinct 40-character revisions, like commit SHAs.
var revs = func() []dedup.Revision {
	r := make([]dedup.Revision, 1024)
	for i := range r {
		r[i] = dedup.Revision(fmt.Sprintf("%040x", i+1))
	}
	return r
}()

// blocked starts a Manager whose deploy of key "k" runs until release is
// called.
func blocked(b *testing.B) (m *dedup.Manager, release func()) {
	started, unblock := make(chan struct{}), make(chan struct{})
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		if rev == "running" {
			close(started)
			<-unblock
		}
		return nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Notify("k", "running"); err != nil {
		b.Fatal(err)
	}
	<-started
	return m, func() {
		close(unblock)
		if err := m.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplacePending: a trigger of a new revision for a key whose
// deploy is running, so that it replaces the pending revision.
func BenchmarkReplacePending(b *testing.B) {
	b.Run("dedup.Trigger", func(b *testing.B) {
		m, release := blocked(b)
		defer release()
		b.ReportAllocs()
		for i := range b.N {
			if _, err := m.Trigger("k", revs[i%len(revs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dedup.Notify", func(b *testing.B) {
		m, release := blocked(b)
		defer release()
		b.ReportAllocs()
		for i := range b.N {
			if err := m.Notify("k", revs[i%len(revs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("singleflight.DoChan", func(b *testing.B) {
		var g singleflight.Group
		started, unblock := make(chan struct{}), make(chan struct{})
		first := g.DoChan("k", func() (any, error) {
			close(started)
			<-unblock
			return nil, nil
		})
		<-started
		fn := func() (any, error) { return nil, nil }
		b.ReportAllocs()
		for range b.N {
			g.DoChan("k", fn)
		}
		b.StopTimer()
		close(unblock)
		<-first
	})
	b.Run("workqueue+map", func(b *testing.B) {
		q := workqueue.NewTyped[string]()
		defer q.ShutDown()
		var mu sync.Mutex
		latest := map[string]dedup.Revision{"k": "running"}
		q.Add("k")
		key, _ := q.Get() // being processed: further Adds mark it dirty
		b.ReportAllocs()
		for i := range b.N {
			mu.Lock()
			latest["k"] = revs[i%len(revs)]
			mu.Unlock()
			q.Add("k")
		}
		b.StopTimer()
		q.Done(key)
	})
}

// BenchmarkLiveRevision: a trigger of the revision that is live already,
// with nothing running: the fast path that every poll of an unchanged
// source takes.
func BenchmarkLiveRevision(b *testing.B) {
	setup := func(b *testing.B) *dedup.Manager {
		m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Deploy(context.Background(), "k", revs[0]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close(context.Background()) })
		return m
	}
	b.Run("dedup.Trigger", func(b *testing.B) {
		m := setup(b)
		b.ReportAllocs()
		for range b.N {
			if _, err := m.Trigger("k", revs[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dedup.Notify", func(b *testing.B) {
		m := setup(b)
		b.ReportAllocs()
		for range b.N {
			if err := m.Notify("k", revs[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mutex+map", func(b *testing.B) {
		var mu sync.Mutex
		deployed := map[string]dedup.Revision{"k": revs[0]}
		q := workqueue.NewTyped[string]()
		defer q.ShutDown()
		b.ReportAllocs()
		for range b.N {
			mu.Lock()
			same := deployed["k"] == revs[0]
			mu.Unlock()
			if !same {
				q.Add("k")
			}
		}
	})
}

const dispatchKeys = 1024

var dispatchKeyNames = func() []string {
	k := make([]string, dispatchKeys)
	for i := range k {
		k[i] = fmt.Sprintf("stack-%04d", i)
	}
	return k
}()

// rounds calls round(n) with n keys per round until b.N deploys ran.
func rounds(b *testing.B, round func(round, n int)) {
	b.ReportAllocs()
	for done, r := 0, 0; done < b.N; r++ {
		n := min(dispatchKeys, b.N-done)
		round(r, n)
		done += n
	}
}

// BenchmarkDispatch: no-op deploys of 1024 distinct keys, one per key per
// round, each round waited for; ns/op is per deploy.
func BenchmarkDispatch(b *testing.B) {
	var wg sync.WaitGroup
	deploy := func(context.Context, string, dedup.Revision) error { wg.Done(); return nil }

	b.Run("goroutine-per-call", func(b *testing.B) {
		ctx := context.Background()
		rounds(b, func(r, n int) {
			wg.Add(n)
			for i := range n {
				go deploy(ctx, dispatchKeyNames[i], revs[r%2])
			}
			wg.Wait()
		})
	})
	viaManager := func(trigger func(m *dedup.Manager, key string, rev dedup.Revision) error) func(*testing.B) {
		return func(b *testing.B) {
			m, err := dedup.New(dedup.DeployFunc(deploy))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close(context.Background())
			rounds(b, func(r, n int) {
				wg.Add(n)
				for i := range n {
					if err := trigger(m, dispatchKeyNames[i], revs[r%2]); err != nil {
						b.Fatal(err)
					}
				}
				wg.Wait()
			})
		}
	}
	b.Run("dedup.Notify", viaManager(func(m *dedup.Manager, key string, rev dedup.Revision) error {
		return m.Notify(key, rev)
	}))
	b.Run("dedup.Trigger", viaManager(func(m *dedup.Manager, key string, rev dedup.Revision) error {
		_, err := m.Trigger(key, rev)
		return err
	}))
	b.Run("workqueue-2-workers", func(b *testing.B) {
		q := workqueue.NewTyped[string]()
		var mu sync.Mutex
		latest := make(map[string]dedup.Revision, dispatchKeys)
		var workers sync.WaitGroup
		for range 2 {
			workers.Go(func() {
				ctx := context.Background()
				for {
					key, shutdown := q.Get()
					if shutdown {
						return
					}
					mu.Lock()
					rev := latest[key]
					mu.Unlock()
					deploy(ctx, key, rev)
					q.Done(key)
				}
			})
		}
		rounds(b, func(r, n int) {
			wg.Add(n)
			for i := range n {
				mu.Lock()
				latest[dispatchKeyNames[i]] = revs[r%2]
				mu.Unlock()
				q.Add(dispatchKeyNames[i])
			}
			wg.Wait()
		})
		q.ShutDown()
		workers.Wait()
	})
}
