package pgdedup

// Abandon makes the attempt of key running on m stop renewing its lease
// and never record its end, as if its replica had died: the attempt is
// canceled when the lease runs out, and a replica that finds the lease
// expired runs the key again with a higher fence. It
// reports whether an attempt of key runs on m.
func Abandon(m *Manager, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.attempts[key]
	if a == nil {
		return false
	}
	a.abandoned.Store(true)
	return true
}

// Closing reports whether Close has begun on m.
func Closing(m *Manager) bool { return m.gate.isClosed() }
