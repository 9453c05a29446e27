// Command webhook deploys a git branch when GitHub says it changed. It is
// a GitHub-compatible webhook receiver: a push to the watched repository
// and branch, signed with the webhook's secret, makes a poller read the
// branch at once, and a dedup.Manager deploys the commit
// it finds. Between pushes the poller polls by itself (-every), so a lost
// delivery only delays a deploy; a late or replayed one cannot roll it
// back, since the poll, not the delivery, decides the revision.
//
//	POST /hooks/github   GitHub's push and ping events, X-Hub-Signature-256
//	                     202 polled, 200 ping or duplicate, 401 bad signature,
//	                     202 with a reason for other events or repositories
//	GET  /status/        every key's live, running and pending revision,
//	                     last error and deploy-time baseline: an HTML table
//	                     in a browser, JSON for curl; /status/{key} one key
//	GET  /metrics        Prometheus metrics (promdedup)
//
// It is a module of its own, as it uses promdedup and client_golang, which
// the library's module does not pull. Run it from its directory against
// any git remote (a local path works):
//
//	cd examples/webhook
//	WEBHOOK_SECRET=s3cr3t go run . \
//	    -remote https://github.com/acme/web.git -repo acme/web -ref main
//
// and point a GitHub webhook (content type application/json, the same
// secret, push events) at http://HOST:8080/hooks/github. The deploy is
// simulated: it logs and takes -deploy-time. SIGINT or SIGTERM stops
// taking deliveries, stops polling and lets a running deploy finish (up
// to -grace).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/promdedup"
	"github.com/dedupdeploy/dedupdeploy/statuspage"
	"github.com/dedupdeploy/dedupdeploy/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type config struct {
	secret string        // the GitHub webhook's secret
	remote string        // the git remote the poller reads
	repo   string        // the repository as GitHub names it: owner/name
	ref    string        // the branch or tag to deploy
	key    string        // the Manager's key for it
	every  time.Duration // poll interval without deliveries
	grace  time.Duration // on shutdown, how long running deploys may take
}

func main() {
	var cfg config
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.secret, "secret", "", "the GitHub webhook secret (default $WEBHOOK_SECRET)")
	flag.StringVar(&cfg.remote, "remote", "", "git remote to watch: a URL or a local path (required)")
	flag.StringVar(&cfg.repo, "repo", "", "the repository as GitHub names it, owner/name (required)")
	flag.StringVar(&cfg.ref, "ref", "main", "branch or tag to deploy")
	flag.StringVar(&cfg.key, "key", "web", "the name of what deploys")
	flag.DurationVar(&cfg.every, "every", 5*time.Minute, "poll interval when no delivery comes")
	deployTime := flag.Duration("deploy-time", 3*time.Second, "how long a simulated deploy takes")
	flag.DurationVar(&cfg.grace, "grace", 30*time.Second, "on shutdown, how long to wait for a running deploy")
	flag.Parse()
	if cfg.secret == "" {
		cfg.secret = os.Getenv("WEBHOOK_SECRET")
	}
	if flag.NArg() > 0 || cfg.secret == "" || cfg.remote == "" || cfg.repo == "" || *deployTime < 0 || cfg.grace < 0 {
		fmt.Fprintln(os.Stderr, "webhook: -remote, -repo and a secret (-secret or $WEBHOOK_SECRET) are required")
		flag.Usage()
		os.Exit(2)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	if err := run(ctx, ln, cfg, simulatedDeploy(*deployTime, log), log); err != nil {
		log.Error("webhook", "err", err)
		os.Exit(1)
	}
}

// simulatedDeploy stands in for a real deploy (a deployer.Command running
// docker compose, say): it takes d, or returns early with ctx's error
// when the Manager cancels it.
func simulatedDeploy(d time.Duration, log *slog.Logger) dedup.DeployFunc {
	return func(ctx context.Context, key string, rev dedup.Revision) error {
		log.Info("deploying", "key", key, "revision", rev, "takes", d)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("deploy of %s at %s interrupted: %w", key, rev, ctx.Err())
		}
	}
}

// newMux returns the server's routes: the hook, a read-only status page of
// m (HTML for a browser, JSON for scripts), and the metrics.
func newMux(hook http.Handler, m *dedup.Manager, metrics *promdedup.Metrics) *http.ServeMux {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/github", hook)
	mux.Handle("GET /status/", statuspage.Handler("/status/", m))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// run serves the receiver on ln and polls until ctx is done, then shuts
// down: it stops taking deliveries (waiting up to grace for those in
// flight), stops the poller, and closes the Manager, which lets a running
// deploy finish until grace ends and cancels it then.
func run(ctx context.Context, ln net.Listener, cfg config, d dedup.Deployer, log *slog.Logger) error {
	metrics := promdedup.New()
	m, err := dedup.New(d, dedup.WithLogger(log), dedup.WithObserver(metrics.Observe), dedup.WithSlowDeploy(2, time.Minute))
	if err != nil {
		ln.Close()
		return err
	}
	metrics.SetSource(m)
	p := poller.New(m, poller.WithLogger(log), poller.WithObserver(metrics.ObservePoll))
	hook, err := webhook.New(webhook.GitHub(cfg.secret), webhook.Routes{{Repository: cfg.repo, Ref: cfg.ref}: {cfg.key}}, p,
		webhook.WithLogger(log))
	if err == nil {
		err = p.Watch(cfg.key, poller.Git(cfg.remote, cfg.ref), poller.Every(cfg.every))
	}
	if err != nil {
		ln.Close()
		return errors.Join(err, m.Close(context.Background()))
	}
	srv := &http.Server{
		Handler:           newMux(hook, m, metrics),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	pollCtx, stopPolling := context.WithCancel(context.Background())
	defer stopPolling()
	polled := make(chan error, 1)
	go func() { polled <- p.Run(pollCtx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "hook", "POST /hooks/github", "repo", cfg.repo, "ref", cfg.ref, "key", cfg.key)

	serveOver := false
	select {
	case err = <-served: // Serve failed on its own
		serveOver = true
	case <-ctx.Done():
	}
	log.Info("shutting down: no new deliveries; a running deploy may finish", "grace", cfg.grace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.grace)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if shutErr != nil {
		srv.Close()
		shutErr = fmt.Errorf("shutdown: %w", shutErr)
	}
	if !serveOver {
		<-served // http.ErrServerClosed once Shutdown began
	}
	stopPolling()
	pollErr := <-polled
	closeErr := m.Close(sctx)
	if closeErr != nil {
		closeErr = fmt.Errorf("close manager: running deploys canceled after %v: %w", cfg.grace, closeErr)
	}
	return errors.Join(err, shutErr, pollErr, closeErr)
}
