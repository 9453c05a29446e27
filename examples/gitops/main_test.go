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
	for _, tool := range []string{"git", "sh", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: scripts/test.sh installs git; sh and tar come with the system", tool)
		}
	}
	cfg := config{commits: 6, every: 60 * time.Millisecond, poll: 40 * time.Millisecond, deployTime: 300 * time.Millisecond, timeout: 60 * time.Second}
	sum, err := run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("run = %v", err)
	}
	for _, key := range stacks {
		st := sum[key]
		newest := st.commits[len(st.commits)-1]
		if st.live != newest || st.deploys[len(st.deploys)-1] != newest {
			t.Errorf("%s: live %q, last deploy %q; want the newest tree %q", key, st.live, st.deploys[len(st.deploys)-1], newest)
		}
		// Deploys go forward through the history, never twice the same
		// tree.
		at := -1
		for _, d := range st.deploys {
			i := slices.Index(st.commits, d)
			if i <= at {
				t.Fatalf("%s: deploys %v are not in commit order %v", key, st.deploys, st.commits)
			}
			at = i
		}
	}
	web, api := sum["web"], sum["api"]
	if len(web.commits) != cfg.commits {
		t.Errorf("web revisions = %d; want %d", len(web.commits), cfg.commits)
	}
	// Whatever the timing: commits to web never deploy api, and its one
	// commit deploys it once more.
	if len(api.commits) != 2 || len(api.deploys) != 2 {
		t.Errorf("api: %d revisions, %d deploys; want 2 and 2", len(api.commits), len(api.deploys))
	}
	if web.content != "web v6" || api.content != "api v7" {
		t.Errorf("unpacked %q and %q; want %q and %q", web.content, api.content, "web v6", "api v7")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	if _, err := run(context.Background(), config{}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("run(zero config) = nil error; want one")
	}
}
