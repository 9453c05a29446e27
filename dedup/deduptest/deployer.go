package deduptest

import (
	"context"
	"sync"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Deployer is a dedup.Deployer for tests: it records every call, and each
// call blocks until the test finishes it with Call.Finish, or until its
// context is done (then it returns the context's error, as a well-behaved
// deployer does; set IgnoreCancel to model one that does not).
//
// The zero Deployer is ready to use. It is safe for concurrent use.
type Deployer struct {
	// IgnoreCancel makes calls wait for Finish even after their context
	// is done.
	IgnoreCancel bool

	mu         sync.Mutex
	calls      []*Call
	taken      int // calls handed out by Next
	running    int
	maxRunning int
	perKey     map[string]int // calls running per key
	maxPerKey  int
	changed    notifier
}

var _ dedup.Deployer = (*Deployer)(nil)

// Call is one call of Deployer.Deploy.
type Call struct {
	Key      string         // the key deployed
	Revision dedup.Revision // the revision deployed

	ctx      context.Context
	finish   chan error    // buffered: the first Finish wins
	returned chan struct{} // closed when Deploy returned
	err      error         // what Deploy returned, once returned is closed
}

// Deploy records the call and blocks until the test finishes it.
func (d *Deployer) Deploy(ctx context.Context, key string, rev dedup.Revision) error {
	c := &Call{Key: key, Revision: rev, ctx: ctx, finish: make(chan error, 1), returned: make(chan struct{})}
	d.mu.Lock()
	d.calls = append(d.calls, c)
	d.running++
	d.maxRunning = max(d.maxRunning, d.running)
	if d.perKey == nil {
		d.perKey = make(map[string]int)
	}
	d.perKey[key]++
	d.maxPerKey = max(d.maxPerKey, d.perKey[key])
	d.changed.broadcast()
	d.mu.Unlock()

	var err error
	if d.IgnoreCancel {
		err = <-c.finish
	} else {
		select {
		case err = <-c.finish:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	d.mu.Lock()
	d.running--
	if d.perKey[key]--; d.perKey[key] == 0 {
		delete(d.perKey, key)
	}
	c.err = err
	close(c.returned)
	d.changed.broadcast()
	d.mu.Unlock()
	return err
}

// Next blocks until a call has started that Next has not returned yet, and
// returns the oldest such call; or returns ctx.Err() if ctx ends first.
func (d *Deployer) Next(ctx context.Context) (*Call, error) {
	for {
		d.mu.Lock()
		if d.taken < len(d.calls) {
			c := d.calls[d.taken]
			d.taken++
			d.mu.Unlock()
			return c, nil
		}
		ch := d.changed.wait()
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Calls returns every call so far, in the order they started.
func (d *Deployer) Calls() []*Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Call(nil), d.calls...)
}

// Revisions returns the revisions of every call for key so far, in order.
func (d *Deployer) Revisions(key string) []dedup.Revision {
	d.mu.Lock()
	defer d.mu.Unlock()
	var revs []dedup.Revision
	for _, c := range d.calls {
		if c.Key == key {
			revs = append(revs, c.Revision)
		}
	}
	return revs
}

// Running returns how many calls have started and not returned.
func (d *Deployer) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// MaxRunning returns the most calls that ran at once so far.
func (d *Deployer) MaxRunning() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxRunning
}

// MaxRunningPerKey returns the most calls for one key that ran at once so
// far: 1 if the code under test never overlaps deploys of a key.
func (d *Deployer) MaxRunningPerKey() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxPerKey
}

// Finish makes the call return err (nil: success). Only the first Finish of
// a call counts; later ones, and a Finish after the call returned on its
// canceled context, do nothing. It does not wait for Deploy to return; use
// Returned for that.
func (c *Call) Finish(err error) {
	select {
	case c.finish <- err:
	default:
	}
}

// Context returns the context the call was made with, to check whether the
// Manager canceled it.
func (c *Call) Context() context.Context { return c.ctx }

// Returned returns a channel closed when Deploy has returned.
func (c *Call) Returned() <-chan struct{} { return c.returned }

// Err returns what Deploy returned; valid once Returned is closed.
func (c *Call) Err() error {
	<-c.returned
	return c.err
}
