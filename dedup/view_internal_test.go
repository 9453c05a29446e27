package dedup

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// The rules' view of a key is built in its shard's scratch State, and for a
// key whose policy is not timed the runs' times are left as they are. A key
// with a timed policy in the same shard must not leave its times there for
// the other: here, the retry time of a failed run.
func TestViewTimesAcrossKeysOfAShard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan string, 10)
		release := make(chan struct{})
		m, err := New(DeployFunc(func(ctx context.Context, key string, rev Revision) error {
			started <- key + " " + string(rev)
			if key == "timed" {
				return errors.New("fails")
			}
			<-release
			return nil
		}), WithKeyPolicy(func(key string) Policy {
			if key == "timed" {
				return Policy{Retry: RetryPolicy{MaxAttempts: 3, Initial: time.Hour}}
			}
			return Policy{}
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(context.Background())
		other := ""
		for i := 0; other == ""; i++ { // an untimed key in the timed key's shard
			if k := fmt.Sprint("k", i); m.shard(k) == m.shard("timed") {
				other = k
			}
		}
		expect := func(want string) {
			t.Helper()
			synctest.Wait()
			select {
			case got := <-started:
				if got != want {
					t.Fatalf("started %q; want %q", got, want)
				}
			default:
				t.Fatalf("nothing started; want %q", want)
			}
		}

		// The timed key fails, and waits an hour for its retry.
		if err := m.Notify("timed", "v1"); err != nil {
			t.Fatal(err)
		}
		expect("timed v1")
		if st, _ := m.Status("timed"); st.Pending != "v1" || st.NextStart.IsZero() {
			t.Fatalf("timed key: pending %q, next start %v; want v1 waiting for its retry", st.Pending, st.NextStart)
		}

		// The untimed key runs r0 with r1 pending when the shard's view
		// is last built for the timed key: r1 must start as soon as r0
		// ends.
		if err := m.Notify(other, "r0"); err != nil {
			t.Fatal(err)
		}
		expect(other + " r0")
		if err := m.Notify(other, "r1"); err != nil {
			t.Fatal(err)
		}
		if err := m.Notify("timed", "v1"); err != nil { // joins: the view of the timed key
			t.Fatal(err)
		}
		release <- struct{}{}
		expect(other + " r1")
		close(release)
	})
}
