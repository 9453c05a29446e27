//go:build !unix

package deployer

import (
	"os"
	"os/exec"
)

// Without process groups only the process itself can be stopped, and only
// at once: there is no portable polite signal.

func ownGroup(*exec.Cmd) {}

func groupAlive(*os.Process) bool { return false }

func terminateGroup(p *os.Process) { _ = p.Kill() }

func killGroup(p *os.Process) { _ = p.Kill() }
