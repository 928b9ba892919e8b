package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDemoAnswersAlike: the demo's greeting has the same length every time,
// as load generators that compare each answer's length with the first (ab)
// expect; its time field is the one part that changes.
func TestDemoAnswersAlike(t *testing.T) {
	h := demoHandler("dev")
	length := -1
	for range 50 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/hello", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if length >= 0 && rec.Body.Len() != length {
			t.Fatalf("answer of %d bytes after one of %d: %s", rec.Body.Len(), length, rec.Body)
		}
		length = rec.Body.Len()
	}
}
