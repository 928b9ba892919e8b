package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// demoHandler is the dev mode's built-in service: it says hello with what
// it received, echoes bodies on /echo and answers /status/CODE with CODE.
func demoHandler(instance string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Read all before answering: an HTTP/1 server closes the request
		// body once the response starts.
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Write(body)
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		// Answers with the status it names: /status/503 shows what a
		// failing service looks like through the mesh.
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/200 to /status/599", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d, as asked\n", code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"message":  "hello from the demo service, through the mesh",
			"instance": instance,
			"method":   r.Method,
			"path":     r.URL.Path,
			"query":    r.URL.RawQuery,
			// Fixed width: a load generator that checks each answer's
			// length against the first (ab) sees them all alike.
			"time": time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		})
	})
	return mux
}
