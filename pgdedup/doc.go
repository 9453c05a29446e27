// Package pgdedup holds dedup's guarantees across the replicas of a
// service, on the PostgreSQL database it already runs: per key, at most one
// deploy runs at a time across every replica, and one pending slot, shared
// by all of them, holds the newest revision triggered on any replica in the
// database's commit order. Each attempt holds a lease on its key with a
// fencing token that strictly increases per key, so a replica that died or
// stalled is replaced after its lease expires, and its late writes can be
// told apart from newer ones.
//
//	pool, _ := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
//	m, err := pgdedup.New(ctx, pool, dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
//		fence, _ := pgdedup.Fence(ctx) // hand it to a target that checks it
//		return deploy(ctx, key, rev, fence)
//	}), pgdedup.WithLease(30*time.Second))
//	if err != nil { ... }
//	defer m.Close(ctx)
//	p := poller.New(m) // every replica polls; each revision deploys once
//
// # The protocol
//
// One source of truth: a key's live, running and pending state is a row of
// the table keys; no replica acts on a copy. Every change of a key happens
// in a transaction that locks its row (SELECT ... FOR UPDATE), applies the
// per-key rules that the in-memory dedup.Manager applies too
// (internal/keyrules), writes the row back and commits. The SQL, each
// statement with the invariant it keeps, is in queries.sql.
//
// Trigger. Notify, Trigger and Deploy lock the key's row and apply the
// rules: the trigger joins the pending or running revision, is found live,
// supersedes the pending revision, or becomes it. If nothing of the key
// runs and its policy lets the pending run start now, the same transaction
// claims it for this replica; otherwise the row's due_at says when it may
// start.
//
// Claim. A replica claims a key by setting, under the row lock, fence to
// fence+1, owner to itself and lease_until to the server's time plus the
// lease. Replicas look for claimable keys (due_at passed with nothing
// running, or lease_until passed) when woken by a notification, when a
// timer for the next due_at fires, and every poll interval; they lock each
// such key with SKIP LOCKED, so two replicas never wait on one key, and
// decide again under the lock. The claiming replica runs the attempt with
// the fence in its context (Fence).
//
// Renew. While the attempt runs, its replica extends lease_until every
// third of the lease, with an UPDATE that matches the key, the fence and
// the owner. If no row matches, another replica has taken the key over: the
// attempt's context is canceled (cause ErrLeaseLost). If the database
// cannot be reached, the replica cancels the attempt itself before the
// lease can expire (it counts the lease from before it sent the claim or
// renewal, less a tenth), so by the time another replica may take the key
// over, the stale attempt's context is done. A trigger with
// cancel-in-progress sets running_canceled and notifies; the owner renews
// at once, sees it, and cancels its attempt.
//
// Finish. The attempt's end is recorded in a transaction that checks,
// under the row lock, that the row still holds this attempt: same fence,
// same owner. Then the rules decide (the revision is live, the failure is
// retried or absorbed by a newer pending revision) and the next pending
// run, if due, is claimed by the same transaction. An end that fails the
// check is not recorded; it is reported as an EventAborted whose error
// wraps ErrFenced. An end that cannot reach the database is retried until
// the database answers or the lease is long gone.
//
// Takeover. A replica that finds a key's lease expired locks its row and
// gives the running run back: if a newer revision is pending, the
// interrupted run's tickets go to it; otherwise the interrupted revision
// becomes pending again (the lost attempt does not count against retries).
// The replica then claims it with a higher fence. An attempt canceled
// because its lease was lost, or by Close, hands its key back the same way,
// at once.
//
// Tickets. The runs that callers wait on have ids; when a run ends, the
// results table records how (or which run took its tickets over), and a
// notification wakes the replicas whose tickets wait on it; every poll
// interval they look anyway.
//
// Wake-ups. Each replica takes one connection out of the pool for LISTEN
// (the pool opens another in its place, so a replica uses up to the pool's
// MaxConns + 1 server connections); a notification (a letter and a key,
// far below the 8000-byte limit) wakes it within milliseconds.
// Notifications may be lost (the connection breaks, a pooler in
// transaction mode cannot LISTEN: WithoutListen), so the poll interval
// bounds the delay a lost one causes, and a replica that listens again
// checks all its waiting tickets at once; nothing depends on them for
// correctness.
//
// # What the fence gives, and what remains without it
//
// Leases alone cannot make two attempts of a key never overlap: a replica
// frozen (a GC pause, SIGSTOP, a stalled VM) past its lease wakes up still
// running its deploy, after another replica took the key over. pgdedup
// cancels the stale attempt's context as soon as it runs again and refuses
// to record its end, but a write already on its way to the target still
// lands, unless the target checks the fence: a deployment label compared
// on update, a conditional write (UPDATE ... WHERE fence < $1), an object
// store precondition. A target that rejects a fence lower than one it has
// seen never accepts a stale replica's write. Where the target cannot check
// it, what remains is the lease, its renewal and the cancel: a stale
// attempt is canceled before another may start, as long as the replica's
// clock and timers run (a frozen process is the case they cannot cover).
//
// # Operations
//
// New creates the schema (WithSchema, default "dedupdeploy") and its two
// tables, keys and results, idempotently and one replica at a time (an
// advisory lock). Every replica must be configured with the same policies.
// The results of runs are kept for an hour (WithResultRetention).
package pgdedup
