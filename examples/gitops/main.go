// Command gitops shows dedupdeploy keeping two stacks of one busy git
// repository up to date.
//
// It makes a real git repository in a temporary directory with two stacks,
// stacks/web and stacks/api, and lands commits to stacks/web faster than a
// deploy finishes, then one commit to stacks/api. A poller.GitPath source per
// stack watches its directory: its revision is the directory's tree, so a
// commit to web is no change for api. A deployer.Command runs a deploy
// script for each revision the Manager decides to deploy; the script unpacks
// exactly that tree with `git archive`. The log (log/slog) shows triggers
// coalescing while a deploy runs. At the end each stack's newest tree is
// live: web after fewer deploys than commits, api after exactly two (its
// first revision and its one commit), however slow the machine is.
//
//	go run ./examples/gitops
//	go run ./examples/gitops -commits 12 -every 100ms -deploy-time 1s
//
// It needs git, sh and tar, and finishes by itself in a few seconds.
//
// The repository, the poller's cache of fetched trees, the deployed stacks
// and the live record (a boltstore file, live.db, written through
// dedup.WithStore) are kept in the -state directory, by default
// dedup-gitops in the system's temporary directory (/tmp/dedup-gitops on
// Linux). Run it twice: the second run finds each stack's tree live in the
// live record, polls it, and deploys it no more; it lands new commits only
// to stacks/web, so web deploys its new trees and api deploys nothing. The
// summary of each stack says which tree was live at the start and whether
// it was deployed again. Delete the directory to start afresh; -state ""
// uses a new temporary directory and removes it at the end.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/deployer"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

type config struct {
	commits    int           // commits to land on stacks/web
	every      time.Duration // between two commits
	poll       time.Duration // poll interval of the git sources
	deployTime time.Duration // how long the deploy script takes
	timeout    time.Duration // give up after
	state      string        // directory kept between runs; "" for a new temporary one
}

func main() {
	var cfg config
	flag.IntVar(&cfg.commits, "commits", 8, "commits to land on stacks/web")
	flag.DurationVar(&cfg.every, "every", 150*time.Millisecond, "time between two commits")
	flag.DurationVar(&cfg.poll, "poll", 100*time.Millisecond, "poll interval of the git sources")
	flag.DurationVar(&cfg.deployTime, "deploy-time", 700*time.Millisecond, "how long one deploy takes")
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "give up after this long")
	flag.StringVar(&cfg.state, "state", filepath.Join(os.TempDir(), "dedup-gitops"),
		"directory of the repository, the cache, the deployed stacks and the live record, kept between runs (\"\": a new temporary one)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sum, err := run(context.Background(), cfg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops:", err)
		os.Exit(1)
	}
	sum.print(os.Stdout)
}

// stacks are the directories of the repository, each deployed as a key.
var stacks = []string{"web", "api"}

// stackSummary is what happened to one stack.
type stackSummary struct {
	resumed string   // the tree the live record held at the start; "" if none
	commits []string // trees of the stack's directory, in the order they landed; on a resumed run the first is the one at the head at the start
	deploys []string // trees the script deployed, in order
	live    string   // the tree live at the end
	content string   // what the last deploy unpacked: stacks/<key>/version
}

type summary map[string]*stackSummary

func (s summary) print(w io.Writer) {
	fmt.Fprintln(w)
	for _, key := range stacks {
		st := s[key]
		newest := st.commits[len(st.commits)-1]
		revisions := fmt.Sprintf("%d revisions", len(st.commits))
		if st.resumed != "" {
			fmt.Fprintf(w, "%s: %.7s live at the start (live.db), deployed again: %v\n",
				key, st.resumed, slices.Contains(st.deploys, st.resumed))
			revisions = fmt.Sprintf("%d new revisions", len(st.commits)-1)
		}
		deploys := fmt.Sprintf("%d deploys", len(st.deploys))
		if len(st.deploys) > 0 {
			deploys += ": " + short(st.deploys)
		}
		fmt.Fprintf(w, "%s: %s, %s; newest %.7s live: %v (%s)\n",
			key, revisions, deploys, newest, st.live == newest, st.content)
	}
}

