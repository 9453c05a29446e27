package webhook

import (
	"crypto/sha256"
	"sync"
)

// seen remembers the last n delivery IDs: a ring of their hashes and an
// index from hash to ring slot. Memory is fixed by n, whatever the IDs
// hold: each entry is a 16-byte hash in the ring and in the map.
type seen struct {
	mu    sync.Mutex
	ring  [][16]byte
	next  int // the slot the next claim takes, evicting what it holds
	count int // slots in use
	index map[[16]byte]int
}

func newSeen(n int) *seen {
	if n == 0 {
		return nil
	}
	return &seen{ring: make([][16]byte, n), index: make(map[[16]byte]int, n)}
}

func idHash(id string) [16]byte {
	sum := sha256.Sum256([]byte(id))
	return [16]byte(sum[:16])
}

// claim records id and reports whether it was new. A nil seen remembers
// nothing: every ID is new.
func (s *seen) claim(id string) bool {
	if s == nil {
		return true
	}
	h := idHash(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[h]; ok {
		return false
	}
	if s.count == len(s.ring) {
		old := s.ring[s.next]
		if i, ok := s.index[old]; ok && i == s.next {
			delete(s.index, old)
		}
	} else {
		s.count++
	}
	s.ring[s.next] = h
	s.index[h] = s.next
	s.next = (s.next + 1) % len(s.ring)
	return true
}

// release forgets id, so that a retry of a delivery that failed is acted
// on. Its ring slot stays until reused; claim then leaves alone an index
// entry that points elsewhere.
func (s *seen) release(id string) {
	if s == nil {
		return
	}
	h := idHash(id)
	s.mu.Lock()
	delete(s.index, h)
	s.mu.Unlock()
}
