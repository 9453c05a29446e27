//go:build unix

package poller

import (
	"os/exec"
	"syscall"
)

// detach runs cmd in a session of its own: it has no controlling terminal
// to prompt on, and canceling its context kills its whole process group
// (git runs ssh or a remote helper as children), not only cmd.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Cancel = func() error {
		// In a new session the process group id is the process id.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
