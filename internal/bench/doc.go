// Package bench compares dedup with what Go services use instead:
// singleflight and client-go's workqueue; and poller.Git with the other
// ways to poll a git remote: `git ls-remote` per poll and go-git's List. It
// is a module of its own so that the library's go.mod never pulls client-go
// or go-git. Run it with
//
//	cd internal/bench && go test -run '^$' -bench . -benchmem
//
// BenchmarkGitPoll starts git http-backend in a child process (this test
// binary), so that its CPU figures (cpu-ns/op, from getrusage of this
// process and of the git processes it waited for) are the client's alone.
package bench
