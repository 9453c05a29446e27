#!/usr/bin/env bash
# Runs every test of the module the way CI does: vet, then the tests under
# the race detector. It installs what the tests need (git for the poller's
# git source, gcc for -race) when a fresh machine lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git >/dev/null || need+=(git)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
# statuspage: its page is checked in a real headless browser.
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
if ((${#need[@]})); then
	echo "installing: ${need[*]}" >&2
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 "$@" ./...
# The comparison benchmarks live in a module of their own (it pulls
# client-go): check that they build and run once.
(cd internal/bench && go vet ./... && go test -run '^$' -bench . -benchtime=1x ./...)
# promdedup, and examples/webhook which serves its /metrics, are modules of
# their own (they pull client_golang).
for mod in promdedup examples/webhook; do
	(cd "$mod" && go vet ./... && go test -race -count=1 "$@" ./...)
done
# pgdedup: a module of its own (pgx). Its tests need PostgreSQL: the server
# DEDUP_PG_URL names, or the server binaries, with which they run a
# throwaway cluster in a temp dir (as the user postgres when run as root).
# The binaries are looked for where pgtest looks: /usr/lib/postgresql/*/bin,
# then PATH.
if [ -z "${DEDUP_PG_URL:-}" ] && ! command -v initdb >/dev/null &&
	! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	echo "installing: postgresql" >&2
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq postgresql >/dev/null
fi
(cd pgdedup && go vet ./... && go test -race -count=1 "$@" ./...)
