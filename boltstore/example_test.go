package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// A Manager with a boltstore remembers what is live across restarts: the
// second "process" here deploys nothing.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "boltstore-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "dedup.db")

	deploy := dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		fmt.Println("deploying", key, "at", rev)
		return nil
	})
	for run := 1; run <= 2; run++ { // two lifetimes of a service
		store, err := boltstore.Open(path)
		if err != nil {
			fmt.Println(err)
			return
		}
		m, err := dedup.New(deploy, dedup.WithStore(store))
		if err != nil {
			fmt.Println(err)
			return
		}
		res, err := m.Deploy(ctx, "web", "4f2a9c1")
		fmt.Println("run", run, res.Outcome, res.Revision, err)
		m.Close(ctx)  // first the Manager: it may still save
		store.Close() // then the file
	}
	// Output:
	// deploying web at 4f2a9c1
	// run 1 deployed 4f2a9c1 <nil>
	// run 2 unchanged 4f2a9c1 <nil>
}

// A second process that opens the same file gets ErrLocked after the lock
// timeout instead of hanging.
func ExampleOpen_locked() {
	dir, err := os.MkdirTemp("", "boltstore-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "dedup.db")

	first, err := boltstore.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer first.Close()

	_, err = boltstore.Open(path, boltstore.WithLockTimeout(100*time.Millisecond))
	fmt.Println(errors.Is(err, boltstore.ErrLocked))
	// Output:
	// true
}

// Load, Save and Delete are what a Manager calls, and what a tool that
// inspects or repairs the state can call too.
func ExampleStore_Load() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "boltstore-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	store, err := boltstore.Open(filepath.Join(dir, "dedup.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	if err := store.Save(ctx, "web", "4f2a9c1"); err != nil { // durable when it returns
		fmt.Println(err)
		return
	}
	fmt.Println(store.Load(ctx, "web"))
	if err := store.Delete(ctx, "web"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(store.Load(ctx, "web"))
	// Output:
	// 4f2a9c1 true <nil>
	//  false <nil>
}
