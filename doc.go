// Package dedupdeploy stops deployments from piling up.
//
// Services that deploy on change (a GitOps poller, a webhook receiver, an
// image watcher) start a deploy for every change they see. When a deploy
// takes longer than the changes keep coming, deploys of the same stack pile
// up. Plain singleflight is only half a fix: a trigger that arrives
// mid-deploy joins the old deploy, and the new revision waits for the next
// change to be noticed.
//
// This module keeps, per key, one running deploy plus one latest-pending
// revision slot. Any burst of triggers collapses into at most one follow-up
// run of the newest revision; a revision already live, running or pending is
// not deployed twice; every caller that waits gets an answer saying which
// run covered it.
//
//	m, err := dedup.New(deployer.Command("./deploy.sh"))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer m.Close(context.Background())
//
//	p := poller.New(m)
//	p.Watch("web", poller.Git("https://example.com/web.git", "main"), poller.Every(30*time.Second))
//	go p.Run(ctx)
//
//	// A verified GitHub push makes "web" poll at once; the poll, not the
//	// delivery, decides the revision.
//	hook, err := webhook.New(webhook.GitHub(secret), webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}}, p)
//	if err != nil {
//		log.Fatal(err)
//	}
//	http.Handle("POST /hooks/github", hook)
//	http.Handle("GET /status/", statuspage.Handler("/status/", m))
//
// The packages:
//
//   - dedup: the Manager, its rules and options.
//   - dedup/deduptest: a fake Clock and a controllable Deployer for tests.
//   - poller: watch git remotes, HTTP resources and files, and trigger a Manager.
//   - deployer: ready Deployers that run a command or call an HTTP endpoint.
//   - webhook: verified push receivers for git hosts and registries.
//   - boltstore: a durable Store, so a restart redeploys nothing live.
//   - statuspage: a read-only status page of a Manager.
//
// Two more live in modules of their own, so that this module pulls no
// driver: promdedup (Prometheus metrics) and pgdedup (the same guarantees
// across replicas, on PostgreSQL).
package dedupdeploy
