package poller_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// A Poller triggers a Manager with the revisions its sources report.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	m, err := dedup.New(dedup.DeployFunc(func(_ context.Context, key string, rev dedup.Revision) error {
		fmt.Println("deploy", key, rev)
		stop() // end the example after the first deploy
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(context.Background())

	p := poller.New(m)
	release := poller.SourceFunc(func(context.Context) (dedup.Revision, error) {
		return "v1.4.2", nil // e.g. read from a release API
	})
	if err := p.Watch("web", release, poller.Every(time.Minute), poller.Jitter(0)); err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil { // returns when ctx ends
		log.Fatal(err)
	}
	// Output: deploy web v1.4.2
}

// Test code that polls with the fake clock of deduptest: polls start when
// the test advances the clock, not after real waits.
func ExampleWithClock() {
	clock := new(deduptest.Clock)
	deployed := make(chan dedup.Revision)
	m, err := dedup.New(dedup.DeployFunc(func(_ context.Context, _ string, rev dedup.Revision) error {
		deployed <- rev
		return nil
	}), dedup.WithClock(clock))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(context.Background())

	var current atomic.Value
	current.Store(dedup.Revision("v1"))
	src := poller.SourceFunc(func(context.Context) (dedup.Revision, error) {
		return current.Load().(dedup.Revision), nil
	})
	p := poller.New(m, poller.WithClock(clock))
	if err := p.Watch("web", src, poller.Every(time.Minute), poller.Jitter(0)); err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	_ = clock.WaitTimers(ctx, 1) // the first poll is armed
	clock.Advance(0)
	fmt.Println(<-deployed)

	current.Store(dedup.Revision("v2"))
	_ = clock.WaitTimers(ctx, 1) // the next poll is armed
	clock.Advance(time.Minute)
	fmt.Println(<-deployed)

	stop()
	<-done
	// Output:
	// v1
	// v2
}

// Watch the tip of a branch, and poll at once when a webhook says it moved.
func ExampleGit() {
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		return nil // check out rev and deploy it
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(context.Background())
	p := poller.New(m, poller.WithLogger(slog.Default()))
	err = p.Watch("web", poller.Git("https://git.example.com/web.git", "main"),
		poller.Every(30*time.Second), poller.Timeout(20*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("POST /hooks/web", func(w http.ResponseWriter, r *http.Request) {
		if err := p.PollNow("web"); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	})
	// go p.Run(ctx)
}

// Watch an image tag in a registry: a HEAD request reports the manifest
// digest, which changes when the tag is pushed again.
func ExampleHTTP() {
	src := poller.HTTP("https://registry.example.com/v2/team/web/manifests/stable")
	src.Method = http.MethodHead
	src.Header = http.Header{
		"Accept":        {"application/vnd.oci.image.index.v1+json"},
		"Authorization": {"Bearer " + "token"},
	}
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, digest dedup.Revision) error {
		return nil // deploy team/web@digest
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(context.Background())
	p := poller.New(m)
	if err := p.Watch("web", src, poller.Every(5*time.Minute)); err != nil {
		log.Fatal(err)
	}
	// go p.Run(ctx)
}
