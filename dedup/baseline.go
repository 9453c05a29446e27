package dedup

import (
	"math"
	"slices"
	"time"
)

// This file keeps, per key, a baseline of how long successful deploys take,
// and watches running attempts against it (WithSlowDeploy). Its state lives
// where an idle key pays nothing for it: the count and the mean in the
// padding of keyState, the window of recent durations in keyErrs, which
// is made only from a key's second success, its first error, or (with
// WithSlowDeploy) the first attempt it watches. A key deployed once keeps
// its one duration as the mean.

// BaselineWindow is how many of a key's most recent successful deploys its
// Baseline.P90 is computed over.
const BaselineWindow = 15

// ewmaAlpha weighs a new duration in Baseline.Mean once the first few are
// in (before, the mean is the plain average): the usual 2/(N+1), so that
// the mean looks about as far back as the window.
const ewmaAlpha = 2.0 / (BaselineWindow + 1)

// Baseline is how long a key's successful deploys took: the yardstick a
// running deploy is judged slow against (WithSlowDeploy), and the figure to
// choose a poll interval from (see the package doc). Failed attempts do not
// count: a deploy that fails fast would pull the baseline down. Durations
// are kept as float32 seconds, so they are exact to about 1 in 10⁷.
type Baseline struct {
	// Samples is how many successes the baseline holds: zero for a key
	// that never succeeded, at most BaselineWindow.
	Samples int
	// Mean is the exponentially weighted mean of every success's
	// duration: the plain average of the first few, then each new one
	// weighs 2/(BaselineWindow+1), one eighth.
	Mean time.Duration
	// P90 is the 90th percentile (nearest rank) of the last Samples
	// durations: with a full window, the second longest of the last 15.
	P90 time.Duration
}

// recentDurations is a ring of the last BaselineWindow successful
// durations of a key, in seconds, and the timer watching its running
// attempt (WithSlowDeploy). It is guarded by the key's shard lock.
type recentDurations struct {
	secs  [BaselineWindow]float32
	next  uint8 // where the next duration goes
	n     uint8 // how many are in
	fired bool  // the running attempt was reported slow
	slow  Timer // armed while an attempt runs and has not been reported slow
}

func (w *recentDurations) push(sec float32) {
	w.secs[w.next] = sec
	w.next = (w.next + 1) % BaselineWindow
	if w.n < BaselineWindow {
		w.n++
	}
}

// p90 is the 90th percentile, by nearest rank, of the durations in w.
func (w *recentDurations) p90() float32 {
	var sorted [BaselineWindow]float32
	s := sorted[:w.n]
	copy(s, w.secs[:w.n])
	slices.Sort(s)
	return s[(9*len(s)+9)/10-1] // the ceil(0.9 n)-th smallest
}

// recordSuccess adds the duration of a successful attempt of ks to its
// baseline. It is called with the shard of ks locked.
func (ks *keyState) recordSuccess(d time.Duration) {
	sec := float32(d.Seconds())
	if ks.baseN == 0 {
		ks.baseN, ks.baseMean = 1, sec
		return
	}
	w := &ks.err().recent
	if ks.baseN == 1 {
		w.push(ks.baseMean) // the first success, kept as the mean until now
	}
	if ks.baseN < math.MaxUint8 {
		ks.baseN++
	}
	ks.baseMean += max(1/float32(ks.baseN), ewmaAlpha) * (sec - ks.baseMean)
	w.push(sec)
}

// baseline is the Baseline of ks. It is called with the shard of ks locked.
func (ks *keyState) baseline() Baseline {
	switch ks.baseN {
	case 0:
		return Baseline{}
	case 1:
		d := seconds(ks.baseMean)
		return Baseline{Samples: 1, Mean: d, P90: d}
	}
	w := &ks.errs.recent
	return Baseline{Samples: int(w.n), Mean: seconds(ks.baseMean), P90: seconds(w.p90())}
}

