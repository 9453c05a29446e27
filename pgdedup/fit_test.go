package pgdedup_test

import (
	"github.com/dedupdeploy/dedupdeploy/pgdedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/statuspage"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

// A Manager across replicas goes where the in-memory one goes.
var (
	_ poller.Trigger    = (*pgdedup.Manager)(nil)
	_ webhook.Notifier  = (*pgdedup.Manager)(nil)
	_ webhook.Submitter = (*pgdedup.Manager)(nil)
	_ statuspage.Source = pgdedup.View{}
)
