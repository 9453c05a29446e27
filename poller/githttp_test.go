package poller_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// TestGitHTTP: over HTTP and TLS, with and without protocol version 2,
// branches, annotated and lightweight tags and HEAD resolve as git
// ls-remote resolves them, with 10k more refs in the repository.
func TestGitHTTP(t *testing.T) {
	r := newGitRepo(t)
	addRefs(t, r.dir, r.c1, 10_000)
	for _, o := range []serverOpts{{}, {v0: true}, {tls: true}, {tls: true, v0: true}} {
		t.Run(fmt.Sprintf("tls=%v,v0=%v", o.tls, o.v0), func(t *testing.T) {
			s := newGitServer(t, r.dir, o)
			for _, tc := range append(r.refCases(), refCase{"refs/pull/9999/head", r.c1}) {
				src := &poller.GitSource{Remote: s.url, Ref: tc.ref, Client: s.Client()}
				rev, err := src.Latest(testContext(t))
				require.NoErrorf(t, err, "Git(%q, %q).Latest", s.url, tc.ref)
				require.Equalf(t, dedup.Revision(tc.want), rev, "Git(%q, %q).Latest", s.url, tc.ref)
			}
			reqs := s.take()
			if o.v0 {
				require.NotContains(t, reqs, "POST ls-refs", "requests to a server without v2")
			} else {
				require.Equal(t, "POST ls-refs", reqs[1], "requests to a server with v2: %v", reqs)
			}
			_, err := (&poller.GitSource{Remote: s.url, Ref: "nosuch", Client: s.Client()}).Latest(testContext(t))
			require.ErrorIs(t, err, poller.ErrUnknownRef)
		})
	}
}

// TestGitHTTPSameAsExec: the in-process client and git itself, over the same
// server, agree.
func TestGitHTTPSameAsExec(t *testing.T) {
	r := newGitRepo(t)
	s := newGitServer(t, r.dir, serverOpts{tls: true})
	for _, ref := range []string{"main", "v1", "light", "HEAD"} {
		in, err := (&poller.GitSource{Remote: s.url, Ref: ref, Client: s.Client()}).Latest(testContext(t))
		require.NoError(t, err)
		file, err := poller.Git("file://"+r.dir, ref).Latest(testContext(t))
		require.NoError(t, err)
		require.Equalf(t, file, in, "ref %q over HTTPS and file://", ref)
	}
}

// TestGitHTTPErrors: credentials are sent and stay out of errors; a server
// that is not a git server, and one that answers garbage, are errors.
func TestGitHTTPErrors(t *testing.T) {
	r := newGitRepo(t)
	s := newGitServer(t, r.dir, serverOpts{user: "bot", pass: "s3cret"})
	ctx := testContext(t)

	withPass := "http://bot:s3cret@" + s.Listener.Addr().String() + "/repo.git"
	rev, err := poller.Git(withPass, "main").Latest(ctx)
	require.NoError(t, err, "credentials from the URL")
	require.Equal(t, dedup.Revision(r.c2), rev)

	wrong := "http://bot:wr0ng@" + s.Listener.Addr().String() + "/repo.git"
	_, err = poller.Git(wrong, "main").Latest(ctx)
	require.ErrorContains(t, err, "401")
	require.NotContains(t, err.Error(), "wr0ng")

	token := &poller.GitSource{Remote: s.url, Ref: "main", Header: http.Header{}}
	token.Header.Set("Authorization", "Basic Ym90OnMzY3JldA==") // bot:s3cret
	_, err = token.Latest(ctx)
	require.NoError(t, err, "credentials from Header")

	notGit := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "<html>hello</html>")
	})
	_, err = poller.Git(notGit.URL+"/repo.git", "main").Latest(ctx)
	require.ErrorContains(t, err, "not a smart git HTTP server")

	garbage := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		fmt.Fprint(w, "001e# service=git-upload-pack\n0000zzzz")
	})
	_, err = poller.Git(garbage.URL+"/repo.git", "main").Latest(ctx)
	require.ErrorContains(t, err, "malformed")

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = poller.Git(s.url, "main").Latest(canceled)
	require.ErrorIs(t, err, context.Canceled)
}

// TestGitHTTPRedirect: a redirected advertisement sends the command where
// the advertisement came from.
func TestGitHTTPRedirect(t *testing.T) {
	r := newGitRepo(t)
	s := newGitServer(t, r.dir, serverOpts{redirect: true})
	rev, err := poller.Git(s.url, "main").Latest(testContext(t))
	require.NoError(t, err)
	require.Equal(t, dedup.Revision(r.c2), rev)
}

