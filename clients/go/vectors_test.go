package armorpsk

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type signingVector struct {
	Name          string `json:"name"`
	KeyID         string `json:"keyId"`
	SecretKey     string `json:"secretKey"`
	Method        string `json:"method"`
	RequestPath   string `json:"requestPath"`
	Nonce         string `json:"nonce"`
	Timestamp     int64  `json:"timestamp"`
	Body          string `json:"body"`
	Authorization string `json:"authorization"`
}

func loadVectors(t *testing.T) []signingVector {
	t.Helper()
	path := os.Getenv("ARMOR_VECTORS")
	if path == "" {
		path = filepath.Join("..", "..", "testdata", "vectors.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Signing []signingVector `json:"signing"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Signing) < 17 {
		t.Fatalf("only %d signing vectors", len(file.Signing))
	}
	return file.Signing
}

func TestSignReproducesEverySigningVector(t *testing.T) {
	for _, v := range loadVectors(t) {
		v := v
		t.Run(v.Name, func(t *testing.T) {
			got := Sign(v.KeyID, v.SecretKey, v.Method, v.RequestPath, []byte(v.Body), v.Nonce, v.Timestamp)
			if got != v.Authorization {
				t.Fatalf("got  %s\nwant %s", got, v.Authorization)
			}
		})
	}
}

func TestTransportSignsTheVendorFormWithoutTheQuery(t *testing.T) {
	for _, v := range loadVectors(t) {
		if v.Name != "get-query-vendor-form" {
			continue
		}
		got := Sign(v.KeyID, v.SecretKey, v.Method, strings.SplitN(v.RequestPath+"?$top=1", "?", 2)[0], nil, v.Nonce, v.Timestamp)
		if got != v.Authorization {
			t.Fatalf("got %s", got)
		}
		return
	}
	t.Fatal("no get-query-vendor-form vector")
}
