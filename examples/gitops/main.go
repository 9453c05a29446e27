// Command gitops shows dedupdeploy keeping up with a busy git branch.
//
// It makes a real git repository in a temporary directory and lands commits
// on its main branch faster than a deploy finishes. A poller.Git source
// watches the branch, and a deployer.Command runs a deploy script for each
// revision the Manager decides to deploy. The log (log/slog) shows triggers
// coalescing while a deploy runs; at the end the newest commit is live after
// far fewer deploys than commits.
//
//	go run ./examples/gitops
//	go run ./examples/gitops -commits 12 -every 100ms -deploy-time 1s
//
// It needs git and sh, and finishes by itself in a few seconds.
//
// The repository and the live record (a boltstore file, live.db) are kept
// in the -state directory, by default dedup-gitops in the system's temporary
// directory (/tmp/dedup-gitops on Linux). Run it twice: the second run
// finds the commit it left live, polls it, and does not deploy it again;
// only the commits that land during the second run are deployed. Delete the
// directory to start afresh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/deployer"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

type config struct {
	commits    int           // commits to land
	every      time.Duration // between two commits
	poll       time.Duration // poll interval
	deployTime time.Duration // how long the deploy script takes
	timeout    time.Duration // give up after
	state      string        // directory of the repository and the live record; "" for a new temporary one
}

func main() {
	var cfg config
	flag.IntVar(&cfg.commits, "commits", 8, "commits to land on main")
	flag.DurationVar(&cfg.every, "every", 150*time.Millisecond, "time between two commits")
	flag.DurationVar(&cfg.poll, "poll", 100*time.Millisecond, "poll interval of the git source")
	flag.DurationVar(&cfg.deployTime, "deploy-time", 700*time.Millisecond, "how long one deploy takes")
	flag.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "give up after this long")
	flag.StringVar(&cfg.state, "state", filepath.Join(os.TempDir(), "dedup-gitops"), "directory of the repository and the live record, kept between runs")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sum, err := run(context.Background(), cfg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops:", err)
		os.Exit(1)
	}
	sum.print(os.Stdout)
}

type summary struct {
	commits []string // in the order they landed; on a second run, the first is the one live at the start
	deploys []string // revisions the script deployed, in order
	live    string
	resumed string // the revision the live record held at the start
}

func (s summary) print(w io.Writer) {
	landed := len(s.commits)
	if s.resumed != "" {
		landed-- // the first is where the earlier run left off
		fmt.Fprintf(w, "\n%.7s was live at the start (the live record says so); deployed again: %v", s.resumed, slices.Contains(s.deploys, s.resumed))
	}
	fmt.Fprintf(w, "\n%d commits landed, %d deploys ran: %s\n", landed, len(s.deploys), short(s.deploys))
	last := s.commits[len(s.commits)-1]
	fmt.Fprintf(w, "newest commit %.7s is live: %v\n", last, s.live == last)
}

func short(revs []string) string {
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r[:min(7, len(r))]
	}
	return strings.Join(out, " ")
}

// deployScript is what a deploy runs. It reads the revision from the
// environment, quoted, as the deployer package advises, and records it.
const deployScript = `#!/bin/sh
set -eu
echo "deploying $DEDUP_KEY at $DEDUP_REVISION"
sleep "$DEPLOY_SECONDS"
printf '%s\n' "$DEDUP_REVISION" >> "$DEPLOY_LOG"
echo "live: $DEDUP_REVISION"
`

