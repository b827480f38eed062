package armorpsk

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	testKey    = "20a37099-4a0b-432f-bf46-5fa690a0405c"
	testSecret = "apsk_test-secret"
)

func TestDefaultsAreARandomHexNonceAndTheCurrentTime(t *testing.T) {
	before := time.Now().Unix()
	a := Sign(testKey, testSecret, "GET", "/me", nil, "", 0)
	b := Sign(testKey, testSecret, "GET", "/me", nil, "", 0)
	re := regexp.MustCompile(`^ARMOR-PSK ` + testKey + `:[A-Za-z0-9+/]{86}==:([0-9a-f]{32}):([0-9]+)$`)
	m := re.FindStringSubmatch(a)
	if m == nil {
		t.Fatal(a)
	}
	var ts int64
	fmt.Sscan(m[2], &ts)
	if ts < before || ts > time.Now().Unix() {
		t.Fatalf("timestamp %d", ts)
	}
	if strings.Split(a, ":")[2] == strings.Split(b, ":")[2] {
		t.Fatal("two signatures share a nonce")
	}
}

func TestBadInputsAreRefusedBeforeSigning(t *testing.T) {
	cases := []struct {
		name, keyID, secret, method, path, nonce, why string
		ts                                            int64
	}{
		{"empty key id", "", testSecret, "GET", "/me", "", "key id is empty", 1},
		{"non-ASCII key id", "clé", testSecret, "GET", "/me", "", "visible ASCII", 1},
		{"key id with colon", "a:b", testSecret, "GET", "/me", "", "':'", 1},
		{"key id of 129", strings.Repeat("k", 129), testSecret, "GET", "/me", "", "at most 128", 1},
		{"nonce with colon", testKey, testSecret, "GET", "/me", "a:b", "':'", 1},
		{"nonce of 129", testKey, testSecret, "GET", "/me", strings.Repeat("n", 129), "at most 128", 1},
		{"non-ASCII nonce", testKey, testSecret, "GET", "/me", "nönce", "visible ASCII", 1},
		{"empty secret", testKey, "", "GET", "/me", "", "secret key is empty", 1},
		{"bad method", testKey, testSecret, "GE T", "/me", "", "method", 1},
		{"relative path", testKey, testSecret, "GET", "me", "", "path must", 1},
		{"path with a space", testKey, testSecret, "GET", "/a b", "", "percent-encoded", 1},
		{"negative timestamp", testKey, testSecret, "GET", "/me", "", "negative", -1},
	}
	for _, c := range cases {
		_, err := SignChecked(c.keyID, c.secret, c.method, c.path, nil, c.nonce, c.ts)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.why)
		}
		if err != nil && strings.Contains(err.Error(), testSecret) {
			t.Errorf("%s: the error shows the secret", c.name)
		}
	}
	if _, err := SignChecked(testKey, testSecret, "GET", "/me", nil, strings.Repeat("n", 128), 1); err != nil {
		t.Fatalf("a nonce of 128 characters: %v", err)
	}
}

func TestSignPanicsOnInputThatCannotBeSigned(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "':'") {
			t.Fatalf("recovered %v", r)
		}
	}()
	Sign(testKey, testSecret, "GET", "/me", nil, "a:b", 1)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTransportSignsTheTargetAsSentAndRestoresTheBody(t *testing.T) {
	for _, signQuery := range []bool{false, true} {
		var seen *http.Request
		var sentBody []byte
		tr := &Transport{KeyID: testKey, Secret: testSecret, SignQuery: signQuery,
			Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				seen = r
				sentBody, _ = io.ReadAll(r.Body)
				return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
			})}
		body := `{"name":"Zoë – 東京"}`
		req, _ := http.NewRequest("POST", "http://127.0.0.1:1/a b/é?q=%C3%A9+x&$top=1", io.NopCloser(strings.NewReader(body)))
		if _, err := (&http.Client{Transport: tr}).Do(req); err != nil {
			t.Fatal(err)
		}
		if string(sentBody) != body || seen.ContentLength != int64(len(body)) {
			t.Fatalf("sent %q (length %d)", sentBody, seen.ContentLength)
		}
		parts := strings.Split(seen.Header.Get("Authorization"), ":")
		var ts int64
		fmt.Sscan(parts[3], &ts)
		path := "/a%20b/%C3%A9"
		if signQuery {
			path += "?q=%C3%A9+x&$top=1"
		}
		want := Sign(testKey, testSecret, "POST", path, []byte(body), parts[2], ts)
		if got := seen.Header.Get("Authorization"); got != want {
			t.Fatalf("signQuery=%v: got %s, want %s", signQuery, got, want)
		}
		if req.Header.Get("Authorization") != "" {
			t.Fatal("the caller's request was changed")
		}
	}
}

