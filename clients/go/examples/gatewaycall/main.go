// Command gatewaycall is a small service that calls another service through
// the armor gateway.
//
// The gateway (`armor serve --upstream http://127.0.0.1:9000`) verifies each
// signed request and forwards it to the upstream with X-Armor-User-Id,
// X-Armor-Account-Id, X-Armor-Key-Id and X-Armor-Permissions added; the
// upstream never sees the key or the signature. This service holds an API
// key of its own and signs every call with it.
//
//	ARMOR_GATEWAY=http://127.0.0.1:8080 ARMOR_KEY_ID=... ARMOR_SECRET_KEY=apsk_... \
//	  go run ./examples/gatewaycall
//	curl -X POST localhost:3000/orders -d '{"sku":"vm-large","qty":2}'
package main

import (
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"armorpsk"
)

func main() {
	gateway := os.Getenv("ARMOR_GATEWAY")
	if gateway == "" {
		gateway = "http://127.0.0.1:8080"
	}
	keyID, secret, err := armorpsk.LoadCredentials("")
	if err != nil {
		log.Fatal(err)
	}
	upstream := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &armorpsk.Transport{KeyID: keyID, Secret: secret},
	}

	http.HandleFunc("/orders", func(w http.ResponseWriter, r *http.Request) {
		// Pass the call on to the upstream's /orders through the gateway;
		// the Transport reads the body and signs it.
		req, err := http.NewRequestWithContext(r.Context(), r.Method, gateway+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := upstream.Do(req)
		if err != nil {
			http.Error(w, `{"error":"gateway_call_failed"}`, http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	addr := "127.0.0.1:" + strings.TrimPrefix(os.Getenv("PORT"), ":")
	if addr == "127.0.0.1:" {
		addr = "127.0.0.1:3000"
	}
	log.Printf("listening on http://%s, calling %s", addr, gateway)
	log.Fatal(http.ListenAndServe(addr, nil))
}
