package poller_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

type nopTrigger struct{}

func (nopTrigger) Notify(string, dedup.Revision, ...dedup.TriggerOption) error { return nil }

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdleKeys watches 10,000 and 100,000 keys on the real clock,
// lets each poll once, and measures what the idle keys cost: goroutines and
// heap bytes per key (the Poller, its map, key states, timers and key
// strings; the sources are shared). One op is the whole setup and teardown.
func BenchmarkIdleKeys(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint("keys=", n), func(b *testing.B) { benchIdleKeys(b, n) })
	}
}

func benchIdleKeys(b *testing.B, n int) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("stack-%06d", i)
	}
	src := poller.SourceFunc(func(context.Context) (dedup.Revision, error) { return "r1", nil })
	b.ReportAllocs()
	var goroutines, bytes float64
	for b.Loop() {
		g0, h0 := runtime.NumGoroutine(), heapInUse()
		var polled atomic.Int64
		all := make(chan struct{})
		p := poller.New(nopTrigger{}, poller.WithObserver(func(poller.Event) {
			if polled.Add(1) == int64(n) {
				close(all)
			}
		}))
		// Every key polls once at once (no jitter) and then waits an hour;
		// no Timeout, whose timers would count too.
		for _, k := range keys {
			if err := p.Watch(k, src, poller.Every(time.Hour), poller.Jitter(0), poller.Timeout(0)); err != nil {
				b.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		<-all
		// The last polls settle after their event: wait for their
		// goroutines to end.
		for runtime.NumGoroutine() > g0+1 {
			runtime.Gosched()
		}
		g1, h1 := runtime.NumGoroutine(), heapInUse()
		goroutines = float64(g1-g0-1) / float64(n) // minus the goroutine of Run
		bytes = float64(int64(h1)-int64(h0)) / float64(n)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		runtime.KeepAlive(p)
	}
	b.ReportMetric(goroutines, "goroutines/key")
	b.ReportMetric(bytes, "B/key")
}

// BenchmarkRuntimeTimer is what one armed time.AfterFunc timer with its own
// callback costs on the heap, at 100,000 timers: the part of a key's cost
// that one timer heap per Poller could save. Run it alone, with
// -benchtime=1x: stopped timers linger in the runtime's timer heaps until
// later timers clean them up, which blurs any measurement but the first in
// a process.
func BenchmarkRuntimeTimer(b *testing.B) {
	const n = 100_000
	keys := make([]struct{ seq uint32 }, n) // what a callback refers to, as the Poller's does
	var bytes float64
	for b.Loop() {
		timers := make([]*time.Timer, n)
		h0 := heapInUse()
		for i := range timers {
			ks := &keys[i]
			timers[i] = time.AfterFunc(time.Hour, func() { ks.seq++ })
		}
		bytes = float64(int64(heapInUse())-int64(h0)) / n
		for _, t := range timers {
			t.Stop()
		}
	}
	b.ReportMetric(bytes, "B/timer")
}

// BenchmarkPollUnchanged is the cost of one poll that finds the revision
// seen before, with the fake clock.
func BenchmarkPollUnchanged(b *testing.B) {
	clock := new(deduptest.Clock)
	polled := make(chan struct{}, 1)
	p := poller.New(nopTrigger{}, poller.WithClock(clock), poller.WithObserver(func(poller.Event) { polled <- struct{}{} }))
	if err := p.Watch("web", constant("r1"), poller.Every(time.Second), poller.Jitter(0), poller.Timeout(0)); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	b.ReportAllocs()
	for b.Loop() {
		if err := clock.WaitTimers(ctx, 1); err != nil {
			b.Fatal(err)
		}
		clock.AdvanceNext()
		<-polled
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWatch is the cost of watching a key, before Run.
func BenchmarkWatch(b *testing.B) {
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprintf("stack-%05d", i)
	}
	src := constant("r1")
	p := poller.New(nopTrigger{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.Watch(keys[i%len(keys)], src); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
