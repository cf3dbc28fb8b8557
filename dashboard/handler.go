package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/health"
	"github.com/dj-signals/signals/internal/ledgerview"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// handler serves the pages of one ledger.
type handler struct {
	ledger    *signals.Ledger
	view      *ledgerview.View // the reads the pages need beyond the ledger's own
	cfg       *Config
	csrf      *csrf
	snapshots *snapshots
	pages     map[string]*template.Template
	mux       *http.ServeMux
}

// New returns the dashboard of ledger as an http.Handler, to mount on a
// mux of the application's own, behind its authentication, with
// http.StripPrefix when under a path: its links are relative, so it serves
// from any path ending in a slash. It never closes ledger's pool. It
// returns an error wrapping [signals.ErrInvalidConfig] without a ledger or
// with an invalid cfg. The handler is safe for concurrent use.
func New(ledger *signals.Ledger, cfg Config) (http.Handler, error) {
	if ledger == nil {
		return nil, fmt.Errorf("%w: dashboard.New needs a ledger (signals.NewLedger)", signals.ErrInvalidConfig)
	}
	c := cfg.WithDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	token, err := newCSRF()
	if err != nil {
		return nil, err
	}
	h := &handler{
		ledger: ledger, view: ledgerview.New(ledger), cfg: c, csrf: token, snapshots: &snapshots{ledger: ledger, maxAge: c.StatsMaxAge},
		pages: map[string]*template.Template{}, mux: http.NewServeMux(),
	}
	for _, page := range []string{"overview", "dead", "confirm", "event", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse the %s page: %w", page, err)
		}
		h.pages[page] = t
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /{$}", h.overview)
	h.mux.HandleFunc("GET /dead", h.deadLetters)
	h.mux.HandleFunc("POST /confirm", h.confirmDead)
	h.mux.HandleFunc("POST /act", h.actOnDead)
	h.mux.HandleFunc("GET /event", h.event)
	return h, nil
}

// ServeHTTP sets the headers every response carries, then serves r.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// page is what every page's layout reads, beside the page's own data.
type page struct {
	Title    string
	Nav      string // which page: overview, dead, event
	ReadOnly bool
	Refresh  int    // seconds; 0: none
	CSRF     string // the form token of the request's browser
	Data     any
}

// render writes the page name with data, or an error page if it fails.
func (h *handler) render(w http.ResponseWriter, r *http.Request, name string, status int, p page) {
	p.ReadOnly = h.cfg.ReadOnly
	p.CSRF = h.csrf.token(w, r)
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.cfg.Logger.ErrorContext(r.Context(), "dashboard: render page", "page", name, "error", err)
		http.Error(w, "the page could not be rendered; see the server's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail shows an error page: what went wrong, in the page's words, and the
// error as the ledger returned it.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, what string, err error) {
	if status >= 500 {
		h.cfg.Logger.ErrorContext(r.Context(), "dashboard: "+what, "error", err)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	h.render(w, r, "error", status, page{Title: "Error", Data: struct{ What, Error string }{what, msg}})
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"ago":      ago,
	"age":      health.Age,
	"stamp":    stamp,
	"deadLink": deadLink,
	"count":    health.Count,
	"slug":     slug,
}

// slug makes a CSS class name of a state: "in flight" is "in-flight".
func slug(s ledgerview.DeliveryState) string { return strings.ReplaceAll(string(s), " ", "-") }

// deadLink is the dead letters page of one receiver.
func deadLink(signal, receiver string) string {
	return deadQuery{Signal: signal, Receiver: receiver}.Link()
}

// ago prints how long ago t was, for a human; "-" for a zero t.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return health.Age(time.Since(t)) + " ago"
}

// stamp prints t in UTC to the millisecond; "-" for a zero t.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}
