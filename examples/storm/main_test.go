package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// defaults is the scenario of go run ./examples/storm without flags.
var defaults = Scenario{Interval: time.Minute, Deploy: 5 * time.Minute, Commits: 10}

func run(t *testing.T, sc Scenario) (naive, flight, managed Result) {
	t.Helper()
	// A bug in the replay hangs a wait; the deadline turns it into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results, err := Run(ctx, sc)
	require.NoError(t, err)
	require.Len(t, results, 3)
	require.Equal(t, "naive", results[0].Strategy)
	require.Equal(t, "singleflight", results[1].Strategy)
	require.Equal(t, "dedupdeploy", results[2].Strategy)
	return results[0], results[1], results[2]
}

// lastDeploy returns the deploy that finished last.
func lastDeploy(t *testing.T, r Result) Deploy {
	t.Helper()
	var last Deploy
	for _, d := range r.Deploys {
		if d.Finished && d.End >= last.End {
			last = d
		}
	}
	require.True(t, last.Finished, "%s: no deploy finished", r.Strategy)
	return last
}

func TestDefaultStorm(t *testing.T) {
	naive, flight, managed := run(t, defaults)
	checkConclusions(t, defaults, naive, flight, managed)

	assert.Len(t, naive.Deploys, 5)
	want := []Deploy{
		{Commit: 2, Start: 1 * time.Minute, End: 6 * time.Minute, Finished: true},
		{Commit: 10, Start: 6 * time.Minute, End: 11 * time.Minute, Finished: true},
	}
	assert.Equal(t, want, managed.Deploys)
}

// TestDefaultConclusionsWithoutTies checks that the default storm does not
// owe its conclusions to the order of a poll and a deploy's end at the same
// time: they hold with deploys a second shorter or longer.
func TestDefaultConclusionsWithoutTies(t *testing.T) {
	for _, d := range []time.Duration{defaults.Deploy - time.Second, defaults.Deploy + time.Second} {
		t.Run(d.String(), func(t *testing.T) {
			sc := defaults
			sc.Deploy = d
			naive, flight, managed := run(t, sc)
			checkConclusions(t, sc, naive, flight, managed)
		})
	}
}

// checkConclusions checks what the README says of the default storm.
func checkConclusions(t *testing.T, sc Scenario, naive, flight, managed Result) {
	t.Helper()
	landed := sc.landed(sc.Commits)
	firstSeen := (landed/sc.Interval + 1) * sc.Interval // the first poll after it landed

	// Naive: a deploy per poll, piling up.
	assert.Greater(t, naive.MaxConcurrent, 1, "naive piles up")
	assert.True(t, naive.Live)

	// Singleflight: one at a time, but the poll that sees the last commit
	// joins the old deploy; a later poll deploys it.
	assert.Equal(t, 1, flight.MaxConcurrent)
	require.True(t, flight.Live)
	assert.Greater(t, lastDeploy(t, flight).Start, firstSeen, "singleflight deploys the last commit at a later poll")
	assert.Positive(t, flight.Stale, "polls that joined an older deploy were told it deployed their commit")

	// dedupdeploy: one at a time, no more deploys, live sooner, no stale
	// answers.
	assert.Equal(t, 1, managed.MaxConcurrent)
	assert.LessOrEqual(t, len(managed.Deploys), len(flight.Deploys))
	require.True(t, managed.Live)
	assert.Less(t, managed.LiveAfter, flight.LiveAfter, "the pending slot saves waiting for a poll")
	assert.Less(t, lastDeploy(t, managed).Start, lastDeploy(t, flight).Start)
	assert.Zero(t, managed.Stale)
}

// TestDefaultOutput pins the table the README shows.
func TestDefaultOutput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results, err := Run(ctx, defaults)
	require.NoError(t, err)
	var buf bytes.Buffer
	Print(&buf, defaults, results, false)
	const want = `A poll every 1m sees a new commit each time: 10 commits land, two per interval,
the last at 4m45s. One deploy of the stack takes 5m.

strategy      deploys run  max concurrent  last commit live  live after it landed  stale answers
naive         5            5               yes               5m15s                 0
singleflight  2            1               yes               7m15s                 5
dedupdeploy   2            1               yes               6m15s                 0

max concurrent: most deploys of the stack running at the same time. A deploy
  that ends on a poll ends just after it, as it began just after a poll.
last commit live: c10 is what the last deploy to finish deployed.
stale answers: polls told "deployed" by a deploy of an older commit than theirs.
`
	assert.Equal(t, want, buf.String())
}

func TestReplayIsDeterministic(t *testing.T) {
	sc := Scenario{Interval: time.Minute, Deploy: 5*time.Minute + 30*time.Second, Commits: 30}
	n0, f0, m0 := run(t, sc)
	for range 5 {
		n, f, m := run(t, sc)
		require.Equal(t, n0, n)
		require.Equal(t, f0, f)
		require.Equal(t, m0, m)
	}
}

