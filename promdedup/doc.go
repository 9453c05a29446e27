// Package promdedup exports Prometheus metrics of a dedup.Manager and a
// poller.Poller, built only on their observer events and the Manager's
// Statuses: it adds no hook and no goroutine, and its observers are quick
// (a counter, a histogram, a short lock).
//
//	metrics := promdedup.New()
//	m, err := dedup.New(deployer, dedup.WithObserver(metrics.Observe), dedup.WithSlowDeploy(2, time.Minute))
//	if err != nil {
//		log.Fatal(err)
//	}
//	metrics.SetSource(m) // the running and pending gauges, read at each scrape
//	p := poller.New(m, poller.WithObserver(metrics.ObservePoll))
//	prometheus.MustRegister(metrics)
//	http.Handle("GET /metrics", promhttp.Handler())
//
// The metrics:
//
//	dedupdeploy_triggers_total{action}       triggers by what they did (dedup.Action): started, queued, joined-running, joined-pending, unchanged
//	dedupdeploy_runs_total{outcome}          runs ended: deployed, failed, aborted, unchanged (the Store had it live)
//	dedupdeploy_run_duration_seconds         histogram of every deploy attempt's duration
//	dedupdeploy_trigger_to_live_seconds      histogram: first trigger of a revision to the end of its successful deploy
//	dedupdeploy_running, dedupdeploy_pending gauges: keys with a deploy running, with a revision pending
//	dedupdeploy_slow_deploys_total           attempts reported slow (dedup.WithSlowDeploy)
//	dedupdeploy_store_errors_total           failed Store loads and saves
//	dedupdeploy_polls_total{result}          polls: polled (unchanged), changed, error, trigger-failed
//	dedupdeploy_poll_duration_seconds        histogram of each poll's duration
//
// WithKeyLabel adds a "key" label to each, one series per key (and label
// value): fine for tens of keys, not for thousands.
//
// The lag to live is measured per revision, from its first trigger (by
// the Manager's clock) to the end of its successful deploy, retries
// included. A revision superseded before it ran, or whose run failed, is
// not measured; the newer one that covered it is. Under a pile-up this
// lag grows without bound; with dedupdeploy it stays within about two
// deploys (the one running when the revision arrived, and its own), plus
// debounce, retries and the wait for a slot.
//
// Pass ObservePoll to poller.WithObserver to count polls. Events come
// from the Manager's goroutines; Metrics is safe for concurrent use.
package promdedup
