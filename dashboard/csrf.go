package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
)

// csrfCookie names the cookie that holds a browser's random ID; a form's
// token is the ID's HMAC under the handler's key, so a page of another
// site can neither read the token nor make one.
const csrfCookie = "signals_dashboard_csrf"

// csrfField names the forms' hidden token field.
const csrfField = "csrf"

// csrf makes and checks the tokens of one handler, whose key lives as long
// as it does: a form rendered before a restart must be loaded again.
type csrf struct{ key []byte }

func newCSRF() (*csrf, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &csrf{key: key}, nil
}

// token returns the form token of r's browser, giving the browser an ID
// first if it has none.
func (c *csrf) token(w http.ResponseWriter, r *http.Request) string {
	id := ""
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) == 64 {
		id = ck.Value
	} else {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // never fails: crypto/rand panics rather than return an error
		id = hex.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{
			Name: csrfCookie, Value: id, Path: "/",
			HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
		})
	}
	return c.sign(id)
}

func (c *csrf) sign(id string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// errForged is why a POST is refused: it did not come from a form this
// handler rendered in the same browser, or came from another site.
var errForged = errors.New("the form's token does not match this browser's, or the request came from another site: load the page again and resubmit")

// check reports, for a POST with its form parsed, whether it came from a
// form the handler rendered, sent by a page of the same origin.
func (c *csrf) check(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return errForged
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
			return errForged
		}
	}
	ck, err := r.Cookie(csrfCookie)
	if err != nil || !hmac.Equal([]byte(c.sign(ck.Value)), []byte(r.PostFormValue(csrfField))) {
		return errForged
	}
	return nil
}
