//go:build unix

package boltstore

import (
	"os"
	"syscall"
)

// unlock drops the flock bbolt took on f. Closing f alone would not: a
// mapping of the file keeps the lock as long as it exists.
func unlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
