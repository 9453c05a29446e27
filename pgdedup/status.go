package pgdedup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/jackc/pgx/v5"
)

// Lease is who runs a key, as the database says.
type Lease struct {
	Owner string    // the replica holding the running attempt's lease; empty when none runs
	Fence int64     // the fence of the key's latest attempt (0: none yet)
	Until time.Time // the lease ends then unless renewed (by the server's clock); zero when none runs
}

// KeyStatus is a key's state across the cluster: dedup.Status plus its
// lease.
type KeyStatus struct {
	dedup.Status
	Lease Lease
}

type statusScanner interface{ Scan(dest ...any) error }

func scanStatus(s statusScanner) (KeyStatus, error) {
	var (
		ks                                   KeyStatus
		live, running, pending, lastErr, own *string
		due, started, finished, until        *time.Time
	)
	var pendingAttempts int
	err := s.Scan(&ks.Key, &live, &running, &ks.Attempt, &pending, &pendingAttempts, &due, &ks.Runs, &ks.Deployed, &ks.Failures, &ks.Superseded,
		&lastErr, &started, &finished, &ks.Lease.Fence, &own, &until)
	if err != nil {
		return ks, err
	}
	ks.Live, ks.Running, ks.Pending = dedup.Revision(deref(live)), dedup.Revision(deref(running)), dedup.Revision(deref(pending))
	if ks.Running == "" {
		ks.Attempt = pendingAttempts // a failed run waiting for its retry
	}
	if lastErr != nil {
		ks.LastErr = errors.New(*lastErr)
	}
	ks.NextStart, ks.LastStarted, ks.LastFinished = deref(due), deref(started), deref(finished)
	ks.Lease.Owner, ks.Lease.Until = deref(own), deref(until)
	return ks, nil
}

// Status returns the state of key across the cluster, read from the
// database in one query bounded by ctx; ok is false for a key never
// triggered. Safe for concurrent use.
func (m *Manager) Status(ctx context.Context, key string) (st KeyStatus, ok bool, err error) {
	st, err = scanStatus(m.pool.QueryRow(ctx, m.q.keyStatus, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return KeyStatus{}, false, nil
	}
	if err != nil {
		return KeyStatus{}, false, fmt.Errorf("pgdedup: status of %q: %w", key, err)
	}
	return st, true, nil
}

// Statuses returns the state of every key, sorted by key, in one query
// bounded by ctx. Safe for concurrent use.
func (m *Manager) Statuses(ctx context.Context) ([]KeyStatus, error) {
	rows, err := m.pool.Query(ctx, m.q.keyStatuses)
	if err != nil {
		return nil, fmt.Errorf("pgdedup: statuses: %w", err)
	}
	defer rows.Close()
	var out []KeyStatus
	for rows.Next() {
		st, err := scanStatus(rows)
		if err != nil {
			return nil, fmt.Errorf("pgdedup: statuses: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgdedup: statuses: %w", err)
	}
	return out, nil
}

// View is the cluster's state for readers that take no context and expect
// no error, such as statuspage.Source: each call is one query bounded by
// 10s, and a failed query reads as no keys (use Status and Statuses for
// the error). It is safe for concurrent use.
type View struct{ m *Manager }

// View returns the cluster's state as a View.
func (m *Manager) View() View { return View{m} }

// Statuses returns every key's dedup.Status, sorted by key; nil if the
// query failed.
func (v View) Statuses() []dedup.Status {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	sts, err := v.m.Statuses(ctx)
	if err != nil {
		return nil
	}
	out := make([]dedup.Status, len(sts))
	for i, st := range sts {
		out[i] = st.Status
	}
	return out
}

// Status returns key's dedup.Status; ok is false for a key never triggered
// or if the query failed.
func (v View) Status(key string) (dedup.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	st, ok, err := v.m.Status(ctx, key)
	return st.Status, ok && err == nil
}
