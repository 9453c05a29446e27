// Package clockctx bounds a context by a timeout measured on a clock that
// need not be the time package's, such as a fake clock in tests. The
// context's Err reports context.DeadlineExceeded once the timeout fired,
// as context.WithTimeout's does.
package clockctx

import (
	"context"
	"errors"
	"time"
)

// AfterFunc arms a timer that calls f after d on some clock, and returns
// the function that stops it (reporting whether it stopped it before it
// fired).
type AfterFunc func(d time.Duration, f func()) (stop func() bool)

// WithTimeout returns a child of parent that is canceled d after now on the
// clock of afterFunc, and the function that releases it. track(+1) is called
// when the timer is armed and track(-1) once it fired or was stopped, so that
// the owner can wait for its callback before it shuts down.
func WithTimeout(parent context.Context, d time.Duration, afterFunc AfterFunc, track func(delta int)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	track(1)
	stop := afterFunc(d, func() {
		defer track(-1)
		cancel(context.DeadlineExceeded)
	})
	return &deadlineCtx{ctx}, func() {
		if stop() {
			track(-1)
		}
		cancel(context.Canceled)
	}
}

// deadlineCtx reports context.DeadlineExceeded from Err once its timeout
// fired. It has no Deadline: the deadline is on a clock that need not be the
// time package's, and code that reads Deadline compares it with time.Now.
type deadlineCtx struct{ context.Context }

func (c *deadlineCtx) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}
