// Command webhook is an HTTP server that deploys on request through a
// dedup.Manager: however often and however fast requests come, each key has
// at most one deploy running and one newest revision waiting, and every
// request learns what its trigger did.
//
//	POST /deploy/{key}   body {"revision":"..."} (or ?rev=... or a rev form field)
//	                     202: what the trigger did and the key's state after it
//	                     ?wait=1: wait for the deploy that covers the request and answer
//	                     its result: 200, or 502 if it failed, 503 if shutdown aborted it
//	GET  /status         every key's state
//
// A bad key or revision is answered 400 with the reason, a trigger that
// the closed Manager refuses 503. SIGINT or SIGTERM stops taking requests, lets running
// deploys finish (up to -grace) and exits. The deploy itself is simulated:
// it takes -deploy-time and stops early if its context is canceled.
//
// Run it from the module root and poke it with curl:
//
//	go run ./examples/webhook -deploy-time 10s
//
//	curl -i -X POST localhost:8080/deploy/web -d '{"revision":"4f2a9c1"}'
//	curl -X POST 'localhost:8080/deploy/web?rev=77e0b3d'
//	curl -X POST 'localhost:8080/deploy/web?rev=9d41c06'   # supersedes 77e0b3d
//	curl -X POST 'localhost:8080/deploy/web?rev=9d41c06&wait=1'
//	curl localhost:8080/status
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
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	deployTime := flag.Duration("deploy-time", 3*time.Second, "how long a simulated deploy takes")
	grace := flag.Duration("grace", 30*time.Second, "on shutdown, how long to wait for requests, then for running deploys")
	flag.Parse()
	if flag.NArg() > 0 || *deployTime < 0 || *grace < 0 {
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
	if err := run(ctx, ln, simulatedDeploy(*deployTime, log), *grace, log); err != nil {
		log.Error("shutdown", "err", err)
		os.Exit(1)
	}
}

// simulatedDeploy stands in for a real deploy: it takes d, or returns
// early with ctx's error when the Manager cancels it.
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

// run serves the webhook on ln until ctx is done, then shuts down: it stops
// taking requests and waits up to grace for those in flight, then closes
// the Manager, which waits up to grace for running deploys and cancels
// them after that. It returns the first error of either step.
func run(ctx context.Context, ln net.Listener, d dedup.Deployer, grace time.Duration, log *slog.Logger) error {
	m, err := dedup.New(d, dedup.WithLogger(log))
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           newHandler(m),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())

	serveOver := false
	select {
	case err = <-served: // Serve failed on its own
		serveOver = true
	case <-ctx.Done():
	}
	// One grace period for both: the server takes no new request while the
	// manager aborts what waits and lets running deploys finish. Close
	// settles the tickets of requests still waiting, so their answers are
	// written before Shutdown's wait for them ends.
	log.Info("shutting down: no new requests; running deploys may finish", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	closeErr := m.Close(sctx)
	if closeErr != nil {
		closeErr = fmt.Errorf("close manager: running deploys canceled after %v: %w", grace, closeErr)
	}
	if shutErr := <-shut; shutErr != nil {
		srv.Close()
		closeErr = errors.Join(closeErr, fmt.Errorf("shutdown: %w", shutErr))
	}
	if !serveOver {
		<-served // http.ErrServerClosed once Shutdown began
	}
	return errors.Join(err, closeErr)
}
