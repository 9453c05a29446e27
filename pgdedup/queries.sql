-- Every statement pgdedup sends, named by what it does. {{schema}} is
-- replaced by the quoted schema name (WithSchema); the LISTEN/NOTIFY
-- channel of that schema, "dedupdeploy_" and the schema name, is a
-- parameter of Notify. Times are the server's clock_timestamp(), so
-- replicas never compare their own clocks.
--
-- The invariants:
--   * keys.fence only grows: a claim (KeySave after KeyLock or KeyTryLock)
--     sets it to fence+1, nothing else writes it, so two attempts of a key
--     never share a fence.
--   * A running attempt's row is written only by the replica that holds its
--     lease (owner and fence match, checked under the row lock), or, once
--     lease_until has passed, by a replica that takes it over.
--   * Every change of a key's state happens in a transaction that holds
--     the key's row lock (KeyLock or KeyTryLock), so replicas apply the
--     per-key rules one at a time, in the database's commit order.

-- name: Migrate
-- Creates the schema. New runs it inside a transaction that holds an
-- advisory lock on the schema name, so replicas starting at once take
-- turns and the IF NOT EXISTS clauses never race.
CREATE SCHEMA IF NOT EXISTS {{schema}};
-- keys: one row per key, the only copy of its state.
CREATE TABLE IF NOT EXISTS {{schema}}.keys (
	key              text PRIMARY KEY,
	live             text,              -- last deployed revision; NULL: none
	running_rev      text,              -- the running run's revision; NULL: none runs
	running_force    boolean NOT NULL DEFAULT false,
	running_attempts integer NOT NULL DEFAULT 0,
	running_canceled boolean NOT NULL DEFAULT false, -- cancel-in-progress asked the owner to stop
	running_run      bigint NOT NULL DEFAULT 0,      -- run id the running run's tickets wait on
	running_started  timestamptz,                    -- its first attempt's start
	pending_rev      text,              -- the pending run's revision; NULL: none waits
	pending_force    boolean NOT NULL DEFAULT false,
	pending_attempts integer NOT NULL DEFAULT 0,     -- > 0: a failed run waiting for its retry
	pending_first    timestamptz,       -- first trigger of the burst (debounce)
	pending_last     timestamptz,       -- latest trigger of the burst (debounce)
	pending_retry_at timestamptz,       -- earliest retry
	pending_run      bigint NOT NULL DEFAULT 0,
	pending_started  timestamptz,       -- a retried run's first attempt's start
	last_started     timestamptz,       -- start of the last attempt (min interval)
	last_run         bigint NOT NULL DEFAULT 0,      -- run ids are allocated from here
	fence            bigint NOT NULL DEFAULT 0,      -- fencing token of the latest attempt
	owner            text,              -- replica holding the running attempt's lease
	lease_until      timestamptz,       -- the lease ends then unless renewed
	due_at           timestamptz,       -- nothing runs and the pending run may start then
	runs             integer NOT NULL DEFAULT 0,
	deployed         integer NOT NULL DEFAULT 0,
	failures         integer NOT NULL DEFAULT 0,
	superseded       integer NOT NULL DEFAULT 0,
	last_err         text,
	last_finished    timestamptz
);
CREATE INDEX IF NOT EXISTS keys_due ON {{schema}}.keys (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS keys_lease ON {{schema}}.keys (lease_until) WHERE running_rev IS NOT NULL;
-- results: how runs ended, for the tickets that wait on them on any
-- replica. A row with by_run set says the run's tickets moved to that run.
CREATE TABLE IF NOT EXISTS {{schema}}.results (
	key      text NOT NULL,
	run      bigint NOT NULL,
	by_run   bigint,            -- the run that settles this run's tickets instead
	rev      text,              -- the revision the settling run deployed
	outcome  smallint,          -- dedup.Outcome; NULL when by_run is set
	err      text,
	attempts integer NOT NULL DEFAULT 0,
	started  timestamptz,
	finished timestamptz NOT NULL,
	PRIMARY KEY (key, run)
);
CREATE INDEX IF NOT EXISTS results_finished ON {{schema}}.results (finished);

-- name: MigrateLock
-- Serializes Migrate across replicas for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtextextended('dedupdeploy:' || $1, 0));

-- name: KeyEnsure
-- Makes the row of a key triggered for the first time. It takes no lock
-- on an existing row.
INSERT INTO {{schema}}.keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING;

