package dedup_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// Wrap a deploy function in a Manager and ask it for revisions; a revision
// that is live already is not deployed again.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fmt.Println("deploying", key, "at", rev) // run docker compose, kubectl, ...
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	for range 2 {
		res, err := m.Deploy(ctx, "web", "4f2a9c1")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(res.Outcome, res.Revision)
	}
	// Output:
	// deploying web at 4f2a9c1
	// deployed 4f2a9c1
	// unchanged 4f2a9c1
}

// Three triggers arrive while v1 deploys: they collapse into one follow-up
// run of the newest, v4, and the tickets of v2 and v3 learn that v4 covered
// them.
func Example_coalescing() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	release := make(chan struct{})
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fmt.Println("deploying", rev)
		select {
		case <-release: // a slow deploy
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	var tickets []*dedup.Ticket
	for _, rev := range []dedup.Revision{"v1", "v2", "v3", "v4"} {
		// v1 starts at once; the others arrive while it runs.
		t, err := m.Trigger("web", rev)
		if err != nil {
			fmt.Println(err)
			return
		}
		tickets = append(tickets, t)
	}
	close(release)

	var lines []string
	for _, t := range tickets {
		res, err := t.Wait(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		// Action: what the trigger did; Result: how it ended.
		did := t.Action().String()
		if t.Replaced() != "" {
			did += " in place of " + string(t.Replaced())
		}
		lines = append(lines, fmt.Sprintf("%s: %s, then %s by %s", res.Requested, did, res.Outcome, res.Revision))
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// deploying v1
	// deploying v4
	// v1: started, then deployed by v1
	// v2: queued, then superseded by v4
	// v3: queued in place of v2, then superseded by v4
	// v4: queued in place of v3, then deployed by v4
}

// Test code that uses a Manager with a fake clock and a Deployer whose
// calls the test finishes: here, a debounced burst of triggers.
func Example_testing() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	clock := new(deduptest.Clock)
	d := new(deduptest.Deployer)
	m, err := dedup.New(d, dedup.WithClock(clock), dedup.WithDebounce(10*time.Second, time.Minute))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	t1, _ := m.Trigger("web", "v1")
	clock.Advance(5 * time.Second)
	t2, _ := m.Trigger("web", "v2") // restarts the quiet period
	clock.Advance(9 * time.Second)
	s, _ := m.Status("web")
	fmt.Printf("after 14s: running %q, pending %q\n", s.Running, s.Pending)

	clock.Advance(time.Second)
	call, err := d.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("deploying", call.Revision, "after", clock.Since(deduptest.Epoch))
	call.Finish(nil)

	for _, t := range []*dedup.Ticket{t1, t2} {
		res, _ := t.Wait(ctx)
		fmt.Println(res.Requested, res.Outcome, res.Revision)
	}
	// Output:
	// after 14s: running "", pending "v2"
	// deploying v2 after 15s
	// v1 superseded v2
	// v2 deployed v2
}
