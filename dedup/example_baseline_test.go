package dedup_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// A key's baseline is how long its deploys took; a deploy that runs past
// twice its P90 (and the floor) is reported while it runs.
func ExampleWithSlowDeploy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m, err := dedup.New(d, dedup.WithClock(clock), dedup.WithSlowDeploy(2, 30*time.Second),
		dedup.WithObserver(func(e dedup.Event) {
			if e.Kind == dedup.EventSlow {
				fmt.Printf("slow: %s %s has run %v, baseline %v\n", e.Key, e.Revision, e.Duration, e.Baseline)
			}
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	for _, took := range []time.Duration{40 * time.Second, 50 * time.Second} {
		t, _ := m.Trigger("web", dedup.Revision(fmt.Sprint("v", took)))
		call, err := d.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		clock.Advance(took)
		call.Finish(nil)
		_, _ = t.Wait(ctx)
	}
	s, _ := m.Status("web")
	fmt.Printf("baseline: %d deploys, mean %v, p90 %v\n", s.Baseline.Samples, s.Baseline.Mean, s.Baseline.P90)

	t, _ := m.Trigger("web", "v3")
	call, err := d.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	clock.Advance(2 * time.Minute) // past 2×50s
	call.Finish(nil)
	_, _ = t.Wait(ctx)
	// Output:
	// baseline: 2 deploys, mean 45s, p90 50s
	// slow: web v3 has run 1m40s, baseline 50s
}
