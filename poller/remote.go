package poller

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// remoteSource is a Source whose polls can share requests with the other
// keys that watch the same remote: the git sources. A Poller asks the remote
// once for the refs of every key that watches it (list), and each key makes
// its revision out of that answer (resolve).
type remoteSource interface {
	Source
	// remoteID names the remote and everything that makes a request to it
	// (credentials, client, executable): sources with the same remoteID
	// may share one request.
	remoteID() string
	// wants returns the refs the source needs, as full names.
	wants() []string
	// list asks the remote for refs and returns the object each one that
	// exists names (the commit, for an annotated tag). client is the
	// Poller's, used when the source has none of its own; nil means the
	// package's default.
	list(ctx context.Context, client *http.Client, refs []string) (map[string]string, error)
	// resolve returns the revision that found (an answer to a list of at
	// least wants()) gives the source.
	resolve(ctx context.Context, found map[string]string) (dedup.Revision, error)
}

// remoteGroup is the keys of a Poller that watch one remote. Its fields are
// guarded by Poller.mu.
type remoteGroup struct {
	id   string
	keys int            // watched keys in the group
	refs map[string]int // refs that the keys want, with how many keys want each
	gen  uint64         // bumped when the set of refs grows
	last *listing       // the latest answer of the remote
}

// listing is one answer of a remote.
type listing struct {
	asked map[string]bool   // the refs asked for
	found map[string]string // ref -> object, for those that exist
	err   error
	at    time.Time // when the request started
}

// covers reports whether l answers for every one of refs.
func (l *listing) covers(refs []string) bool {
	for _, r := range refs {
		if !l.asked[r] {
			return false
		}
	}
	return true
}

// join puts ks, watching rs, into the group of its remote. It is called with
// p.mu held.
func (p *Poller) join(ks *keyState, rs remoteSource) {
	id := rs.remoteID()
	g := p.remotes[id]
	if g == nil {
		g = &remoteGroup{id: id, refs: make(map[string]int)}
		p.remotes[id] = g
	}
	g.keys++
	ks.group, ks.wants = g, rs.wants()
	for _, r := range ks.wants {
		if g.refs[r] == 0 {
			g.gen++
		}
		g.refs[r]++
	}
}

// leave takes ks out of its remote's group, if it is in one. It is called
// with p.mu held.
func (p *Poller) leave(ks *keyState) {
	g := ks.group
	if g == nil {
		return
	}
	for _, r := range ks.wants {
		if g.refs[r]--; g.refs[r] <= 0 {
			delete(g.refs, r)
		}
	}
	ks.group, ks.wants = nil, nil
	if g.keys--; g.keys == 0 {
		delete(p.remotes, g.id)
	}
}

// latestShared is the poll of a key whose source shares requests with the
// other keys on its remote. The answer of the remote is reused if it covers
// the key's refs and its request started at most half the key's interval
// before: so a remote watched by keys of one interval is asked once per
// round, and keys with a longer interval are served by the requests of keys
// with a shorter one. Otherwise it asks the remote for the refs of every key
// in the group; polls that need the same request while it is in flight wait
// for it (singleflight) instead of making their own. at is the start of the
// reused request, zero when this poll made or joined the request. A poll
// asked for by PollNow always makes its own request.
func (p *Poller) latestShared(r *pollRun) (rev dedup.Revision, at time.Time, err error) {
	g, rs := r.group, r.src.(remoteSource)
	p.mu.Lock()
	ans := g.last
	if !r.asked && ans != nil && ans.covers(r.wants) && !ans.at.Before(p.clock.Now().Add(-r.set.every/2)) {
		at = ans.at
	} else {
		ans = nil
	}
	var refs []string
	var gen uint64
	if ans == nil {
		refs = make([]string, 0, len(g.refs))
		for ref := range g.refs {
			refs = append(refs, ref)
		}
		slices.Sort(refs)
		gen = g.gen
	}
	p.mu.Unlock()

	switch {
	case r.asked:
		// A webhook said the remote changed: an answer, or a request in
		// flight, from before it may not show the change.
		ans = p.request(r, rs, g, refs)
	case ans == nil:
		// Refs are only added to a group with a new generation, so that the
		// request in flight for one generation covers every poll that asks
		// for it.
		v, _, _ := p.flight.Do(g.id+"\x00"+strconv.FormatUint(gen, 10), func() (any, error) {
			return p.request(r, rs, g, refs), nil
		})
		ans = v.(*listing)
	}
	if ans.err != nil {
		return "", time.Time{}, ans.err
	}
	rev, err = rs.resolve(r.ctx, ans.found)
	return rev, at, err
}

// request asks the remote of g for refs, on behalf of every key in g, and
// records the answer. The request is bounded by the end of Run and by the
// Timeout of the poll that makes it, not by the cancellation of that poll:
// other polls may be waiting for it.
func (p *Poller) request(r *pollRun, rs remoteSource, g *remoteGroup, refs []string) *listing {
	ctx, cancel := p.timeoutContext(r.base, r.set.timeout)
	defer cancel()
	start := p.clock.Now()
	found, err := rs.list(ctx, p.client, refs)
	ans := &listing{asked: make(map[string]bool, len(refs)), found: found, err: err, at: start}
	for _, ref := range refs {
		ans.asked[ref] = true
	}
	if err != nil && ctx.Err() != nil {
		return ans // the end of Run or a timeout says nothing of the remote
	}
	p.mu.Lock()
	if g.last == nil || !g.last.at.After(start) {
		g.last = ans
	}
	p.mu.Unlock()
	return ans
}
