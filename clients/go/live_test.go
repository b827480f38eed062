package armorpsk

// Against a real `armor serve` (started by clients/live-env.sh).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type liveServer struct{ url, keyID, secret string }

func live(t *testing.T) liveServer {
	t.Helper()
	s := liveServer{os.Getenv("ARMOR_TEST_URL"), os.Getenv("ARMOR_TEST_KEY_ID"), os.Getenv("ARMOR_TEST_SECRET_KEY")}
	if s.url == "" || s.keyID == "" || s.secret == "" {
		if os.Getenv("ARMOR_TEST_REQUIRE_LIVE") != "" {
			t.Fatal("ARMOR_TEST_REQUIRE_LIVE is set but ARMOR_TEST_URL/KEY_ID/SECRET_KEY are not")
		}
		t.Skip("no live server: run the tests through clients/live-env.sh")
	}
	s.url = strings.TrimRight(s.url, "/")
	return s
}

// recorder passes requests on and keeps the Authorization values sent.
type recorder struct {
	mu   sync.Mutex
	sent []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.sent = append(r.sent, req.Header.Get("Authorization"))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (s liveServer) client(secret string, signQuery bool) (*http.Client, *recorder) {
	rec := &recorder{}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &Transport{KeyID: s.keyID, Secret: secret, Base: rec, SignQuery: signQuery},
	}, rec
}

func decode(t *testing.T, resp *http.Response, err error, wantStatus int) map[string]any {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("status %d, body not a JSON object: %v", resp.StatusCode, err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("status %d, want %d: %v", resp.StatusCode, wantStatus, body)
	}
	return body
}

func TestLiveGetMeWithAKey(t *testing.T) {
	s := live(t)
	c, _ := s.client(s.secret, false)
	resp, err := c.Get(s.url + "/me")
	me := decode(t, resp, err, 200)
	if accounts, _ := me["accounts"].([]any); len(accounts) == 0 {
		t.Fatalf("no accounts: %v", me)
	}
}

func TestLivePostWithAUTF8JSONBody(t *testing.T) {
	s := live(t)
	c, _ := s.client(s.secret, false)
	body := `{"note":"Zoë Ångström – 東京","n":1}`
	resp, err := c.Post(s.url+"/auth/whoami", "application/json", strings.NewReader(body))
	who := decode(t, resp, err, 200)
	sum := sha256.Sum256([]byte(body))
	if who["credential"] != "ARMOR-PSK" || who["keyId"] != s.keyID ||
		who["bodyLength"] != float64(len(body)) || who["bodySha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("whoami: %v", who)
	}
}

func TestLivePathWithAQuery(t *testing.T) {
	s := live(t)
	for _, signQuery := range []bool{false, true} {
		c, _ := s.client(s.secret, signQuery)
		resp, err := c.Get(s.url + "/auth/whoami?$top=10&q=%C3%A9+x")
		decode(t, resp, err, 200)
	}
}

func TestLiveReplayedHeaderIsRefusedAsNonceReused(t *testing.T) {
	s := live(t)
	c, rec := s.client(s.secret, false)
	resp, err := c.Get(s.url + "/me")
	decode(t, resp, err, 200)
	req, _ := http.NewRequest("GET", s.url+"/me", nil)
	req.Header.Set("Authorization", rec.sent[0])
	resp, err = http.DefaultClient.Do(req)
	if body := decode(t, resp, err, 401); body["error"] != "nonce_reused" {
		t.Fatalf("replay: %v", body)
	}
}

func TestLiveWrongSecretIsRefusedAsInvalidSignature(t *testing.T) {
	s := live(t)
	c, _ := s.client(s.secret+"x", false)
	resp, err := c.Get(s.url + "/me")
	if body := decode(t, resp, err, 401); body["error"] != "invalid_signature" {
		t.Fatalf("wrong secret: %v", body)
	}
}

func TestLiveSignWithTheDefaultClientAndConcurrentTransportCalls(t *testing.T) {
	s := live(t)
	req, _ := http.NewRequest("GET", s.url+"/me", nil)
	req.Header.Set("Authorization", Sign(s.keyID, s.secret, "GET", "/me", nil, "", 0))
	resp, err := http.DefaultClient.Do(req)
	decode(t, resp, err, 200)

	c, _ := s.client(s.secret, false)
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if resp, err := c.Get(s.url + "/me"); err == nil {
				statuses[i] = resp.StatusCode
				resp.Body.Close()
			}
		}(i)
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 200 {
			t.Fatalf("request %d: status %d", i, st)
		}
	}
}
