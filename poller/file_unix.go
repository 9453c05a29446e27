//go:build unix

package poller

import (
	"os"
	"syscall"
)

// openNonblock opens path for reading without blocking in open: a named
// pipe with no writer would otherwise block until one comes. Reads of a
// regular file are not affected by O_NONBLOCK.
func openNonblock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
