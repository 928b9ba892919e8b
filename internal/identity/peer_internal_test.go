package identity

import (
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

func TestCachedPeerExpires(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("prod", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue("orders", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	v, err := NewVerifier(ca.Cert(), time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.verifyPeerAt(block.Bytes, now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		at      time.Time
		wantErr error
	}{
		// NotAfter has whole seconds: count from it, not from now.
		{"within the skew after expiry", p.notAfter.Add(500 * time.Millisecond), nil},
		{"after expiry and skew", p.notAfter.Add(2 * time.Second), ErrExpired},
		{"verified again once expired", p.notAfter.Add(3 * time.Second), ErrExpired},
	}
	for _, tt := range tests {
		got, err := v.verifyPeerAt(block.Bytes, tt.at)
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("%s: verifyPeerAt() = %v, want %v", tt.name, err, tt.wantErr)
		}
		if err == nil && got != p {
			t.Fatalf("%s: verifyPeerAt() = %p, want the cached %p", tt.name, got, p)
		}
	}
	if _, err := v.lookup(p.KeyID(), now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("lookup() of an expired peer = %v, want ErrUnknownKey (dropped from the cache)", err)
	}
}

func TestBoundedCacheKeepsUsedEntries(t *testing.T) {
	c := newBoundedCache[int, int](4)
	for i := range 4 {
		c.add(i, i)
	}
	c.get(0) // in use: survives the next evictions
	for i := 4; i < 7; i++ {
		c.add(i, i)
		if _, ok := c.get(0); !ok {
			t.Fatalf("after adding %d, the entry in use was evicted", i)
		}
	}
	if n := c.len(); n != 4 {
		t.Errorf("len() = %d, want 4", n)
	}
	if got := c.add(0, 99); got != 0 {
		t.Errorf("add() of a present key = %d, want the present value 0", got)
	}
}
