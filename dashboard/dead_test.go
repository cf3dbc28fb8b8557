package dashboard_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{PageSize: 2})
	b.deadLetters(t, 3, "")
	b.failure.Store(`<img src=x onerror=alert(1)> gateway said <b>no</b>`)
	b.deadLetters(t, 2, "")

	t.Run("lists and escapes", func(t *testing.T) {
		status, page := b.get(t, "dead?error=gateway")
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, "2 match the filter")
		require.Equal(t, 2, rowsOf(page, "dead-letters"), page)
		require.NotContains(t, page, "<img src=x", "an error text is escaped")
		require.NotContains(t, page, "<b>no</b>")
		require.Contains(t, page, "&lt;img src=x onerror=alert(1)&gt; gateway said &lt;b&gt;no&lt;/b&gt;")
	})

	t.Run("pages with a cursor", func(t *testing.T) {
		next := regexp.MustCompile(`id="next-page" href="([^"]+)"|href="([^"]+)" id="next-page"`)
		seen := map[string]bool{}
		path := "dead?reason=permanent"
		for pages := 0; ; pages++ {
			require.Less(t, pages, 5, "paging must end")
			status, page := b.get(t, path)
			require.Equal(t, http.StatusOK, status, page)
			require.Contains(t, page, "5 match the filter")
			for _, m := range regexp.MustCompile(`name="id" value="([0-9A-Z]{26})"`).FindAllStringSubmatch(page, -1) {
				require.False(t, seen[m[1]], "a letter shows on one page only")
				seen[m[1]] = true
			}
			m := next.FindStringSubmatch(page)
			if m == nil {
				break
			}
			path = strings.ReplaceAll(m[1]+m[2], "&amp;", "&")
			require.Contains(t, path, "reason=permanent", "the next page keeps the filter")
		}
		require.Len(t, seen, 5)
	})

	t.Run("refuses a post without the form's token", func(t *testing.T) {
		resp, page := b.post(t, "confirm", url.Values{"action": {"requeue"}, "scope": {"all"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, page)
		resp, page = b.post(t, "act", url.Values{"action": {"discard"}, "scope": {"all"}, "as_of": {"9999999999999999"}, "csrf": {strings.Repeat("0", 64)}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, page)
		require.Equal(t, 5, b.countDead(t))

		req, err := http.NewRequest(http.MethodPost, b.url("act"), strings.NewReader(url.Values{"action": {"discard"}, "scope": {"all"}, "csrf": {b.csrf(t)}}.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		resp, err = b.client.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "a post from another origin is refused, token or not")
		resp.Body.Close()
	})

	t.Run("discards the selected", func(t *testing.T) {
		letters, err := b.ledger.DeadLetters(t.Context(), signals.DeadFilter{ErrorContains: "gateway"})
		require.NoError(t, err)
		form := url.Values{"action": {"discard"}, "csrf": {b.csrf(t)}, "id": {letters[0].TaskID.String()}}
		resp, page := b.post(t, "confirm", form)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, "Discard 1 dead letter?")
		resp, page = b.post(t, "act", form)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, page)
		require.Equal(t, "dead?done=discard&n=1", resp.Header.Get("Location"))
		require.Equal(t, 4, b.countDead(t))
	})

	t.Run("requeues all that match", func(t *testing.T) {
		b.failing.Store(false)
		form := url.Values{"action": {"requeue"}, "scope": {"all"}, "csrf": {b.csrf(t)}, "reason": {"permanent"}, "error": {"declined"}}
		resp, page := b.post(t, "confirm", form)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, "Requeue 3 dead letters?")
		asOf := regexp.MustCompile(`name="as_of" value="(\d+)"`).FindStringSubmatch(page)
		require.NotNil(t, asOf, page)
		form.Set("as_of", asOf[1])
		resp, page = b.post(t, "act", form)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, page)
		require.Equal(t, "dead?done=requeue&error=declined&n=3&reason=permanent", resp.Header.Get("Location"))
		_, page = b.get(t, resp.Header.Get("Location"))
		require.Contains(t, page, "Requeued 3 dead letters")
		require.Equal(t, 1, b.countDead(t), "the gateway letter is left")
		testenv.Eventually(t, eventually, func() bool {
			st, err := b.ledger.Stats(t.Context())
			require.NoError(t, err)
			return st.Receivers[0].Pending+st.Receivers[0].InFlight == 0
		}, "the requeued letters are delivered")
	})
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{ReadOnly: true})
	b.deadLetters(t, 1, "")
	status, page := b.get(t, "dead")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, page, "read-only")
	require.NotContains(t, page, `name="id" value=`, "no letter to select")
	require.NotContains(t, page, "Requeue…")
	token := csrfInput.FindStringSubmatch(page)
	require.NotNil(t, token)
	for _, path := range []string{"confirm", "act"} {
		resp, page := b.post(t, path, url.Values{"action": {"requeue"}, "scope": {"all"}, "as_of": {"1"}, "csrf": {token[1]}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, page)
		require.Contains(t, page, "read-only")
	}
	require.Equal(t, 1, b.countDead(t))
}
