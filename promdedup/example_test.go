package promdedup_test

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/promdedup"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	metrics := promdedup.New()
	m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }),
		dedup.WithObserver(metrics.Observe))
	if err != nil {
		fmt.Println(err)
		return
	}
	metrics.SetSource(m)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)

	_, _ = m.Deploy(ctx, "web", "4f2a9c1")
	_, _ = m.Deploy(ctx, "web", "4f2a9c1") // live already
	_ = m.Close(ctx)                       // every event is delivered once Close returns

	families, err := reg.Gather()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			if s.GetCounter().GetValue() == 0 {
				continue
			}
			fmt.Print(f.GetName())
			for _, l := range s.GetLabel() {
				fmt.Printf(" %s=%s", l.GetName(), l.GetValue())
			}
			fmt.Println("", s.GetCounter().GetValue())
		}
	}
	// Output:
	// dedupdeploy_runs_total outcome=deployed 1
	// dedupdeploy_triggers_total action=started 1
	// dedupdeploy_triggers_total action=unchanged 1
}
