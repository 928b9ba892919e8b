package ambassador

import (
	"net/http"
	"testing"
)

// TestUpgradeOf: h2c is declined wherever it is in the list (the call is
// an ordinary one when it was all that was asked for); any other protocol
// is carried; CONNECT is an upgrade the mesh refuses.
func TestUpgradeOf(t *testing.T) {
	for _, tt := range []struct {
		method, connection, upgrade string
		want                        string
		ok                          bool
	}{
		{"GET", "Upgrade, HTTP2-Settings", "h2c", "", false},
		{"GET", "upgrade", "H2C", "", false},
		{"GET", "Upgrade", "websocket", "websocket", true},
		{"GET", "Upgrade", "websocket, h2c", "websocket", true},
		{"GET", "Upgrade", "h2c, foo/2", "foo/2", true},
		{"GET", "keep-alive", "websocket", "", false}, // no Connection: upgrade
		{"CONNECT", "", "", "", true},
	} {
		r, _ := http.NewRequest(tt.method, "http://x/", nil)
		r.Header.Set("Connection", tt.connection)
		if tt.upgrade != "" {
			r.Header.Set("Upgrade", tt.upgrade)
		}
		up, ok := upgradeOf(r)
		if up != tt.want || ok != tt.ok {
			t.Errorf("%s with Connection %q, Upgrade %q: upgradeOf = %q, %v; want %q, %v",
				tt.method, tt.connection, tt.upgrade, up, ok, tt.want, tt.ok)
		}
	}
}

// TestAcceptsEventStream: what counts as a request for Server-Sent Events.
func TestAcceptsEventStream(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/event-stream":                       true,
		"Text/Event-Stream; charset=utf-8":        true,
		"application/json, text/event-stream;q=1": true,
		"text/event-stream; q=0":                  false,
		"text/event-stream;q=0.000, */*":          false,
		"text/event-stream;q=0.5":                 true,
		"*/*":                                     false,
		"text/event-streams":                      false,
		"text/html, text/plain":                   false,
		"":                                        false,
	} {
		h := http.Header{}
		if accept != "" {
			h.Set("Accept", accept)
		}
		if got := acceptsEventStream(h); got != want {
			t.Errorf("Accept %q: acceptsEventStream = %v, want %v", accept, got, want)
		}
	}
	h := http.Header{"Accept": {"text/html", "text/event-stream"}}
	if !acceptsEventStream(h) {
		t.Error("a second Accept line naming text/event-stream is not seen")
	}
}
