package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// eventsCallerConfig is a caller whose service has a 1 s deadline and a
// 700 ms idle timeout.
const eventsCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: web
  upstreams:
    {{service}}: {{port}}
  services:
    {{service}}:
      timeout: 1s
      idle_timeout: 700ms
`

// eventsApp answers /events with a Server-Sent Events stream: its head
// after the query's head (a duration, default none), then n events, one
// every interval (every).
func eventsApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		head, _ := time.ParseDuration(q.Get("head"))
		select {
		case <-time.After(head):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		paced(w, r, func(i int) []byte { return fmt.Appendf(nil, "id: %d\ndata: event %d\n\n", i, i) })
	})
}

// TestEventStreamDeadline: a service's deadline (timeout) bounds a
// Server-Sent Events call only until the answer's head when the caller asks
// for an event stream (Accept: text/event-stream, as EventSource does);
// after it, the stream runs as long as events keep coming, and the idle
// timeout ends one that stalls. A plain GET of the same stream keeps the
// deadline over its whole answer and is aborted at it, never ended as if
// complete; a head later than the deadline is 504 timeout either way.
func TestEventStreamDeadline(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			app := httptest.NewServer(eventsApp())
			t.Cleanup(app.Close)
			service, port := unique("events"), freePort(t)
			startSidecar(t, "callee-events", plainCalleeConfig, map[string]string{
				"id": unique("events"), "broker": b.url, "service": service, "target": app.URL,
			})
			startSidecar(t, "caller-events", eventsCallerConfig, map[string]string{
				"id": unique("web"), "broker": b.url, "service": service, "port": port,
			})
			// read GETs the stream and returns its events, how long it took
			// and how it ended.
			read := func(query string, events bool) (status int, got []string, took time.Duration, err error) {
				t.Helper()
				req := newRequest(t, "GET", "http://"+port+"/events?"+query, nil)
				req = req.WithContext(testCtx(t, 20*time.Second))
				if events {
					req.Header.Set("Accept", "text/event-stream")
				}
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					return resp.StatusCode, nil, time.Since(start), fmt.Errorf("X-Busmesh-Error %q", resp.Header.Get("X-Busmesh-Error"))
				}
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
						got = append(got, data)
					}
				}
				return resp.StatusCode, got, time.Since(start), sc.Err()
			}
			eventually(t, 10*time.Second, "the service answers", func() bool {
				status, _, _, _ := read("n=1&every=1ms", true)
				return status == 200
			})

			// 12 events over 2.4 s: past the 1 s deadline, never 700 ms apart.
			status, got, took, err := read("n=12&every=200ms", true)
			if status != 200 || err != nil || len(got) != 12 || got[11] != "event 11" {
				t.Errorf("event stream over 2.4 s: status %d, %d events of 12 (%v) in %v, ended with %v; want all, ended cleanly",
					status, len(got), got, took, err)
			}

			// The same without Accept: text/event-stream: cut at the deadline.
			status, got, took, err = read("n=12&every=200ms", false)
			if status != 200 || err == nil || len(got) >= 12 || took > 2*time.Second {
				t.Errorf("plain GET of the stream: status %d, %d events in %v, ended with %v; want it aborted at the 1 s deadline",
					status, len(got), took, err)
			}

			// A stream that stalls: the idle timeout (700 ms) ends it.
			status, got, took, err = read("n=3&every=2s", true)
			if status != 200 || err == nil || len(got) != 0 || took > 2500*time.Millisecond {
				t.Errorf("stalled event stream: status %d, %d events in %v, ended with %v; want it aborted after 700 ms without a byte",
					status, len(got), took, err)
			}

			// A head later than the deadline: 504 timeout.
			status, _, took, err = read("head=2s&n=1&every=1ms", true)
			if status != http.StatusGatewayTimeout || err == nil || !strings.Contains(err.Error(), `"timeout"`) || took > 2500*time.Millisecond {
				t.Errorf("event stream whose head comes after the deadline: status %d in %v (%v); want 504 timeout at about 1 s", status, took, err)
			}
		})
	}
}
