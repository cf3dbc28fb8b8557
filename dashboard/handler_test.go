package dashboard_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := dashboard.New(nil, dashboard.Config{})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "dashboard_validate"})
	require.NoError(t, err)
	ledger, err := signals.NewLedger(reg, testenv.Pool(t), nil)
	require.NoError(t, err)
	for _, cfg := range []dashboard.Config{
		{PageSize: 501},
		{PageSize: -1},
		{TraceURL: "https://traces.example/"},
		{TraceURL: "javascript:alert(1)//{trace_id}"},
	} {
		_, err := dashboard.New(ledger, cfg)
		require.ErrorIs(t, err, signals.ErrInvalidConfig, "%+v", cfg)
	}
	_, err = dashboard.New(ledger, dashboard.Config{PageSize: 500, TraceURL: "http://jaeger:16686/trace/{trace_id}"})
	require.NoError(t, err)
}

func TestServesSafely(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{})
	resp, err := b.client.Get(b.url(""))
	require.NoError(t, err)
	_ = body(t, resp)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	var csrfCookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "signals_dashboard_csrf" {
			csrfCookie = c
		}
	}
	require.NotNil(t, csrfCookie)
	require.True(t, csrfCookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, csrfCookie.SameSite)

	for path, want := range map[string]int{
		"static/style.css":     http.StatusOK,
		"static/dashboard.js":  http.StatusOK,
		"nowhere":              http.StatusNotFound,
		"dead?older_than=soon": http.StatusBadRequest,
		"dead?reason=tired":    http.StatusBadRequest,
		"dead?after=garbage":   http.StatusBadRequest,
	} {
		status, page := b.get(t, path)
		require.Equal(t, want, status, "%s: %s", path, page)
	}
	resp, err = b.client.Get(b.url("act"))
	require.NoError(t, err)
	_ = body(t, resp)
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "actions take a POST only")
}