// TestGuarantees checks, over storms of several shapes, what each strategy
// guarantees whatever the timing. Which of singleflight and dedupdeploy
// deploys the last commit sooner depends on the shape (see -commits 14).
func TestGuarantees(t *testing.T) {
	tests := []struct {
		name string
		sc   Scenario
	}{
		{"defaults", defaults},
		{"storm as long as a deploy and a poll", Scenario{Interval: time.Minute, Deploy: 5 * time.Minute, Commits: 12}},
		{"longer storm", Scenario{Interval: time.Minute, Deploy: 5 * time.Minute, Commits: 14}},
		{"deploy between polls", Scenario{Interval: time.Minute, Deploy: 4*time.Minute + 30*time.Second, Commits: 12}},
		{"long storm", Scenario{Interval: time.Minute, Deploy: 5*time.Minute + 30*time.Second, Commits: 61}},
		{"deploy shorter than a poll", Scenario{Interval: time.Minute, Deploy: 30 * time.Second, Commits: 12}},
		{"one commit", Scenario{Interval: time.Minute, Deploy: 5 * time.Minute, Commits: 1}},
		{"odd interval", Scenario{Interval: 7, Deploy: 33, Commits: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := tt.sc
			naive, flight, managed := run(t, sc)
			onPoll := func(d time.Duration) bool { return d%sc.Interval == 0 }

			for _, r := range []Result{naive, flight, managed} {
				assert.True(t, r.Live, "%s: last commit not live", r.Strategy)
				for _, d := range r.Deploys {
					assert.True(t, d.Finished, "%s: %v still running at the end", r.Strategy, d)
					assert.Equal(t, sc.Deploy, d.End-d.Start, "%s: %v", r.Strategy, d)
				}
			}
			assert.Equal(t, 1, flight.MaxConcurrent)
			assert.Equal(t, 1, managed.MaxConcurrent)
			assert.Zero(t, managed.Stale)
			assert.Zero(t, naive.Stale)

			for i, d := range flight.Deploys {
				assert.True(t, onPoll(d.Start), "singleflight deploy %v does not start on a poll", d)
				if i > 0 {
					assert.GreaterOrEqual(t, d.Start, flight.Deploys[i-1].End)
				}
			}
			// The Manager deploys ever newer commits and never idles
			// while it knows one: a deploy starts on the poll that saw
			// its commit, or as the one before it ends.
			for i, d := range managed.Deploys {
				if i == 0 {
					assert.True(t, onPoll(d.Start), "first deploy %v does not start on a poll", d)
					continue
				}
				prev := managed.Deploys[i-1]
				assert.Greater(t, d.Commit, prev.Commit)
				if d.Start != prev.End {
					assert.True(t, onPoll(d.Start), "deploy %v neither follows %v nor starts on a poll", d, prev)
					assert.Equal(t, d.Commit, sc.newest(d.Start), "deploy %v after an idle stretch is not of the newest commit", d)
				}
			}
		})
	}
}

func TestHorizon(t *testing.T) {
	sc := defaults
	sc.Polls = 3 // the last commit lands after the last poll
	naive, flight, managed := run(t, sc)
	for _, r := range []Result{naive, flight, managed} {
		assert.False(t, r.Live, r.Strategy)
		assert.Equal(t, 3, r.Polls, r.Strategy)
		for _, d := range r.Deploys {
			assert.False(t, d.Finished, "%s: %v", r.Strategy, d)
		}
	}
	assert.Len(t, naive.Deploys, 3)
	assert.Len(t, flight.Deploys, 1)
	assert.Len(t, managed.Deploys, 1)

	var buf bytes.Buffer
	Print(&buf, sc, []Result{naive, flight, managed}, true)
	assert.Contains(t, buf.String(), "never: not live after 3 polls (-polls).")
	assert.Contains(t, buf.String(), "c2     from 1m canceled at the end of the replay")
	assert.Contains(t, buf.String(), "naive         3            3               no                never                 0")
}

// The footnote on "never" shows only under a row that says it.
func TestNeverFootnoteOnlyWhenNeeded(t *testing.T) {
	sc := Scenario{Interval: 30 * time.Second, Deploy: 2 * time.Minute, Commits: 6, Polls: 12}
	naive, flight, managed := run(t, sc)
	var buf bytes.Buffer
	Print(&buf, sc, []Result{naive, flight, managed}, false)
	assert.NotContains(t, buf.String(), "never")
}

func TestNewest(t *testing.T) {
	sc := Scenario{Interval: time.Minute, Deploy: time.Minute, Commits: 5}
	tests := []struct {
		at   time.Duration
		want int
	}{
		{0, 0},
		{15*time.Second - 1, 0},
		{15 * time.Second, 1},
		{45 * time.Second, 2},
		{time.Minute, 2},
		{time.Minute + 15*time.Second, 3},
		{2*time.Minute + 15*time.Second, 5},
		{time.Hour, 5},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, sc.newest(tt.at), "newest(%v)", tt.at)
	}
	odd := Scenario{Interval: 7, Deploy: 1, Commits: 100}
	for at := time.Duration(0); at < 400; at++ {
		n := odd.newest(at)
		if n > 0 {
			require.LessOrEqual(t, odd.landed(n), at, "newest(%v) = %d", at, n)
		}
		if n < odd.Commits {
			require.Greater(t, odd.landed(n+1), at, "newest(%v) = %d", at, n)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := defaults
	require.NoError(t, ok.Validate())
	for _, sc := range []Scenario{
		{Interval: 0, Deploy: time.Minute, Commits: 1},
		{Interval: time.Minute, Deploy: -1, Commits: 1},
		{Interval: time.Minute, Deploy: time.Minute, Commits: 0},
		{Interval: time.Minute, Deploy: time.Minute, Commits: 1, Polls: -1},
	} {
		assert.Error(t, sc.Validate(), "%+v", sc)
		_, err := Run(context.Background(), sc)
		assert.Error(t, err, "Run(%+v)", sc)
	}
}
