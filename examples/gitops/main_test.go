package main

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed: scripts/test.sh installs it")
	}
	cfg := config{commits: 6, every: 60 * time.Millisecond, poll: 40 * time.Millisecond, deployTime: 300 * time.Millisecond, timeout: 30 * time.Second}
	sum, err := run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("run = %v", err)
	}
	if len(sum.commits) != cfg.commits {
		t.Fatalf("commits = %d; want %d", len(sum.commits), cfg.commits)
	}
	last := sum.commits[len(sum.commits)-1]
	if sum.live != last || sum.deploys[len(sum.deploys)-1] != last {
		t.Errorf("live %q, last deploy %q; want the newest commit %q", sum.live, sum.deploys[len(sum.deploys)-1], last)
	}
	// Commits land five times per deploy: deploys must coalesce, and go
	// forward through the history, never twice the same commit.
	if len(sum.deploys) >= len(sum.commits) {
		t.Errorf("%d deploys for %d commits; want fewer", len(sum.deploys), len(sum.commits))
	}
	at := -1
	for _, d := range sum.deploys {
		i := slices.Index(sum.commits, d)
		if i <= at {
			t.Fatalf("deploys %v are not in commit order %v", sum.deploys, sum.commits)
		}
		at = i
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	if _, err := run(context.Background(), config{}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("run(zero config) = nil error; want one")
	}
}

// A second run with the same state directory finds the commit it left live
// in the live record and does not deploy it again.
func TestRunTwice(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed: scripts/test.sh installs it")
	}
	cfg := config{commits: 3, every: 60 * time.Millisecond, poll: 40 * time.Millisecond, deployTime: 100 * time.Millisecond, timeout: 30 * time.Second, state: t.TempDir()}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := run(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("first run = %v", err)
	}
	if first.resumed != "" {
		t.Errorf("first run resumed %q; want nothing", first.resumed)
	}
	second, err := run(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("second run = %v", err)
	}
	if second.resumed != first.live || second.commits[0] != first.live {
		t.Fatalf("second run resumed %q at commit %q; want the first run's live %q", second.resumed, second.commits[0], first.live)
	}
	if slices.Contains(second.deploys, first.live) {
		t.Errorf("second run deployed %q again: %v", first.live, second.deploys)
	}
	last := second.commits[len(second.commits)-1]
	if second.live != last || len(second.deploys) == 0 || second.deploys[len(second.deploys)-1] != last {
		t.Errorf("second run: live %q, deploys %v; want the newest commit %q deployed", second.live, second.deploys, last)
	}
}