// seconds turns float32 seconds back into a Duration, rounded to the
// microsecond so that what went in as whole seconds comes out so.
func seconds(s float32) time.Duration {
	return time.Duration(float64(s) * float64(time.Second)).Round(time.Microsecond)
}

// slowPolicy is what WithSlowDeploy set; the zero value watches nothing.
type slowPolicy struct {
	multiple float64
	floor    time.Duration
}

// after is how long an attempt may run before it is slow, given the
// baseline of its key.
func (p slowPolicy) after(b Baseline) time.Duration {
	d := p.multiple * float64(b.P90)
	if d >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(time.Duration(d), p.floor)
}

// WithSlowDeploy reports a running attempt that has taken longer than
// multiple times its key's Baseline.P90 and longer than floor: once per
// attempt, while it runs, as an EventSlow carrying the baseline and the
// time it has run, and as Status.Slow until it ends. A key without a
// successful deploy yet has no baseline and is not judged; floor keeps
// keys whose deploys take a second from being judged on noise.
//
// multiple must be at least 1 and floor not negative; otherwise New
// returns an error wrapping ErrInvalid. It is off by default: it arms one
// timer on the Manager's Clock per attempt of a key with a baseline, and
// what counts as slow is the operator's call. WithSlowDeploy(2,
// time.Minute) is a sensible start.
func WithSlowDeploy(multiple float64, floor time.Duration) Option {
	return func(cfg *config) {
		if math.IsNaN(multiple) || math.IsInf(multiple, 0) || multiple < 1 {
			cfg.errorf("slow deploy multiple %v is not at least 1", multiple)
		}
		if floor < 0 {
			cfg.errorf("slow deploy floor %v is negative", floor)
		}
		cfg.slow = slowPolicy{multiple: multiple, floor: floor}
	}
}

// watchSlow arms the slow timer of the attempt of r that begins now, if
// the Manager watches for slow deploys and ks has a baseline. It is called
// with the shard of ks locked. The timer is counted in m.wg until it fires
// or unwatchSlow stops it.
func (m *Manager) watchSlow(ks *keyState, r *run) {
	if m.slow.multiple == 0 || ks.baseN == 0 {
		return
	}
	b := ks.baseline()
	w := &ks.err().recent
	attempt := r.attempts
	m.wg.Add(1)
	w.slow = m.clock.AfterFunc(m.slow.after(b), func() { m.fireSlow(ks, r, attempt, b.P90) })
}

// unwatchSlow stops the slow timer of the attempt of ks that just ended.
// It is called with the shard of ks locked.
func (m *Manager) unwatchSlow(ks *keyState) {
	if ks.errs == nil {
		return
	}
	w := &ks.errs.recent
	if w.slow != nil && w.slow.Stop() {
		m.wg.Done()
	}
	w.slow, w.fired = nil, false
}

// fireSlow is the slow timer's callback for the given attempt of r.
func (m *Manager) fireSlow(ks *keyState, r *run, attempt int32, baseline time.Duration) {
	defer m.wg.Done()
	evs := events{on: m.notify, seq: &m.seq}
	ks.shard.mu.Lock()
	w := &ks.errs.recent
	if ks.running != r || r.attempts != attempt || w.slow == nil {
		ks.shard.mu.Unlock() // the attempt ended while the timer fired
		return
	}
	w.slow, w.fired = nil, true
	now := instant{c: m.clock}
	if ev := evs.add(EventSlow, ks.key, r.rev, &now); ev != nil {
		ev.Attempt, ev.Duration, ev.Baseline = int(attempt), now.get().Sub(ks.lastStarted), baseline
	}
	ks.shard.mu.Unlock()
	m.emit(&evs)
}

// slowNow reports whether the running attempt of ks was reported slow.
func (ks *keyState) slowNow() bool {
	return ks.running != nil && ks.errs != nil && ks.errs.recent.fired
}
