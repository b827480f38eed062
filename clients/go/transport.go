package armorpsk

import (
	"bytes"
	"io"
	"net/http"
	"strings"
)

// Transport is an http.RoundTripper that signs every request with
// ARMOR-PSK and passes it to Base (http.DefaultTransport when nil).
//
// It reads the body in full (restoring it for sending and for redirects),
// signs the method, the request target as sent (without the query unless
// SignQuery is set) and the body bytes, with a fresh random nonce and the
// current time, and sets the Authorization header on a copy of the request.
type Transport struct {
	KeyID, Secret string
	Base          http.RoundTripper
	SignQuery     bool
}

// String never shows the secret.
func (t *Transport) String() string {
	return "armorpsk.Transport{KeyID: " + t.KeyID + ", Secret: <redacted>}"
}

// GoString never shows the secret (%#v).
func (t *Transport) GoString() string { return t.String() }

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if t.KeyID == "" || t.Secret == "" {
		closeBody()
		return nil, errorf("no credentials: set Transport.KeyID and Transport.Secret (e.g. from LoadCredentials)")
	}
	if err := CheckField("key id", t.KeyID); err != nil {
		closeBody()
		return nil, err
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, errorf("reading the request body to sign it: %v", err)
		}
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	target := req.URL.RequestURI()
	if !t.SignQuery {
		if i := strings.IndexByte(target, '?'); i >= 0 {
			target = target[:i]
		}
	}
	auth, err := SignChecked(t.KeyID, t.Secret, method, target, body, "", 0)
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.Header.Set("Authorization", auth)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.TransferEncoding = nil
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(out)
}