-- name: KeyLock
-- Locks a key's row for the rest of the transaction and reads its state
-- and the server's time. Triggers wait for the lock: they must be applied.
SELECT live, running_rev, running_force, running_attempts, running_canceled, running_run, running_started,
	pending_rev, pending_force, pending_attempts, pending_first, pending_last, pending_retry_at, pending_run, pending_started,
	last_started, last_run, fence, owner, lease_until, runs, deployed, failures, superseded, last_err, last_finished,
	clock_timestamp()
FROM {{schema}}.keys WHERE key = $1 FOR UPDATE;

-- name: KeyTryLock
-- KeyLock for a claim: a row another replica has locked is skipped, since
-- that replica applies the rules to it right now and will leave it either
-- running or with a due_at that someone claims later. {{KeyLock}} is
-- KeyLock's text without its semicolon, so the two never differ in columns.
{{KeyLock}} SKIP LOCKED;

-- name: KeySave
-- Writes back a key's state, under the row lock KeyLock or KeyTryLock took
-- in the same transaction. The fence and owner written are the ones the
-- transaction checked or set (a claim sets fence+1 and its owner).
UPDATE {{schema}}.keys SET live = $2,
	running_rev = $3, running_force = $4, running_attempts = $5, running_canceled = $6, running_run = $7, running_started = $8,
	pending_rev = $9, pending_force = $10, pending_attempts = $11, pending_first = $12, pending_last = $13, pending_retry_at = $14,
	pending_run = $15, pending_started = $16,
	last_started = $17, last_run = $18, fence = $19, owner = $20, lease_until = $21, due_at = $22,
	runs = $23, deployed = $24, failures = $25, superseded = $26, last_err = $27, last_finished = $28
WHERE key = $1;

-- name: ResultPut
-- Records how a run ended (or which run took over its tickets), under the
-- key's row lock. Run ids are unique per key, so a row is written once.
INSERT INTO {{schema}}.results (key, run, by_run, rev, outcome, err, attempts, started, finished)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())
ON CONFLICT (key, run) DO NOTHING;

-- name: ResultsGet
-- Reads the ends of the runs tickets of one key wait on. No lock: a row is
-- never changed once written.
SELECT run, by_run, rev, outcome, err, attempts, started, finished
FROM {{schema}}.results WHERE key = $1 AND run = ANY($2);

-- name: ResultsPrune
-- Drops the ends of runs older than the retention; tickets read theirs
-- within a poll interval, so only forgotten ones go.
DELETE FROM {{schema}}.results WHERE finished < clock_timestamp() - $1::interval;

-- name: KeysClaimable
-- Keys a replica may claim: nothing runs and the pending run is due, or
-- the running attempt's lease has expired (its replica died or stalled).
-- No lock here: each key is then locked with KeyTryLock, and the rules
-- decide again under the lock.
SELECT key FROM {{schema}}.keys
WHERE (running_rev IS NULL AND due_at <= clock_timestamp())
   OR (running_rev IS NOT NULL AND lease_until < clock_timestamp())
ORDER BY coalesce(due_at, lease_until)
LIMIT $1;

-- name: NextWake
-- How long until the next key becomes claimable (NULL: none waits).
SELECT extract(epoch FROM min(CASE WHEN running_rev IS NULL THEN due_at ELSE lease_until END) - clock_timestamp())
FROM {{schema}}.keys WHERE due_at IS NOT NULL OR running_rev IS NOT NULL;

-- name: LeaseRenew
-- Extends the lease of a running attempt, only while the row still holds
-- that attempt: same fence (no takeover happened) and same owner. No row
-- back means the lease is lost. It also reports whether cancel-in-progress
-- asked the attempt to stop.
UPDATE {{schema}}.keys SET lease_until = clock_timestamp() + $3::interval
WHERE key = $1 AND fence = $2 AND owner = $4 AND running_rev IS NOT NULL
RETURNING running_canceled;

-- name: Notify
-- Wakes the replicas (delivered when the transaction commits). Payloads
-- stay small: a letter and a key of at most 1024 bytes.
SELECT pg_notify($1, $2);

-- name: StatusSelect
-- The columns Status reads, never sent alone: KeyStatus and KeyStatuses
-- complete it. No lock.
SELECT key, live, running_rev, running_attempts, pending_rev, pending_attempts, due_at, runs, deployed, failures, superseded,
	last_err, last_started, last_finished, fence, owner, lease_until
FROM {{schema}}.keys;

-- name: KeyStatus
-- One key's state for Status.
{{StatusSelect}} WHERE key = $1;

-- name: KeyStatuses
-- Every key's state for Statuses.
{{StatusSelect}} ORDER BY key;
