package dedup

import (
	"context"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

// Every field of the policy the rules read comes from the Policy: a field
// added to keyrules.Policy and forgotten in intern fails here.
func TestInternMapsEveryRuleField(t *testing.T) {
	m, err := New(DeployFunc(func(ctx context.Context, key string, rev Revision) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	p := m.intern(Policy{
		Quiet: time.Second, MaxDelay: time.Minute, MinInterval: time.Hour, Timeout: time.Hour,
		Retry:            RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.5},
		CancelInProgress: true,
	})
	v := reflect.ValueOf(p.rules)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("keyrules.Policy.%s is zero for a Policy with every field set", v.Type().Field(i).Name)
		}
	}
}

// A shard is whole cache lines, so that two shards' locks never share one:
// the padding is computed by hand from the sizes of its fields.
func TestShardIsWholeCacheLines(t *testing.T) {
	if n := unsafe.Sizeof(shard{}); n%64 != 0 {
		t.Fatalf("a shard is %d bytes; want a multiple of 64 (fix its padding)", n)
	}
}
