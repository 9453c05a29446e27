package dedup_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// BenchmarkIdleKeyMemory reports the heap an idle key retains: its state,
// its share of the key index, a copy of its name ("stack-000123") and its
// live revision (40 hex characters, like a commit SHA). Run it with
// -benchtime=1x; it deploys 100k keys once each.
func BenchmarkIdleKeyMemory(b *testing.B) { benchmarkKeyMemory(b, 1) }

// benchmarkKeyMemory reports the heap retained per key by 100k keys, each
// deployed deploys times (with a new revision of 40 characters each time).
func benchmarkKeyMemory(b *testing.B, deploys int) {
	const keys = 100_000
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }))
		if err != nil {
			b.Fatal(err)
		}
		for i := range keys {
			key := fmt.Sprintf("stack-%06d", i)
			for j := range deploys {
				if _, err := m.Deploy(ctx, key, dedup.Revision(fmt.Sprintf("%039x%d", i, j))); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/keys, "B/key")
		if st, ok := m.Status("stack-000042"); !ok || st.Live == "" || st.Baseline.Samples != deploys {
			b.Fatalf("Status = %+v, %v; want a live key with a baseline of %d", st, ok, deploys)
		}
		if err := m.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
