// Package dashboard serves a ledger's pages to a browser: an overview of
// what the outbox holds per receiver and queue, the dead letters to filter,
// page through, requeue or discard (some, or all that match), and an event
// with every receiver's delivery, its payload, its headers and its cascade.
//
// [New] returns an http.Handler to mount on an application's own mux,
// behind its own authentication:
//
//	ledger, _ := signals.NewLedger(signals.DefaultRegistry, pool, redisOpt)
//	h, err := dashboard.New(ledger, dashboard.Config{})
//	mux.Handle("/signals/", http.StripPrefix("/signals", requireAdmin(h)))
//
// The signals command serves the same pages: signals web.
//
// The pages are rendered on the server from embedded templates, with an
// embedded style sheet and a few lines of script (selecting a page's
// rows): they need no build step and no network but the handler's.
//
// Safety: the handler changes the ledger only on a POST that carries the
// token of a form it rendered (a cookie the browser holds and a form field
// derived from it) and that no other site sent; [Config].ReadOnly removes
// the actions altogether. Every text from the ledger, payloads and error
// messages included, is escaped, and a Content-Security-Policy forbids
// inline scripts. Every query is bounded: a page lists at most 500 dead
// letters, and requeueing all that match works through them 500 at a time.
// The overview's snapshot of the ledger ([signals.Ledger.Stats], a pass over
// the whole outbox) is computed once for every browser showing it, at most
// every [Config].StatsMaxAge. The handler has no authentication of its own.
package dashboard