func TestTransportRefusesMissingCredentialsAndBadKeyIDs(t *testing.T) {
	called := false
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) { called = true; return nil, nil })
	for _, c := range []struct {
		tr  *Transport
		why string
	}{
		{&Transport{Secret: testSecret, Base: base}, "no credentials"},
		{&Transport{KeyID: testKey, Base: base}, "no credentials"},
		{&Transport{KeyID: "clé", Secret: testSecret, Base: base}, "visible ASCII"},
	} {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:1/me", bytes.NewReader([]byte("x")))
		_, err := c.tr.RoundTrip(req)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("got %v, want %q", err, c.why)
		}
	}
	if called {
		t.Fatal("a request was sent")
	}
}

func TestTransportFormatsWithoutTheSecret(t *testing.T) {
	tr := &Transport{KeyID: testKey, Secret: testSecret}
	for _, s := range []string{fmt.Sprint(tr), fmt.Sprintf("%v %+v %#v %s", tr, tr, tr, tr)} {
		if strings.Contains(s, testSecret) {
			t.Fatalf("formatted: %s", s)
		}
	}
}

func writeCredentials(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARMOR_CREDENTIALS_FILE", path)
	t.Setenv("ARMOR_KEY_ID", "")
	t.Setenv("ARMOR_SECRET_KEY", "")
	t.Setenv("ARMOR_PROFILE", "")
	return path
}

const credentialsFile = "# mine\n[default]\nkey_id = k1\nsecret_key = s=#;1\n\n; other\n[prod]\nKEY_ID=k2\nsecret_key = apsk_prod\n"

func TestLoadCredentialsEnvironmentThenProfile(t *testing.T) {
	writeCredentials(t, credentialsFile, 0o600)
	check := func(profile, wantID, wantSecret string) {
		t.Helper()
		id, secret, err := LoadCredentials(profile)
		if err != nil || id != wantID || secret != wantSecret {
			t.Fatalf("LoadCredentials(%q) = %q, %v", profile, id, err)
		}
	}
	check("", "k1", "s=#;1")
	check("prod", "k2", "apsk_prod")
	t.Setenv("ARMOR_PROFILE", "prod")
	check("", "k2", "apsk_prod")
	t.Setenv("ARMOR_KEY_ID", "env-key")
	check("", "env-key", "apsk_prod")
	t.Setenv("ARMOR_SECRET_KEY", "env-secret")
	check("", "env-key", "env-secret")
}

func TestLoadCredentialsSaysWhatIsMissingAndWhere(t *testing.T) {
	path := writeCredentials(t, "[a]\nkey_id = k\n", 0o600)
	for _, c := range []struct{ profile, why string }{
		{"nope", "no credentials: .*no profile \\[nope\\]"},
		{"a", "no secret key: .*profile \\[a\\] in .* has no secret_key"},
	} {
		_, _, err := LoadCredentials(c.profile)
		if err == nil || !regexp.MustCompile(c.why).MatchString(err.Error()) {
			t.Errorf("%s: %v", c.profile, err)
		}
	}
	os.Remove(path)
	if _, _, err := LoadCredentials(""); err == nil || !strings.Contains(err.Error(), "no credentials file at") {
		t.Fatal(err)
	}
}

func TestMalformedCredentialsNameTheLineNotItsContent(t *testing.T) {
	for text, line := range map[string]string{
		"secret_key = hunter2\n": "line 1",
		"[a]\nhunter2\n":         "line 2",
		"[a]\n[a]\n":             "line 2",
		"[a]\nk=1\nK=hunter2\n":  "line 3",
		"[a\n":                   "line 1",
		"[a]\n = hunter2\n":      "line 2",
	} {
		writeCredentials(t, text, 0o600)
		_, _, err := LoadCredentials("a")
		if err == nil || !strings.Contains(err.Error(), line) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: %v", text, err)
		}
	}
}

func TestVersionIsTheWorkspaces(t *testing.T) {
	cargo, err := os.ReadFile(filepath.Join("..", "..", "Cargo.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cargo), "\nversion = \""+Version+"\"\n") {
		t.Fatalf("Cargo.toml's version is not %s", Version)
	}
}
