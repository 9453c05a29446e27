// Package statuspage serves a read-only view of what a dedup.Manager is
// doing, for people and for scripts: every key's live, running and pending
// revision, its attempts, last error, times and deploy-time baseline, as
// an HTML table in a browser and as JSON elsewhere. It only reads the
// Manager's Status and Statuses, so it never changes a key and costs
// nothing between requests.
//
// Mount it in one line:
//
//	m, err := dedup.New(deployer, dedup.WithSlowDeploy(2, time.Minute))
//	if err != nil {
//		log.Fatal(err)
//	}
//	http.Handle("GET /status/", statuspage.Handler("/status/", m))
//
// Then /status/ lists every key and /status/web shows the key "web"
// (/status/?key=web too, which also reaches a key such as "a//b" that is
// not a clean path); add
// ?format=json or ?format=html to choose, else the Accept header does
// (HTML for browsers, JSON for curl). The JSON of one key is the JSON of
// its dedup.Status, so a client decodes it back into one; every key is
// {"time": ..., "keys": [...]}, each like it:
//
//	{
//	  "key": "web",
//	  "live": "4f2a9c1",
//	  "running": "77e0b3d",
//	  "attempt": 1,
//	  "runs": 3, "deployed": 2, "failures": 0, "superseded": 1,
//	  "last_started": "2026-11-29T13:02:11Z",
//	  "last_finished": "2026-11-29T12:58:40Z",
//	  "baseline": {"samples": 2, "mean": "55s", "p90": "1m0s"},
//	  "slow": true
//	}
//
// Errors appear as their text ("last_error", "store_error"), which may
// hold a deploy command's output: mount the page where only operators
// reach it. Keys and revisions are escaped (html/template); the page has
// no script.
//
// It is written on the standard library alone (html/template,
// encoding/json): a page this small does not justify a dependency.
package statuspage
