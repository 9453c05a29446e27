// Package deduptest holds what you need to unit-test code that uses a
// dedup.Manager, with no real sleeps and no polling: a fake Clock that
// moves only when the test says so, and a Deployer whose calls block until
// the test finishes them.
//
// A test drives time and deploys explicitly and waits for explicit signals:
//
//	clock := new(deduptest.Clock)
//	d := new(deduptest.Deployer)
//	m, _ := dedup.New(d, dedup.WithClock(clock), dedup.WithDebounce(time.Second, 0))
//	m.Trigger("web", "v1")
//	clock.WaitTimers(ctx, 1) // the debounce timer is armed
//	clock.Advance(time.Second)
//	call, _ := d.Next(ctx) // the deploy of v1 started
//	call.Finish(nil)
//
// Both also work inside a testing/synctest bubble.
package deduptest
