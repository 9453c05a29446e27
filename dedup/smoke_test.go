package dedup_test

import (
	"context"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := new(deduptest.Deployer)
	m, err := dedup.New(d)
	if err != nil {
		t.Fatal(err)
	}
	t1, _ := m.Trigger("web", "v1")
	c1, _ := d.Next(ctx)
	t2, _ := m.Trigger("web", "v2")
	t3, _ := m.Trigger("web", "v3")
	t4, _ := m.Trigger("web", "v1")
	c1.Finish(nil)
	r1, _ := t1.Wait(ctx)
	t.Logf("%+v", r1)
	t.Logf("calls %d", len(d.Calls()))
	for _, tk := range []*dedup.Ticket{t2, t3, t4} {
		r, err := tk.Wait(ctx)
		t.Logf("%+v %v", r, err)
	}
	t5, _ := m.Trigger("web", "v1")
	t.Logf("%+v", t5.Result())
	t.Logf("%+v", m.Statuses())
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
