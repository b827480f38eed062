// Package armorpsk signs HTTP requests with ARMOR-PSK:
//
//	Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{timestamp}
//
// where the HMAC, keyed with the UTF-8 bytes of the Secret Key, covers
// keyId + method + requestPath + nonce + timestamp + body. It uses the
// standard library only.
package armorpsk

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the workspace's version.
const Version = "0.1.0"

// Scheme is the Authorization header's scheme word.
const Scheme = "ARMOR-PSK"

// MaxFieldLen bounds key ids and nonces (in characters, all ASCII).
const MaxFieldLen = 128

// Error says why a request cannot be signed. It never holds the secret.
type Error struct{ msg string }

func (e *Error) Error() string { return "armorpsk: " + e.msg }

func errorf(format string, args ...any) error { return &Error{fmt.Sprintf(format, args...)} }

// CheckField checks a key id or nonce: 1 to 128 visible ASCII characters
// (0x21-0x7E), no ':'.
func CheckField(what, value string) error {
	if value == "" {
		return errorf("%s is empty", what)
	}
	for _, r := range value {
		if r < 0x21 || r > 0x7e {
			return errorf("%s may hold only visible ASCII characters (0x21-0x7E), found %q", what, r)
		}
	}
	if len(value) > MaxFieldLen {
		return errorf("%s is %d characters long; at most %d are allowed", what, len(value), MaxFieldLen)
	}
	if strings.Contains(value, ":") {
		return errorf("%s may not contain ':' (it separates the header's fields)", what)
	}
	return nil
}

func checkMethod(method string) error {
	if method == "" {
		return errorf("the method is empty")
	}
	for _, r := range method {
		ok := r < 0x80 && (r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			strings.ContainsRune("!#$%&'*+-.^_`|~", r))
		if !ok {
			return errorf("method %q is not an HTTP method token", method)
		}
	}
	return nil
}

func checkPath(path string) error {
	if !strings.HasPrefix(path, "/") {
		return errorf("path must start with '/', as on the request line")
	}
	for _, r := range path {
		if r < 0x21 || r > 0x7e {
			return errorf("path holds %q: give it percent-encoded, exactly as it is sent", r)
		}
	}
	return nil
}

// NewNonce returns 128 random bits as 32 lowercase hex digits.
func NewNonce() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", errorf("no randomness for a nonce: %v", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// SignChecked is Sign returning an error instead of panicking: an invalid
// key id, nonce, method or path, an empty secret or a negative timestamp.
func SignChecked(keyID, secret, method, path string, body []byte, nonce string, timestamp int64) (string, error) {
	if err := CheckField("key id", keyID); err != nil {
		return "", err
	}
	if secret == "" {
		return "", errorf("the secret key is empty")
	}
	if err := checkMethod(method); err != nil {
		return "", err
	}
	if err := checkPath(path); err != nil {
		return "", err
	}
	if nonce == "" {
		var err error
		if nonce, err = NewNonce(); err != nil {
			return "", err
		}
	} else if err := CheckField("nonce", nonce); err != nil {
		return "", err
	}
	if timestamp == 0 {
		timestamp = time.Now().Unix()
	}
	if timestamp < 0 {
		return "", errorf("timestamp must not be negative")
	}
	ts := strconv.FormatInt(timestamp, 10)
	mac := hmac.New(sha512.New, []byte(secret))
	for _, part := range []string{keyID, method, path, nonce, ts} {
		mac.Write([]byte(part))
	}
	mac.Write(body)
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return Scheme + " " + keyID + ":" + sig + ":" + nonce + ":" + ts, nil
}

// Sign returns the whole Authorization value for one request. path is
// signed exactly as given: the path alone (as sent, percent-encoded) for
// the vendor form, or path?query for the signed-query variant. body is the
// exact bytes sent. An empty nonce means a random one, a zero timestamp
// means now. Sign panics on inputs that cannot make a valid header (see
// SignChecked for an error instead); Transport checks them and returns an
// error.
func Sign(keyID, secret, method, path string, body []byte, nonce string, timestamp int64) string {
	auth, err := SignChecked(keyID, secret, method, path, body, nonce, timestamp)
	if err != nil {
		panic(err)
	}
	return auth
}
