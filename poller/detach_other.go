//go:build !unix

package poller

import "os/exec"

// detach leaves cmd as it is: canceling its context kills the process, and
// WaitDelay bounds the wait for its children to let go of its output.
func detach(*exec.Cmd) {}
