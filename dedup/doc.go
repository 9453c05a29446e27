// Package dedup deploys keys so that deploys never pile up and the newest
// revision is never lost. Per key, at most one deploy runs at a time, and
// every trigger that arrives meanwhile collapses into at most one follow-up
// run of the newest revision; every caller that waits learns which run
// covered its trigger.
//
// Wrap your deploy function in a Manager and trigger it from wherever
// changes are seen (a poller, a webhook, a watcher):
//
//	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
//		return deployStack(ctx, key, string(rev))
//	}))
//	if err != nil {
//		return err
//	}
//	defer m.Close(context.Background())
//
//	res, err := m.Deploy(ctx, "web", "4f2a9c1") // or m.Trigger to not wait
//	fmt.Println(res.Outcome, res.Revision)     // deployed 4f2a9c1
//
// # The rules, per key
//
// The revision a key is heading to is its pending revision, else its
// running one, else its live one (the last deployed successfully).
//
//   - Join: a trigger of the revision the key is heading to starts nothing;
//     its ticket settles with that run. If that revision is live and
//     nothing runs or waits, the ticket settles at once as Unchanged,
//     unless Force is given.
//   - Supersede: a trigger of any other revision, even an older one (a
//     rollback), becomes the pending revision. It replaces the one pending
//     before in place; the tickets of the replaced revision settle with the
//     newer run as Superseded (or Failed, if that run fails).
//   - Start: the pending revision starts once the key's running deploy has
//     ended and its policy allows it (debounce, minimum interval, retry
//     backoff, concurrency limit). So however many triggers arrive during a
//     deploy, at most one follow-up runs.
//   - Retry: a failed run is retried with backoff as its RetryPolicy says,
//     unless a newer revision is pending, which replaces the retry.
//   - Record: a success is saved in the Store, so the same revision
//     triggered later, also after a restart with a durable Store, is
//     Unchanged. Trigger never does I/O: the Store is read off the trigger
//     path, before a key's first deploy.
//   - Close: refuses new triggers, aborts pending tickets, lets running
//     deploys finish until its context ends, then cancels them.
//
// A Ticket also says what its trigger did right then (Ticket.Action:
// started, queued, joined the running or pending run, or unchanged) and which
// pending revision it superseded (Ticket.Replaced), so that a webhook can
// answer at once.
//
// # What user code cannot break
//
// Deployers, Stores, observers, loggers and key policy functions are user
// code. Whatever they do (return, panic, call runtime.Goexit as t.FailNow
// does), every started run ends, every ticket settles, concurrency slots
// are released and Close returns:
//
//   - a panic in a Deployer or a Store is a *PanicError, with its stack:
//     a failed attempt, or a failed Load or Save;
//   - a runtime.Goexit in a Deployer or a Store is a failed attempt (or a
//     failed Load or Save) whose error wraps ErrGoexit; the Manager goes
//     on in a new goroutine;
//   - a panic in an observer or a logger is recovered and logged; the
//     Manager's state was recorded before the events were delivered;
//   - a panic in a key policy function is the error of the Trigger that
//     called it.
//
// A Deployer that ignores its canceled context still keeps Close waiting:
// nothing can stop a goroutine from outside.
//
// Memory per key does not grow with the number of triggers: a storm of
// distinct revisions during one long deploy keeps one pending slot, and
// deploys that keep failing while newer revisions arrive keep only the runs
// that tickets still held wait on (a Ticket dropped by its caller is not
// kept). An idle
// key has no goroutine and no timer; a goroutine exists only while a deploy
// of its key runs. The Manager keeps every key it has seen until
// Manager.Forget drops an idle one.
//
// Keys and revisions must be non-empty UTF-8, at most MaxLen bytes, without
// control characters. Revisions often come from outside (a webhook body):
// no part of this module hands one to a shell. Nothing else is checked: a
// revision may start with "-" and a key may hold "/" or "..", so a Deployer
// that puts them on a command line or in a path must guard against that (see
// package deployer).
//
// # Deploy time, and the poll interval
//
// Each key keeps a Baseline of its successful deploys (Status.Baseline): a
// weighted mean and the 90th percentile (P90) of the last BaselineWindow,
// in constant memory per key. WithSlowDeploy(multiple, floor) reports an
// attempt that runs longer than multiple×P90 and floor, while it runs: one
// EventSlow (with the baseline and the time it has run) and Status.Slow.
// It is off by default.
//
// Choose a poller's interval from P90. A change goes live at most about
// Every (until a poll sees it) + P90 (the deploy running when it is seen)
// + P90 (its own deploy) after it lands. So for a lag target L, poll every
// L − 2×P90 or less; if that is not positive, the deploy, not the poll, is
// too slow for L. Polling faster than P90 is harmless here (the triggers
// coalesce) but buys less lag than it costs the source: Every ≈ P90 is a
// good default, with webhooks (Poller.PollNow) for changes that must go
// faster. For example, with P90 = 40s and L = 3m, poll every 100s or
// less; 1m is a round choice. A slow deploy pushes the lag past that
// estimate, which is what EventSlow tells, while there is time to act.
//
// The rules per key are written once, in the module's internal/keyrules,
// and shared with pgdedup's Manager, which applies them across replicas on
// PostgreSQL; this package does the mechanics (locks, tickets, timers,
// slots, goroutines, events, the Store). Both Managers' model tests check
// them against the same reference model, internal/refmodel.
//
// Package deduptest has a fake Clock and a controllable Deployer to test
// code that uses a Manager.
package dedup
