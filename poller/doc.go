// Package poller watches sources of revisions (a git branch, an HTTP
// resource, a file) and hands every revision it finds to a dedup.Manager,
// which deploys it unless it is live. Per key, polls never overlap, a
// failing source backs off and is reported, never swallowed, and an idle key
// costs a place in the Poller's timer heap, neither a goroutine nor a timer.
//
// Hand the Poller a Manager, watch keys, and run it:
//
//	m, err := dedup.New(deployer)
//	if err != nil {
//		return err
//	}
//	defer m.Close(context.Background())
//
//	p := poller.New(m, poller.WithLogger(slog.Default()))
//	err = p.Watch("web", poller.Git("https://example.com/web.git", "main"), poller.Every(30*time.Second))
//	if err != nil {
//		return err
//	}
//	return p.Run(ctx) // until ctx ends; call p.PollNow("web") from a webhook
//
// # The guarantees, per watched key
//
//   - No overlap: a poll starts only after the previous poll of the key
//     returned; PollNow during a poll asks for one more poll right after
//     it.
//   - Spacing: the next poll is Every after the end of the previous one,
//     times a random factor within ±Jitter, so that many keys spread out.
//     The first poll comes after a random part of Jitter×Every.
//   - Level-triggered: every successful poll hands its revision to the
//     Trigger (Notify), changed or not. A Manager answers a live revision
//     as unchanged at almost no cost, and deploys any other: so a head
//     whose deploy failed is deployed again at the next poll (or, with a
//     retry policy, when its backoff ends), instead of staying stuck until
//     the next commit. The event says whether the revision changed
//     (EventChanged) or not (EventPolled).
//   - Errors are reported: a failed poll is an Event of kind EventError
//     for the observer and the logger, and Status shows it. The key is
//     polled again after Every×2^(failures-1), capped by MaxBackoff; a
//     success resets the backoff. A refused trigger is reported too, and
//     the revision is triggered again at the next poll.
//   - Bounded: each Source.Latest call gets a context that ends with Run
//     and after Timeout (default Every). A panic in a Source or a Trigger
//     is recovered and reported as an error; so is runtime.Goexit (as
//     t.FailNow calls it), as an error wrapping ErrGoexit, and the key goes
//     on being polled. A panic in an observer or a logger is recovered and
//     logged (to the Poller's logger, else slog's default).
//   - Scheduled first: a poll's event is delivered once the key's next poll
//     is scheduled, so an observer that sees it finds Status.Next set.
//   - Watch, Unwatch and PollNow are safe while Run runs. After Unwatch
//     returns, the key is not triggered again.
//   - Run owns every goroutine: a goroutine exists only while a poll runs,
//     and when Run returns, none is left, and no timer either.
//
// # Sources
//
// Git reports the commit at the tip of a branch or tag: over http:// and
// https:// in process, with git's protocol version 2 (ls-refs of just the
// refs needed, on a kept-alive connection; version 0 from older servers),
// else with `git ls-remote --heads --tags` (no shell, no prompts). GitPath
// reports the tree of a directory at that commit, so that a commit to one
// stack of a repository does not redeploy the others. HTTP reports a
// Docker-Content-Digest, a strong ETag or a body hash, with conditional
// requests. File reports a hash of a regular file's content. Any function
// can be a Source with SourceFunc.
//
// # Many keys on one remote
//
// The keys of a Poller whose git sources (Git and GitPath) name the same
// remote, with the same credentials, share its requests: a poll asks the
// remote for the refs of every key on it, and the answer serves the other
// keys' polls for half their interval (Every/2) after its request started.
// A key served that way counts its next poll from that request, so keys of
// one interval stay in one round: a repository with five stacks costs one
// request per round, not five. Keys with a longer interval are served by
// the requests of keys with a shorter one. Polls that need a request while
// it is in flight wait for it instead of sending their own.
//
// # Testing
//
// WithClock takes the same dedup.Clock as the Manager: with a
// deduptest.Clock, polls start when the test advances it. Every poll, except
// one started by PollNow, starts from the Poller's timer on that clock.
package poller
