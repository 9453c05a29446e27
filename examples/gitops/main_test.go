package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"git", "sh", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: scripts/test.sh installs git; sh and tar come with the system", tool)
		}
	}
}

func TestRun(t *testing.T) {
	needTools(t)
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

// A second run with the same state directory finds each stack's tree in the
// live record and deploys it no more: api, which gets no commit in the
// second run, deploys nothing; web deploys only its new trees.
func TestRunTwice(t *testing.T) {
	needTools(t)
	cfg := config{commits: 3, every: 60 * time.Millisecond, poll: 40 * time.Millisecond, deployTime: 100 * time.Millisecond, timeout: 60 * time.Second, state: t.TempDir()}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := run(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("first run = %v", err)
	}
	for _, key := range stacks {
		st := first[key]
		if st.resumed != "" {
			t.Errorf("first run: %s resumed %q; want nothing", key, st.resumed)
		}
		if newest := st.commits[len(st.commits)-1]; st.live != newest {
			t.Fatalf("first run: %s live %q; want the newest tree %q", key, st.live, newest)
		}
	}
	second, err := run(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("second run = %v", err)
	}
	for _, key := range stacks {
		st, was := second[key], first[key].live
		if st.resumed != was || st.commits[0] != was {
			t.Fatalf("second run: %s resumed %q at tree %q; want the first run's live %q", key, st.resumed, st.commits[0], was)
		}
		if slices.Contains(st.deploys, was) {
			t.Errorf("second run: %s deployed %q again: %v", key, was, st.deploys)
		}
		if newest := st.commits[len(st.commits)-1]; st.live != newest {
			t.Errorf("second run: %s live %q; want the newest tree %q", key, st.live, newest)
		}
		var out strings.Builder
		second.print(&out)
		if want := fmt.Sprintf("%s: %.7s live at the start (live.db), deployed again: false\n", key, was); !strings.Contains(out.String(), want) {
			t.Errorf("second run printed\n%s\nwant a line %q", out.String(), want)
		}
	}
	web, api := second["web"], second["api"]
	if len(web.commits) != 1+cfg.commits || len(web.deploys) == 0 || web.deploys[len(web.deploys)-1] != web.commits[len(web.commits)-1] {
		t.Errorf("second run: web trees %v, deploys %v; want %d new trees, the newest deployed last", web.commits, web.deploys, cfg.commits)
	}
	if len(api.commits) != 1 || len(api.deploys) != 0 {
		t.Errorf("second run: api trees %v, deploys %v; want its one tree and no deploy", api.commits, api.deploys)
	}
	// The first run ends at version 4 (api); the second lands web v5 to v7.
	if web.content != "web v7" || api.content != "api v4" {
		t.Errorf("second run: unpacked %q and %q; want %q and %q", web.content, api.content, "web v7", "api v4")
	}
	// The live record holds the newest trees for a third run.
	store, err := boltstore.Open(filepath.Join(cfg.state, "live.db"), boltstore.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, key := range stacks {
		st := second[key]
		rev, ok, err := store.Load(context.Background(), key)
		if newest := st.commits[len(st.commits)-1]; string(rev) != newest || !ok || err != nil {
			t.Errorf("Load(%q) = %q, %v, %v; want %q, true, nil", key, rev, ok, err, newest)
		}
	}
}