func short(revs []string) string {
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r[:min(7, len(r))]
	}
	return strings.Join(out, " ")
}

// deployScript is what a deploy runs. It reads the key and the revision (the
// tree of the stack's directory) from the environment, quoted, as the
// deployer package advises, unpacks exactly that tree from the poller's
// cache, and records it.
const deployScript = `#!/bin/sh
set -eu
echo "deploying $DEDUP_KEY at $DEDUP_REVISION"
target="$DEPLOY_ROOT/$DEDUP_KEY"
rm -rf "$target.new" && mkdir -p "$target.new"
git -C "$GIT_CACHE" archive --format=tar "$DEDUP_REVISION" | tar -x -C "$target.new"
sleep "$DEPLOY_SECONDS"
rm -rf "$target" && mv "$target.new" "$target"
printf '%s %s\n' "$DEDUP_KEY" "$DEDUP_REVISION" >> "$DEPLOY_LOG"
echo "live: $DEDUP_KEY at $DEDUP_REVISION: $(cat "$target/version")"
`

func run(ctx context.Context, cfg config, logger *slog.Logger) (summary, error) {
	if cfg.commits < 1 || cfg.every <= 0 || cfg.poll <= 0 || cfg.deployTime < 0 || cfg.timeout <= 0 {
		return nil, errors.New("flags: need commits >= 1 and positive durations")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	// What one run needs (the script, the log of its deploys) is in a
	// temporary directory; what outlives it is in the state directory.
	dir, err := os.MkdirTemp("", "dedup-gitops-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	state := cfg.state
	if state == "" {
		state = dir
	} else if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	// The live record first: a second process on the same state gets
	// boltstore.ErrLocked before it touches the repository. It is closed
	// after the Manager, which saves into it.
	store, err := boltstore.Open(filepath.Join(state, "live.db"))
	if err != nil {
		return nil, err
	}
	defer store.Close()

	repo, cache, deployRoot := filepath.Join(state, "repo"), filepath.Join(state, "cache"), filepath.Join(state, "deployed")
	script, deployLog := filepath.Join(dir, "deploy.sh"), filepath.Join(dir, "deploy.log")
	if err := os.WriteFile(script, []byte(deployScript), 0o755); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(repo, ".git"))
	resume := statErr == nil
	if !resume {
		if err := git(ctx, dir, "init", "-q", "-b", "main", repo); err != nil {
			return nil, err
		}
	}
	sum := summary{}
	for _, key := range stacks {
		sum[key] = &stackSummary{}
	}
	// tree returns the tree of the stack's directory at the head.
	tree := func(key string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "--verify", "-q", "HEAD:stacks/"+key).Output()
		if err != nil {
			return "", fmt.Errorf("git rev-parse HEAD:stacks/%s in %s: %w", key, repo, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	// commit writes version n into the listed stacks and commits.
	commit := func(n int, keys ...string) error {
		for _, key := range keys {
			d := filepath.Join(repo, "stacks", key)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, "version"), []byte(fmt.Sprintf("%s v%d\n", key, n)), 0o644); err != nil {
				return err
			}
		}
		if err := git(ctx, repo, "add", "-A"); err != nil {
			return err
		}
		if err := git(ctx, repo, "commit", "-q", "-m", fmt.Sprintf("%s v%d", strings.Join(keys, ", "), n)); err != nil {
			return err
		}
		for _, key := range keys {
			t, err := tree(key)
			if err != nil {
				return err
			}
			st := sum[key]
			st.commits = append(st.commits, t)
			logger.Info("commit landed", "stack", key, "version", n, "tree", t)
		}
		return nil
	}
	// A first run commits version 1 of both stacks, versions 2 to commits
	// of web, then version commits+1 of api. A resumed run starts from the
	// trees at the head of the earlier runs' repository and numbers its
	// commits on from theirs.
	first := 1
	if resume {
		out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-list", "--count", "HEAD").Output()
		if err != nil {
			return nil, fmt.Errorf("git rev-list in %s: %w", repo, err)
		}
		if first, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
			return nil, fmt.Errorf("git rev-list in %s: %w", repo, err)
		}
		for _, key := range stacks {
			t, err := tree(key)
			if err != nil {
				return nil, fmt.Errorf("%w (not a repository of this example? delete %s to start afresh)", err, state)
			}
			sum[key].commits = append(sum[key].commits, t)
		}
	} else if err := commit(first, stacks...); err != nil {
		return nil, err
	}
	for _, key := range stacks {
		rev, ok, err := store.Load(ctx, key)
		if err != nil {
			return nil, err
		}
		if ok {
			sum[key].resumed = string(rev)
			logger.Info("live record", "stack", key, "tree", rev)
		}
	}

	cmd := deployer.Command(script)
	cmd.Env = []string{
		"DEPLOY_SECONDS=" + fmt.Sprintf("%.3f", cfg.deployTime.Seconds()),
		"DEPLOY_ROOT=" + deployRoot,
		"DEPLOY_LOG=" + deployLog,
		"GIT_CACHE=" + cache,
	}
	cmd.Logger = logger
	var mu sync.Mutex
	live := map[string]string{}
	changed := make(chan struct{}, 1)
	// A tree is live when its deploy succeeded, or when a trigger found
	// it live already: in a resumed run, the live record says so.
	m, err := dedup.New(cmd, dedup.WithStore(store), dedup.WithLogger(logger), dedup.WithObserver(func(e dedup.Event) {
		if e.Kind == dedup.EventSucceeded || e.Kind == dedup.EventUnchanged {
			mu.Lock()
			live[e.Key] = string(e.Revision)
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}))
	if err != nil {
		return nil, err
	}
	defer m.Close(context.Background())

	// Polls are frequent; a loaded machine may make one slow, so it is
	// bounded by a generous Timeout rather than by the interval.
	p := poller.New(m, poller.WithLogger(logger))
	for _, key := range stacks {
		src := poller.GitPath(repo, "main", "stacks/"+key)
		src.CacheDir = cache
		if err := p.Watch(key, src, poller.Every(cfg.poll), poller.Jitter(0), poller.Timeout(10*time.Second)); err != nil {
			return nil, err
		}
	}
	pollCtx, stopPolling := context.WithCancel(ctx)
	polling := make(chan error, 1)
	go func() { polling <- p.Run(pollCtx) }()
	stop := sync.OnceValue(func() error {
		stopPolling()
		return <-polling
	})
	defer stop()

	// A first run lands commits-1 more commits to web, then one to api; a
	// resumed run lands commits to web only, so api's live tree stays the
	// head's.
	webCommits := cfg.commits - 1
	if resume {
		webCommits = cfg.commits
	}
	for i := 1; i <= webCommits; i++ {
		select {
		case <-time.After(cfg.every):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := commit(first+i, "web"); err != nil {
			return nil, err
		}
	}
	if !resume {
		if err := commit(first+webCommits+1, "api"); err != nil {
			return nil, err
		}
	}
	// Wait until each stack's newest tree is live.
	for {
		mu.Lock()
		done := true
		for _, key := range stacks {
			st := sum[key]
			st.live = live[key]
			done = done && st.live == st.commits[len(st.commits)-1]
		}
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("newest trees not live after %v: %w", cfg.timeout, ctx.Err())
		}
	}
	if err := stop(); err != nil {
		return nil, err
	}
	if err := m.Close(ctx); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(deployLog)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // no deploy ran
		return nil, err
	}
	for line := range strings.Lines(string(data)) {
		key, tree, _ := strings.Cut(strings.TrimSpace(line), " ")
		if st := sum[key]; st != nil {
			st.deploys = append(st.deploys, tree)
		}
	}
	for _, key := range stacks {
		content, err := os.ReadFile(filepath.Join(deployRoot, key, "version"))
		if err != nil {
			return nil, err
		}
		sum[key].content = strings.TrimSpace(string(content))
	}
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
