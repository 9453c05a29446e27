package dedup_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

// countingStore wraps a MemoryStore: it counts calls and can fail them.
type countingStore struct {
	dedup.MemoryStore
	loadErr, saveErr error

	mu           sync.Mutex
	loads, saves map[string]int
}

func newCountingStore() *countingStore {
	return &countingStore{loads: map[string]int{}, saves: map[string]int{}}
}

func (s *countingStore) Load(ctx context.Context, key string) (dedup.Revision, bool, error) {
	s.mu.Lock()
	s.loads[key]++
	s.mu.Unlock()
	if s.loadErr != nil {
		return "", false, s.loadErr
	}
	return s.MemoryStore.Load(ctx, key)
}

func (s *countingStore) Save(ctx context.Context, key string, rev dedup.Revision) error {
	s.mu.Lock()
	s.saves[key]++
	s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	return s.MemoryStore.Save(ctx, key, rev)
}

func (s *countingStore) calls(key string) (loads, saves int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[key], s.saves[key]
}

// A second Manager on the Store of the first is a restart: the revision the
// first deployed is Unchanged without a deploy, unless forced.
func TestStoreSurvivesRestart(t *testing.T) {
	tests := []struct {
		name    string
		opts    []dedup.TriggerOption
		outcome dedup.Outcome
		deploys int
	}{
		{"same revision", nil, dedup.Unchanged, 0},
		{"same revision forced", []dedup.TriggerOption{dedup.Force()}, dedup.Deployed, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			store := new(dedup.MemoryStore)
			first, err := dedup.New(instant(), dedup.WithStore(store))
			require.NoError(t, err)
			res, err := first.Deploy(ctx, "web", "v1")
			require.NoError(t, err)
			requireResult(t, res, "v1", "v1", dedup.Deployed)
			require.NoError(t, first.Close(ctx))

			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithStore(store))
			tk := trigger(t, m, "web", "v1", tt.opts...)
			if tt.deploys > 0 {
				nextCall(ctx, t, d).Finish(nil)
			}
			res = await(ctx, t, tk)
			requireResult(t, res, "v1", "v1", tt.outcome)
			require.Len(t, d.Calls(), tt.deploys, "deploys after the restart")
			s := status(t, m, "web")
			require.Equal(t, dedup.Revision("v1"), s.Live, "Status.Live after the restart")
			require.Equal(t, tt.deploys, s.Runs, "Status.Runs")

			// Now that the key's revision is known, the same trigger
			// settles at once.
			tk = trigger(t, m, "web", "v1")
			requireSettled(t, tk, "Trigger of the stored revision")
			requireResult(t, tk.Result(), "v1", "v1", dedup.Unchanged)

			// A different revision is deployed and saved.
			tk = trigger(t, m, "web", "v2")
			nextCall(ctx, t, d).Finish(nil)
			requireResult(t, await(ctx, t, tk), "v2", "v2", dedup.Deployed)
			rev, ok, err := store.Load(ctx, "web")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, dedup.Revision("v2"), rev, "stored revision")
		})
	}
}

func TestStoreSavesOnlySuccess(t *testing.T) {
	ctx := testContext(t)
	store := newCountingStore()
	m := newManager(t, instant("bad"), dedup.WithStore(store))
	for _, step := range []struct {
		rev    dedup.Revision
		stored dedup.Revision
	}{{"v1", "v1"}, {"bad", "v1"}, {"v2", "v2"}} {
		_, _ = m.Deploy(ctx, "web", step.rev)
		// The ticket settles after Save returned.
		rev, _, err := store.MemoryStore.Load(ctx, "web")
		require.NoError(t, err)
		require.Equalf(t, step.stored, rev, "stored revision after deploying %q", step.rev)
	}
	loads, saves := store.calls("web")
	require.Equal(t, 1, loads, "Load calls: once per key, before its first deploy")
	require.Equal(t, 2, saves, "Save calls: once per success")
}