// TestGitSharedRequests: five keys on five branches of one remote cost one
// ls-refs per round, with the rounds of keys of one interval; a key with a
// longer interval is served by the others' requests.
func TestGitSharedRequests(t *testing.T) {
	r := newGitRepo(t)
	branches := []string{"b0", "b1", "b2", "b3", "b4"}
	for _, b := range branches {
		git(t, r.dir, "branch", b)
	}
	s := newGitServer(t, r.dir, serverOpts{})
	h := newHarness(t, nil, poller.WithHTTPClient(s.Client()))
	for _, b := range branches {
		h.watch("stack-"+b, poller.Git(s.url, b), poller.Every(time.Minute), poller.Jitter(0.1))
	}
	h.watch("slow", poller.Git(s.url, "main"), poller.Every(10*time.Minute), poller.Jitter(0.005))
	h.run()
	for round := range 3 {
		for range 5 {
			h.advance()
			e := h.event()
			require.NoError(t, e.Err)
			require.Equal(t, dedup.Revision(r.c2), e.Revision)
		}
		if round == 0 {
			h.advance() // the slow key's first poll
			require.NoError(t, h.event().Err)
		}
		require.Equalf(t, 1, s.count("POST ls-refs"), "ls-refs requests in round %d: %v", round, s.take())
		s.take()
	}
}

func newHTTPServer(t *testing.T, f http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return s
}

// TestGitConcurrentPolls: polls of one remote that start together make one
// request (singleflight).
func TestGitConcurrentPolls(t *testing.T) {
	r := newGitRepo(t)
	s := newGitServer(t, r.dir, serverOpts{tls: true})
	h := newHarness(t, nil, poller.WithHTTPClient(s.Client()))
	for i := range 5 {
		h.watch(fmt.Sprint("k", i), poller.Git(s.url, "main"), poller.Every(time.Minute), poller.Jitter(0))
	}
	h.run()
	for round := range 2 {
		h.fireNext(1, map[int]time.Duration{0: 0, 1: time.Minute}[round]) // all five at once
		for range 5 {
			require.NoError(t, h.event().Err)
		}
		require.Equalf(t, 1, s.count("POST ls-refs"), "ls-refs requests in round %d", round)
		s.take()
	}
}

// TestGitPollNowAsksAfresh: a poll asked for by PollNow (a webhook saying
// the branch moved) makes a request of its own instead of reusing an answer
// from before the push.
func TestGitPollNowAsksAfresh(t *testing.T) {
	r := newGitRepo(t)
	git(t, r.dir, "branch", "other")
	s := newGitServer(t, r.dir, serverOpts{})
	h := newHarness(t, nil, poller.WithHTTPClient(s.Client()))
	h.watch("a", poller.Git(s.url, "main"), poller.Every(time.Minute), poller.Jitter(0))
	h.watch("b", poller.Git(s.url, "other"), poller.Every(time.Minute), poller.Jitter(0))
	h.run()
	h.fireNext(1, 0)
	h.event()
	h.event()
	require.Equal(t, 1, s.count("POST ls-refs"))
	git(t, r.dir, "commit", "-q", "--allow-empty", "-m", "pushed")
	require.NoError(t, h.p.PollNow("a"))
	e := h.event()
	require.Equal(t, poller.EventChanged, e.Kind)
	require.Equal(t, dedup.Revision(git(t, r.dir, "rev-parse", "main")), e.Revision)
	require.Equal(t, 2, s.count("POST ls-refs"))
}

// TestGitSharedAnswerKeepsTheRound: a key served by another key's answer
// counts its next poll from that request, not from its own poll, so that
// the keys of one remote stay in one round instead of drifting apart.
func TestGitSharedAnswerKeepsTheRound(t *testing.T) {
	r := newGitRepo(t)
	git(t, r.dir, "branch", "b1")
	s := newGitServer(t, r.dir, serverOpts{})
	h := newHarness(t, nil, poller.WithHTTPClient(s.Client()))
	h.watch("a", poller.Git(s.url, "main"), poller.Every(time.Minute), poller.Jitter(0))
	h.watch("b", poller.Git(s.url, "b1"), poller.Every(80*time.Second), poller.Jitter(0))
	h.run()
	h.fireNext(1, 0) // both at 0: one request
	for range 2 {
		require.NoError(t, h.event().Err)
	}
	s.take()
	h.fireNext(1, time.Minute) // a's request, at 1m
	require.NoError(t, h.event().Err)
	h.fireNext(1, 20*time.Second) // b at 1m20s: a's answer, 20s old, serves it
	require.NoError(t, h.event().Err)
	require.Equal(t, 1, s.count("POST ls-refs"), "b was served by a's request")
	require.NoError(t, h.clock.WaitTimers(h.ctx, 1))
	st, ok := h.p.Status("b")
	require.True(t, ok)
	require.Equal(t, deduptest.Epoch.Add(time.Minute+80*time.Second), st.Next, "b's next poll: its interval after the request that served it")
}
