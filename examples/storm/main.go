// Command storm replays a deploy storm on a fake clock and compares three
// ways of reacting to it, side by side.
//
// A poller looks at a Git branch once per interval, commits land twice per
// interval, and one deploy of the stack takes five intervals. Each poll
// that sees a change reacts to it:
//
//   - naive starts a deploy for every change it sees, so deploys pile up;
//   - singleflight wraps the deploy in golang.org/x/sync/singleflight, keyed
//     by stack, so a poll during a deploy joins that deploy of an older
//     commit and the newest one waits for a later poll;
//   - dedupdeploy triggers a dedup.Manager, which runs one deploy at a time
//     and keeps the newest commit seen meanwhile for the next one.
//
// The three run on deduptest.Clock with real goroutines, a real
// singleflight.Group and a real dedup.Manager, so the replay is instant and
// its output is the same on every run. Run it from the module root:
//
//	go run ./examples/storm
//	go run ./examples/storm -interval 30s -deploy 2m -commits 20 -v
//
// Every deploy here starts on a poll or right after another deploy, so a
// deploy that lasts a whole number of intervals ends at the very time of a
// later poll. The replay lets that poll go first: the deploy began a moment
// after the poll that saw its commit, so it ends a moment after the poll it
// coincides with.
//
// Singleflight makes the newest commit wait for the first poll after the
// running deploy ends; dedupdeploy starts it as that deploy ends. But its
// follow-up deploys the newest commit seen so far, so when that deploy ends
// just before a poll that would have seen a newer one, the newer one waits a
// whole deploy: try -commits 14, where singleflight is sooner.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	sc := Scenario{}
	flag.DurationVar(&sc.Interval, "interval", time.Minute, "time between two polls")
	flag.DurationVar(&sc.Deploy, "deploy", 0, "how long one deploy takes (default 5 × interval)")
	flag.IntVar(&sc.Commits, "commits", 10, "how many commits land, two per interval")
	flag.IntVar(&sc.Polls, "polls", 0, "poll at most this many times (default: until every strategy is quiet)")
	verbose := flag.Bool("v", false, "also list every deploy of every strategy")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: storm [flags]\n\nReplays a deploy storm on a fake clock for three strategies.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if sc.Deploy == 0 {
		sc.Deploy = 5 * sc.Interval
	}
	if err := sc.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(2)
	}

	// The replay takes microseconds; the deadline only turns a bug that
	// would hang it into an error.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := Run(ctx, sc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
	Print(os.Stdout, sc, results, *verbose)
}

// Print writes the scenario, the table of results and, when verbose, every
// deploy of every strategy.
func Print(w io.Writer, sc Scenario, results []Result, verbose bool) {
	fmt.Fprintf(w, "A poll every %s sees a new commit each time: %d commits land, two per interval,\n", short(sc.Interval), sc.Commits)
	fmt.Fprintf(w, "the last at %s. One deploy of the stack takes %s.\n\n", short(sc.landed(sc.Commits)), short(sc.Deploy))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "strategy\tdeploys run\tmax concurrent\tlast commit live\tlive after it landed\tstale answers")
	never := false
	for _, r := range results {
		live, after := "no", "never"
		if r.Live {
			live, after = "yes", short(r.LiveAfter)
		} else {
			never = true
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\n", r.Strategy, len(r.Deploys), r.MaxConcurrent, live, after, r.Stale)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nmax concurrent: most deploys of the stack running at the same time. A deploy\n")
	fmt.Fprintf(w, "  that ends on a poll ends just after it, as it began just after a poll.\n")
	fmt.Fprintf(w, "last commit live: %s is what the last deploy to finish deployed.\n", revision(sc.Commits))
	fmt.Fprintf(w, "stale answers: polls told \"deployed\" by a deploy of an older commit than theirs.\n")
	if never { // only a row that says "never" needs the footnote
		fmt.Fprintf(w, "never: not live after %d polls (-polls).\n", sc.Polls)
	}

	if !verbose {
		return
	}
	for _, r := range results {
		fmt.Fprintf(w, "\n%s, %d polls:\n", r.Strategy, r.Polls)
		for _, d := range r.Deploys {
			end := "canceled at the end of the replay"
			if d.Finished {
				end = "until " + short(d.End)
			}
			fmt.Fprintf(w, "  %-6s from %s %s\n", revision(d.Commit), short(d.Start), end)
		}
	}
}

// short formats d without the zero units that time.Duration.String keeps:
// 5m instead of 5m0s, 1h instead of 1h0m0s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Scenario is the storm to replay. Polls happen at Interval, 2×Interval, and
// so on; commit n (from 1) lands at (n-1)×Interval/2 + Interval/4, so each
// poll until the last commit sees a new one.
type Scenario struct {
	Interval time.Duration // between two polls
	Deploy   time.Duration // how long one deploy takes
	Commits  int           // how many commits land
	Polls    int           // polls at most; 0: enough for every strategy to go quiet
}

// Validate reports the first problem that keeps sc from being replayed.
func (sc Scenario) Validate() error {
	switch {
	case sc.Interval <= 0:
		return fmt.Errorf("interval %v is not positive", sc.Interval)
	case sc.Deploy <= 0:
		return fmt.Errorf("deploy duration %v is not positive", sc.Deploy)
	case sc.Commits < 1:
		return fmt.Errorf("commits %d is less than 1", sc.Commits)
	case sc.Polls < 0:
		return fmt.Errorf("polls %d is negative", sc.Polls)
	}
	return nil
}

// landed returns when commit n lands, since the storm began.
func (sc Scenario) landed(n int) time.Duration {
	return time.Duration(n-1)*sc.Interval/2 + sc.Interval/4
}

// newest returns the newest commit landed by t, 0 if none.
func (sc Scenario) newest(t time.Duration) int {
	if t < sc.landed(1) {
		return 0
	}
	n := 1
	if half := sc.Interval / 2; half > 0 {
		n = min(int((t-sc.landed(1))/half)+1, sc.Commits)
	}
	// Integer division may be one off either way for odd intervals.
	for n > 1 && sc.landed(n) > t {
		n--
	}
	for n < sc.Commits && sc.landed(n+1) <= t {
		n++
	}
	return n
}

// polls returns how many polls to make at most. The default leaves every
// strategy time to deploy the last commit: the poll that sees it, a deploy
// still running then, a poll to notice it ended, and the deploy of the last
// commit, with room to spare.
func (sc Scenario) polls() int {
	if sc.Polls > 0 {
		return sc.Polls
	}
	perDeploy := int((sc.Deploy + sc.Interval - 1) / sc.Interval)
	return (sc.Commits+1)/2 + 3*perDeploy + 2
}

// revision names commit n.
func revision(n int) string { return fmt.Sprintf("c%d", n) }
