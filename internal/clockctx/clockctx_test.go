package clockctx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/internal/clockctx"
)

func afterFunc(c *deduptest.Clock) clockctx.AfterFunc {
	return func(d time.Duration, f func()) func() bool { return c.AfterFunc(d, f).Stop }
}

func TestWithTimeout(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		release bool
		wantErr error
		armed   int // tracked timers left
	}{
		{"before the timeout", 9 * time.Second, false, nil, 1},
		{"at the timeout", 10 * time.Second, false, context.DeadlineExceeded, 0},
		{"released first", 0, true, context.Canceled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := new(deduptest.Clock)
			armed := 0
			ctx, cancel := clockctx.WithTimeout(context.Background(), 10*time.Second, afterFunc(clock), func(d int) { armed += d })
			if tt.release {
				cancel()
			}
			clock.Advance(tt.advance)
			if err := ctx.Err(); !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("Err() = %v; want %v", err, tt.wantErr)
			}
			if armed != tt.armed {
				t.Errorf("tracked timers = %d; want %d", armed, tt.armed)
			}
			if _, ok := ctx.Deadline(); ok {
				t.Errorf("Deadline() reports a deadline on a fake clock")
			}
			cancel()
			if armed != 0 {
				t.Errorf("tracked timers after cancel = %d; want 0", armed)
			}
		})
	}
}
