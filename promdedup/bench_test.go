package promdedup_test

import (
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/promdedup"
)

// BenchmarkObserve is the cost an observer adds to the Manager per event:
// one trigger that queues, starts and succeeds (four events).
func BenchmarkObserve(b *testing.B) {
	for _, bb := range []struct {
		name string
		opts []promdedup.Option
	}{{"no-key-label", nil}, {"key-label", []promdedup.Option{promdedup.WithKeyLabel()}}} {
		b.Run(bb.name, func(b *testing.B) {
			metrics := promdedup.New(bb.opts...)
			t0 := time.Unix(0, 0)
			evs := []dedup.Event{
				{Kind: dedup.EventQueued, Key: "web", Revision: "v1", Action: dedup.ActionStarted, Time: t0},
				{Kind: dedup.EventStarted, Key: "web", Revision: "v1", Attempt: 1, Time: t0},
				{Kind: dedup.EventSucceeded, Key: "web", Revision: "v1", Attempt: 1, Duration: time.Minute, Time: t0.Add(time.Minute)},
				{Kind: dedup.EventCoalesced, Key: "web", Revision: "v1", Action: dedup.ActionJoinedRunning, Time: t0},
			}
			b.ReportAllocs()
			for b.Loop() {
				for _, e := range evs {
					metrics.Observe(e)
				}
			}
		})
	}
}
