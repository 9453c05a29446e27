package dedup_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// revLog records the deploys of a DeployFunc, with the bubble's time.
type revLog struct {
	mu    sync.Mutex
	start time.Time
	revs  []dedup.Revision
	times []time.Duration
}

func (l *revLog) add(rev dedup.Revision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revs = append(l.revs, rev)
	l.times = append(l.times, time.Since(l.start))
}

func (l *revLog) get() ([]dedup.Revision, []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]dedup.Revision(nil), l.revs...), append([]time.Duration(nil), l.times...)
}

// The Manager's default clock is the time package, so inside a synctest
// bubble real sleeps and timers run on the bubble's fake time.
func TestRealClockInSynctestBubble(t *testing.T) {
	t.Run("debounce", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			log := &revLog{start: time.Now()}
			m, err := dedup.New(dedup.DeployFunc(func(_ context.Context, _ string, rev dedup.Revision) error {
				log.add(rev)
				return nil
			}), dedup.WithDebounce(time.Second, 0))
			require.NoError(t, err)

			t1 := trigger(t, m, "web", "v1")
			time.Sleep(500 * time.Millisecond)
			t2 := trigger(t, m, "web", "v2")
			time.Sleep(time.Second - time.Millisecond)
			synctest.Wait()
			revs, _ := log.get()
			require.Empty(t, revs, "deployed within the quiet period")

			time.Sleep(time.Millisecond)
			synctest.Wait()
			revs, times := log.get()
			require.Equal(t, []dedup.Revision{"v2"}, revs, "deploys")
			require.Equal(t, []time.Duration{1500 * time.Millisecond}, times, "deploy times")
			requireResult(t, await(ctx, t, t1), "v1", "v2", dedup.Superseded)
			res := await(ctx, t, t2)
			requireResult(t, res, "v2", "v2", dedup.Deployed)
			require.Equal(t, log.start.Add(1500*time.Millisecond), res.Started, "Result.Started")
			require.NoError(t, m.Close(ctx))
		})
	})

	t.Run("timeout and retry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			log := &revLog{start: time.Now()}
			m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, _ string, rev dedup.Revision) error {
				log.add(rev)
				<-ctx.Done() // a deploy that hangs until its timeout
				return ctx.Err()
			}), dedup.WithTimeout(5*time.Second), dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Multiplier: 2}))
			require.NoError(t, err)

			res, err := m.Deploy(ctx, "web", "v1")
			require.ErrorIs(t, err, context.DeadlineExceeded, "Deploy")
			requireResult(t, res, "v1", "v1", dedup.Failed)
			require.Equal(t, 3, res.Attempts, "Attempts")
			// 5s, wait 1s, 5s, wait 2s, 5s.
			require.Equal(t, 18*time.Second, res.Finished.Sub(res.Started), "Result duration")
			_, times := log.get()
			require.Equal(t, []time.Duration{0, 6 * time.Second, 13 * time.Second}, times, "attempt starts")
			require.NoError(t, m.Close(ctx))
		})
	})

	t.Run("close cancels after its context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, _ string, _ dedup.Revision) error {
				<-ctx.Done()
				return ctx.Err()
			}))
			require.NoError(t, err)
			tk := trigger(t, m, "web", "v1")
			start := time.Now()
			closeCtx, cancelClose := context.WithTimeout(ctx, time.Minute)
			defer cancelClose()
			require.ErrorIs(t, m.Close(closeCtx), context.DeadlineExceeded, "Close")
			require.Equal(t, time.Minute, time.Since(start), "Close waited for its context")
			requireAborted(t, await(ctx, t, tk), "v1")
		})
	})
}
