package pgdedup

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed queries.sql
var queriesSQL string

// queries holds every statement of queries.sql by name, with the schema
// filled in.
type queries struct {
	migrate, migrateLock, keyEnsure, keyLock, keyTryLock, keySave string
	resultPut, resultsGet, resultsPrune, keysClaimable, nextWake  string
	leaseRenew, notify, keyStatus, keyStatuses                    string
}

// parseQueries splits queries.sql at its "-- name: X" lines, drops the
// lines that are only comments, and replaces {{Y}} in a query's text by
// the text of the query Y named above it, without its semicolon: a query
// that differs from another by a clause is written as that clause.
func parseQueries(schema string) (queries, error) {
	byName := map[string]string{}
	var name string
	var b strings.Builder
	var refs []string // "{{Y}}", text of Y, for every Y so far
	flush := func() {
		if name != "" {
			text := strings.NewReplacer(refs...).Replace(strings.TrimSpace(b.String()))
			byName[name] = text
			refs = append(refs, "{{"+name+"}}", strings.TrimSuffix(text, ";"))
		}
		b.Reset()
	}
	for _, line := range strings.Split(queriesSQL, "\n") {
		if n, ok := strings.CutPrefix(line, "-- name: "); ok {
			flush()
			name = strings.TrimSpace(n)
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	flush()
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{schema}.Sanitize())
	var q queries
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"Migrate", &q.migrate}, {"MigrateLock", &q.migrateLock}, {"KeyEnsure", &q.keyEnsure},
		{"KeyLock", &q.keyLock}, {"KeyTryLock", &q.keyTryLock}, {"KeySave", &q.keySave},
		{"ResultPut", &q.resultPut}, {"ResultsGet", &q.resultsGet}, {"ResultsPrune", &q.resultsPrune},
		{"KeysClaimable", &q.keysClaimable}, {"NextWake", &q.nextWake}, {"LeaseRenew", &q.leaseRenew},
		{"Notify", &q.notify}, {"KeyStatus", &q.keyStatus}, {"KeyStatuses", &q.keyStatuses},
	} {
		s, ok := byName[f.name]
		if !ok {
			return q, fmt.Errorf("pgdedup: queries.sql has no query %s", f.name)
		}
		*f.dst = r.Replace(s)
	}
	return q, nil
}