func run(ctx context.Context, cfg config, logger *slog.Logger) (summary, error) {
	if cfg.commits < 1 || cfg.every <= 0 || cfg.poll <= 0 || cfg.deployTime < 0 || cfg.timeout <= 0 {
		return summary{}, errors.New("flags: need commits >= 1 and positive durations")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "dedup-gitops-")
	if err != nil {
		return summary{}, err
	}
	defer os.RemoveAll(dir)
	state := cfg.state
	if state == "" {
		state = dir
	} else if err := os.MkdirAll(state, 0o700); err != nil {
		return summary{}, err
	}
	repo, script, deployLog := filepath.Join(state, "repo"), filepath.Join(dir, "deploy.sh"), filepath.Join(dir, "deployed")
	if err := os.WriteFile(script, []byte(deployScript), 0o755); err != nil {
		return summary{}, err
	}
	_, statErr := os.Stat(filepath.Join(repo, ".git"))
	resume := statErr == nil
	if !resume {
		if err := git(ctx, dir, "init", "-q", "-b", "main", repo); err != nil {
			return summary{}, err
		}
	}
	var sum summary
	commit := func(i int) error {
		if err := git(ctx, repo, "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("change %d", i)); err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "HEAD").Output()
		if err != nil {
			return fmt.Errorf("git rev-parse: %w", err)
		}
		sum.commits = append(sum.commits, strings.TrimSpace(string(out)))
		logger.Info("commit landed", "n", i, "revision", sum.commits[len(sum.commits)-1])
		return nil
	}
	if resume { // the repository of an earlier run: start from its head
		out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "HEAD").Output()
		if err != nil {
			return summary{}, fmt.Errorf("git rev-parse: %w", err)
		}
		sum.commits = append(sum.commits, strings.TrimSpace(string(out)))
	} else if err := commit(1); err != nil {
		return summary{}, err
	}

	// The live record survives restarts: a revision it holds is not
	// deployed again. Close it after the Manager, which saves into it.
	store, err := boltstore.Open(filepath.Join(state, "live.db"))
	if err != nil {
		return summary{}, err
	}
	defer store.Close()
	if rev, ok, err := store.Load(ctx, "app"); err != nil {
		return summary{}, err
	} else if ok {
		sum.resumed = string(rev)
		logger.Info("live record", "key", "app", "revision", rev)
	}

	cmd := deployer.Command(script)
	cmd.Env = []string{
		"DEPLOY_SECONDS=" + fmt.Sprintf("%.3f", cfg.deployTime.Seconds()),
		"DEPLOY_LOG=" + deployLog,
	}
	cmd.Logger = logger
	live := make(chan string, 1) // the newest revision that went live
	m, err := dedup.New(cmd, dedup.WithStore(store), dedup.WithLogger(logger), dedup.WithObserver(func(e dedup.Event) {
		if e.Kind == dedup.EventSucceeded || e.Kind == dedup.EventUnchanged {
			select {
			case <-live: // drop an older one nobody read
			default:
			}
			live <- string(e.Revision)
		}
	}))
	if err != nil {
		return summary{}, err
	}
	defer m.Close(context.Background())

	p := poller.New(m, poller.WithLogger(logger))
	if err := p.Watch("app", poller.Git(repo, "main"), poller.Every(cfg.poll), poller.Jitter(0)); err != nil {
		return summary{}, err
	}
	pollCtx, stopPolling := context.WithCancel(ctx)
	polling := make(chan error, 1)
	go func() { polling <- p.Run(pollCtx) }()
	stop := sync.OnceValue(func() error {
		stopPolling()
		return <-polling
	})
	defer stop()

	for i := 2; i <= cfg.commits; i++ {
		select {
		case <-time.After(cfg.every):
		case <-ctx.Done():
			return summary{}, ctx.Err()
		}
		if err := commit(i); err != nil {
			return summary{}, err
		}
	}
	last := sum.commits[len(sum.commits)-1]
	for sum.live != last {
		select {
		case sum.live = <-live:
		case <-ctx.Done():
			return summary{}, fmt.Errorf("newest commit not live after %v: %w", cfg.timeout, ctx.Err())
		}
	}
	if err := stop(); err != nil {
		return summary{}, err
	}
	if err := m.Close(ctx); err != nil {
		return summary{}, err
	}
	data, err := os.ReadFile(deployLog)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // no deploy ran
		return summary{}, err
	}
	sum.deploys = strings.Fields(string(data))
	return sum, nil
}

// git runs git in dir, with no terminal prompts.
func git(ctx context.Context, dir string, args ...string) error {
	c := exec.CommandContext(ctx, "git", append([]string{"-C", dir,
		"-c", "user.name=gitops example", "-c", "user.email=gitops@example.invalid"}, args...)...)
	c.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", args[0], err, out)
	}
	return nil
}
