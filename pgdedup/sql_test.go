package pgdedup

import (
	"strings"
	"testing"
)

// TestQueriesDerived: the queries written as another query plus a clause
// expand to exactly that, with no reference or comment line left over.
func TestQueriesDerived(t *testing.T) {
	q, err := parseQueries("s")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(q.keyLock, ";") + " SKIP LOCKED;"; q.keyTryLock != want {
		t.Errorf("KeyTryLock = %q; want %q", q.keyTryLock, want)
	}
	if !strings.HasSuffix(q.keyStatus, `FROM "s".keys WHERE key = $1;`) || !strings.HasSuffix(q.keyStatuses, `FROM "s".keys ORDER BY key;`) {
		t.Errorf("KeyStatus = %q, KeyStatuses = %q; want the status select with WHERE key = $1 / ORDER BY key", q.keyStatus, q.keyStatuses)
	}
	for _, s := range []string{q.migrate, q.keyLock, q.keyTryLock, q.keySave, q.keyStatus, q.keyStatuses} {
		if strings.Contains(s, "{{") || strings.HasPrefix(s, "--") {
			t.Errorf("query left unexpanded or with its comment: %q", s)
		}
	}
}
