//go:build unix

package deployer

import (
	"os"
	"os/exec"
	"syscall"
)

// ownGroup makes the process the leader of a new process group, so that
// everything it starts can be signaled at once, children included.
func ownGroup(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether any process is left in p's group. A process
// that has exited but was not reaped yet by its parent counts.
//
// The group's id is p's pid. The kernel does not hand out a pid that is
// still a group's id, so while the group has members the signals below
// cannot reach an unrelated process.
func groupAlive(p *os.Process) bool {
	return syscall.Kill(-p.Pid, 0) == nil
}

// terminateGroup asks every process in p's group to stop. An error can only
// mean that the group is empty already.
func terminateGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
}

// killGroup kills every process in p's group, and p itself even if it moved
// to another group.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill()
}