// A failing Store is reported but does not fail the deploy.
func TestStoreFailureIsReported(t *testing.T) {
	errStore := errors.New("store down")
	tests := []struct {
		name       string
		load, save error
		prefix     string
	}{
		{"load fails", errStore, nil, "load"},
		{"save fails", nil, errStore, "save"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			store := newCountingStore()
			store.loadErr, store.saveErr = tt.load, tt.save
			rec := newRecorder()
			d := new(deduptest.Deployer)
			m := newManager(t, d, dedup.WithStore(store), dedup.WithObserver(rec.observe))

			tk := trigger(t, m, "web", "v1")
			nextCall(ctx, t, d).Finish(nil)
			res := await(ctx, t, tk)
			requireResult(t, res, "v1", "v1", dedup.Deployed)

			e := rec.waitFor(ctx, t, "store-failed", ofKind(dedup.EventStoreFailed, "v1"))
			require.Equal(t, "web", e.Key)
			require.ErrorIs(t, e.Err, errStore, "EventStoreFailed.Err")
			require.Contains(t, e.Err.Error(), tt.prefix, "EventStoreFailed.Err names the operation")
			require.Equal(t, "store-failed", e.Kind.String())

			s := status(t, m, "web")
			require.ErrorIs(t, s.StoreErr, errStore, "Status.StoreErr")
			require.NoError(t, s.LastErr, "Status.LastErr: the deploy succeeded")
			require.Equal(t, dedup.Revision("v1"), s.Live, "Status.Live")
			require.Equal(t, 1, s.Deployed, "Status.Deployed")

			// The deploy counts: the same revision is Unchanged.
			tk = trigger(t, m, "web", "v1")
			requireSettled(t, tk, "Trigger of the deployed revision")
			requireResult(t, tk.Result(), "v1", "v1", dedup.Unchanged)
		})
	}
}

// blockingStore blocks in Load until released or its context ends.
type blockingStore struct {
	dedup.MemoryStore
	loading chan string   // receives the key of every Load
	release chan struct{} // closed to let Load return
}

func (s *blockingStore) Load(ctx context.Context, key string) (dedup.Revision, bool, error) {
	s.loading <- key
	select {
	case <-s.release:
		return s.MemoryStore.Load(ctx, key)
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
}

// Trigger does no I/O: a Store stuck in Load blocks no Trigger, Notify or
// Status, neither of its key nor of another key.
func TestTriggerNeverCallsTheStore(t *testing.T) {
	ctx := testContext(t)
	store := &blockingStore{loading: make(chan string, 8), release: make(chan struct{})}
	require.NoError(t, store.Save(ctx, "api", "a1"))
	d := new(deduptest.Deployer)
	m := newManager(t, d, dedup.WithStore(store))

	var t1, t2, t3 *dedup.Ticket
	within(ctx, t, "Trigger with a Store stuck in Load", func() {
		t1, _ = m.Trigger("web", "v1")
	})
	select {
	case key := <-store.loading:
		require.Equal(t, "web", key, "Load key")
	case <-ctx.Done():
		t.Fatal("the Store was not read before the first deploy")
	}
	within(ctx, t, "Trigger, Notify, Status while the Store is stuck in Load", func() {
		t2, _ = m.Trigger("web", "v2")
		_ = m.Notify("web", "v3")
		t3, _ = m.Trigger("api", "a1")
		_, _ = m.Status("web")
		_ = m.Statuses()
	})
	require.NotNil(t, t1)
	require.NotNil(t, t2)
	require.NotNil(t, t3)
	s := status(t, m, "web")
	require.Equal(t, dedup.Revision("v1"), s.Running, "Running while the Store is read")
	require.Equal(t, dedup.Revision("v3"), s.Pending, "Pending while the Store is read")
	require.Empty(t, d.Calls(), "deployed before the Store was read")
	requireNotSettled(t, t1, "v1 while the Store is read")

	close(store.release)
	c := nextCall(ctx, t, d)
	requireCall(t, c, "web", "v1")
	c.Finish(nil)
	c = nextCall(ctx, t, d)
	requireCall(t, c, "web", "v3")
	c.Finish(nil)
	requireResult(t, await(ctx, t, t1), "v1", "v1", dedup.Deployed)
	requireResult(t, await(ctx, t, t2), "v2", "v3", dedup.Superseded)
	// api's stored revision is a1: Unchanged without a deploy.
	requireResult(t, await(ctx, t, t3), "a1", "a1", dedup.Unchanged)
	require.Empty(t, d.Revisions("api"), "deploys of a stored revision")
}
