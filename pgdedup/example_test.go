package pgdedup_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Two replicas share one key: a trigger on either joins or supersedes the
// same pending revision, and the deploy that covers it settles the tickets
// on both. The test server stands in for the service's database.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, srv.URL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	release := make(chan struct{})
	deploys := make(chan string, 10)
	deploy := dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fence, _ := pgdedup.Fence(ctx)
		deploys <- fmt.Sprintf("deployed %s@%s with fence %d", key, rev, fence)
		if rev == "v1" {
			<-release // v1 takes a while
		}
		return nil
	})
	schema := fmt.Sprintf("example_%d", time.Now().UnixNano())
	defer pool.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	a, err := pgdedup.New(ctx, pool, deploy, pgdedup.WithSchema(schema))
	if err != nil {
		panic(err)
	}
	defer a.Close(ctx)
	b, err := pgdedup.New(ctx, pool, deploy, pgdedup.WithSchema(schema))
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	t1, _ := a.Trigger("site", "v1")
	t2, _ := b.Trigger("site", "v2") // v1 runs on a: v2 is pending for both
	t3, _ := a.Trigger("site", "v3") // supersedes v2
	fmt.Println(t1.Action(), t2.Action(), t3.Action(), "replacing", t3.Replaced())
	close(release)
	for _, t := range []*pgdedup.Ticket{t1, t2, t3} {
		r, _ := t.Wait(ctx)
		fmt.Printf("%s: %s by %s\n", r.Requested, r.Outcome, r.Revision)
	}
	fmt.Println(<-deploys)
	fmt.Println(<-deploys)
	// Output:
	// started queued queued replacing v2
	// v1: deployed by v1
	// v2: superseded by v3
	// v3: deployed by v3
	// deployed site@v1 with fence 1
	// deployed site@v3 with fence 2
}
