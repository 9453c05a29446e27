package webhook

import "testing"

// A delivery that failed is released and, retried, claimed again in
// another slot; when its old slot is reused, the ID must stay remembered.
func TestSeenReleasedThenClaimedAgain(t *testing.T) {
	s := newSeen(3)
	for _, step := range []struct {
		op, id string
		want   bool // what claim returns
	}{
		{"claim", "a", true}, // slot 0
		{"release", "a", false},
		{"claim", "a", true},  // the retry, slot 1
		{"claim", "b", true},  // slot 2
		{"claim", "c", true},  // slot 0 again: its stale "a" goes, the live one stays
		{"claim", "a", false}, // still remembered
		{"claim", "d", true},  // slot 1: now "a" goes
		{"claim", "a", true},
	} {
		if step.op == "release" {
			s.release(step.id)
			continue
		}
		if got := s.claim(step.id); got != step.want {
			t.Fatalf("claim(%q) = %v; want %v", step.id, got, step.want)
		}
	}
}
