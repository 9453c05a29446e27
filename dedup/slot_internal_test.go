package dedup

import (
	"context"
	"testing"
	"time"
)

// gateCall is one deploy of a gated Deployer: it returns what is sent on
// done.
type gateCall struct {
	key  string
	rev  Revision
	done chan error
}

// A trigger of a key in the moment between the slot being passed to it and
// its start must not leave it queued for another slot: a key that waited
// longer would be passed over.
func TestHandOverKeepsFIFO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := make(chan gateCall)
	m, err := New(DeployFunc(func(ctx context.Context, key string, rev Revision) error {
		c := gateCall{key, rev, make(chan error)}
		select {
		case calls <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-c.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}), WithMaxConcurrent(1))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		closeCtx, cancel := context.WithCancel(ctx)
		if t.Failed() {
			cancel() // cancel the deploys the test left running
		}
		defer cancel()
		m.Close(closeCtx)
	}()
	next := func(want string) gateCall {
		t.Helper()
		select {
		case c := <-calls:
			if got := c.key + "@" + string(c.rev); got != want {
				t.Fatalf("deploy of %s started; want %s", got, want)
			}
			return c
		case <-ctx.Done():
			t.Fatalf("no deploy started; want %s", want)
			return gateCall{}
		}
	}
	notify := func(key string, rev Revision) {
		t.Helper()
		if err := m.Notify(key, rev); err != nil {
			t.Fatal(err)
		}
	}

	notify("a", "a1")
	a1 := next("a@a1")
	notify("b", "b1") // waits for a's slot
	testHookHandOver = func(key string) {
		if key == "b" {
			testHookHandOver = nil
			notify("b", "b2") // supersedes b1 as the slot reaches b
		}
	}
	t.Cleanup(func() { testHookHandOver = nil })
	a1.done <- nil
	b2 := next("b@b2")
	notify("d", "d1") // waits for b's slot
	notify("b", "b3") // pending behind b2: it must wait behind d
	b2.done <- nil
	next("d@d1").done <- nil
	next("b@b3").done <- nil
}
