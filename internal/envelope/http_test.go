package envelope_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/busmesh/busmesh/internal/envelope"
)

func TestTrailerNames(t *testing.T) {
	list := envelope.AppendTrailerNames([]string{"Content-Type", "text/plain"}, http.Header{"X-Sum": nil})
	list = append(list, "Trailer", "x-other, bad name,X-Third")
	got := envelope.TrailerNames(list)
	if want := []string{"X-Sum", "X-Other", "X-Third"}; !slices.Equal(got, want) {
		t.Errorf("TrailerNames = %q, want %q", got, want)
	}
	if got := envelope.AppendTrailerNames(nil, nil); got != nil {
		t.Errorf("AppendTrailerNames without trailers = %q, want nothing", got)
	}
	// The Trailer entry stays hop-by-hop for SetHTTPHeader.
	h := http.Header{}
	envelope.SetHTTPHeader(h, list)
	if _, ok := h["Trailer"]; ok {
		t.Errorf("SetHTTPHeader set Trailer from a list: %v", h)
	}
}

func TestUpgrade(t *testing.T) {
	if got := envelope.Upgrade([]string{"Sec-Websocket-Key", "k", "Upgrade", "websocket"}); got != "websocket" {
		t.Errorf("Upgrade = %q, want websocket", got)
	}
	if got := envelope.Upgrade([]string{"Host", "x"}); got != "" {
		t.Errorf("Upgrade without one = %q", got)
	}
	// AppendHTTPHeader leaves Upgrade out: only an upgrade call adds it.
	list := envelope.AppendHTTPHeader(nil, http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}})
	if len(list) != 0 {
		t.Errorf("AppendHTTPHeader kept %q", list)
	}
}
