//go:build !unix

package boltstore

import "os"

// unlock does nothing where bbolt's lock goes with the file's handle.
func unlock(*os.File) {}
