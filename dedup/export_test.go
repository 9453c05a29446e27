package dedup

// WithSlotHook makes the Manager call f, with the key, at every operation
// on a concurrency slot (take, queue, release), in the order they happen.
// When several keys come due at the same instant, the contract leaves open
// which goes first; the model test learns the Manager's order from f.
func WithSlotHook(f func(key string)) Option {
	return func(c *config) { c.slotHook = f }
}

// RunsHeld counts the runs that m holds for key: its running and pending
// runs and every run whose tickets settle with them.
func RunsHeld(m *Manager, key string) int {
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil {
		return 0
	}
	n := 0
	var count func(r *run)
	count = func(r *run) {
		if r == nil {
			return
		}
		n++
		for _, w := range r.absorbed {
			count(w.Value()) // nil once collected
		}
	}
	count(ks.running)
	count(ks.pending)
	return n
}

// InternedPolicies is how many distinct policies m keeps.
func InternedPolicies(m *Manager) int {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	return len(m.policies)
}
