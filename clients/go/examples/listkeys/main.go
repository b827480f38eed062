// Command listkeys prints who the key belongs to, its accounts and, with a
// password login, the user's API keys.
//
//	ARMOR_KEY_ID=... ARMOR_SECRET_KEY=apsk_... go run ./examples/listkeys https://armor.example.com
//
// Listing keys (GET /users/{id}/keys) is a password caller's route: an API
// key gets 403 api_key_not_allowed there, by design. So that part signs in
// with FH-AUTH when ARMOR_EMAIL and ARMOR_PASSWORD are set.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"armorpsk"
)

func get(c *http.Client, url, auth string, into any) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		log.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	send(c, req, into)
}

func post(url string, body any, into any) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", url, bytes.NewReader(data))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	send(http.DefaultClient, req, into)
}

func send(c *http.Client, req *http.Request, into any) {
	resp, err := c.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		log.Fatal(err)
	}
}

func main() {
	base := "http://127.0.0.1:8080"
	if len(os.Args) > 1 {
		base = strings.TrimRight(os.Args[1], "/")
	}
	keyID, secret, err := armorpsk.LoadCredentials("") // env, else ~/.config/armor/credentials
	if err != nil {
		log.Fatal(err)
	}
	api := &http.Client{Timeout: 10 * time.Second, Transport: &armorpsk.Transport{KeyID: keyID, Secret: secret}}

	var me struct {
		User struct {
			Username string
			Links    struct{ UserID int64 }
		}
	}
	get(api, base+"/me", "", &me)
	fmt.Printf("signed in as %s (user %d)\n", me.User.Username, me.User.Links.UserID)
	var accounts []struct {
		ID           int64
		Name, Status string
	}
	get(api, base+"/accounts", "", &accounts)
	for _, a := range accounts {
		fmt.Printf("  account %d: %s (%s)\n", a.ID, a.Name, a.Status)
	}

	email, password := os.Getenv("ARMOR_EMAIL"), os.Getenv("ARMOR_PASSWORD")
	if email == "" || password == "" {
		return
	}
	var code struct{ Code string }
	post(base+"/auth/authorize", map[string]string{"username": email, "password": password}, &code)
	var token struct {
		AccessToken string `json:"access_token"`
	}
	post(base+"/auth/token", map[string]string{"code": code.Code, "grant_type": "authorization_code"}, &token)
	var keys []struct {
		ID, Name, KeyStatus string
		LastUsed            *string
	}
	get(http.DefaultClient, fmt.Sprintf("%s/users/%d/keys", base, me.User.Links.UserID), "FH-AUTH "+token.AccessToken, &keys)
	for _, k := range keys {
		last := "never"
		if k.LastUsed != nil {
			last = *k.LastUsed
		}
		fmt.Printf("  key %s %q %s, last used %s\n", k.ID, k.Name, k.KeyStatus, last)
	}
}
