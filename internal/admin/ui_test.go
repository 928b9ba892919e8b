package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/admin"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// remote is a reference the browser would fetch from another host.
var remote = regexp.MustCompile(`(src|href)="(https?:)?//[^"]*"`)

func startAdmin(t *testing.T) *admin.Server {
	t.Helper()
	s, err := admin.Start(admin.Options{Addr: "127.0.0.1:0", Sidecar: "web-1", Broker: "nats://127.0.0.1:4222",
		Metrics: telemetry.NewMetrics(), Version: "v1.2.3", Mesh: "default", Caller: "web"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	return s
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestDashboardAssets: the admin port serves the dashboard at / and its
// embedded assets under /ui/, nothing from elsewhere.
func TestDashboardAssets(t *testing.T) {
	s := startAdmin(t)
	base := "http://" + s.Addr()
	resp, body := get(t, base+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="/ui/app.js"`) {
		t.Fatalf("GET / = %d %s, want the dashboard page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if m := remote.FindString(body); m != "" {
		t.Errorf("the page loads something from another host: %s", m)
	}
	for path, ctype := range map[string]string{"/ui/app.js": "javascript", "/ui/metrics.js": "javascript", "/ui/style.css": "text/css"} {
		resp, body := get(t, base+path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("GET %s = %d %q, want %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
		}
	}
	if resp, _ := get(t, base+"/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here = %d, want 404", resp.StatusCode)
	}
}

// TestInfo: /info says who the sidecar is, in plain JSON, and when its
// broker connection opened.
func TestInfo(t *testing.T) {
	s := startAdmin(t)
	read := func() map[string]any {
		resp, body := get(t, "http://"+s.Addr()+"/info")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /info = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("GET /info: %v\n%s", err, body)
		}
		return m
	}
	m := read()
	if m["sidecar"] != "web-1" || m["version"] != "v1.2.3" || m["caller"] != "web" || m["ready"] != false ||
		m["broker_state"] != "connecting" || m["broker"] != "nats://127.0.0.1:4222" {
		t.Errorf("/info before the broker connected = %v", m)
	}
	if _, ok := m["uptime_s"].(float64); !ok {
		t.Errorf("/info uptime_s = %v, want a number", m["uptime_s"])
	}
	s.SetSidecar(admin.Sidecar{BrokerSince: time.Now(), Components: func() map[string]string { return map[string]string{"ambassador": "ok"} }})
	s.SetReady(true)
	m = read()
	if m["broker_state"] != "connected" || m["broker_since"] == nil || m["ready"] != true ||
		m["components"].(map[string]any)["ambassador"] != "ok" {
		t.Errorf("/info after the start = %v", m)
	}
	s.SetSidecar(admin.Sidecar{BrokerSince: time.Now(), BrokerConnected: func() bool { return false }})
	if m = read(); m["broker_state"] != "disconnected" {
		t.Errorf("/info while the broker is down: broker_state %v, want disconnected", m["broker_state"])
	}
	if _, ok := m["brokers"]; ok {
		t.Errorf("/info of a sidecar without ambassador.brokers lists brokers: %v", m["brokers"])
	}
	second := admin.BrokerInfo{Name: "kafka", Broker: "kafka://127.0.0.1:9092", State: "disconnected"}
	s.SetSidecar(admin.Sidecar{BrokerSince: time.Now(), Brokers: func() []admin.BrokerInfo { return []admin.BrokerInfo{second} }})
	m = read()
	if bs, _ := m["brokers"].([]any); len(bs) != 1 || fmt.Sprint(bs[0]) != "map[broker:kafka://127.0.0.1:9092 name:kafka state:disconnected]" ||
		m["broker_state"] != "connected" {
		t.Errorf("/info with a further broker down: brokers %v, broker_state %v", m["brokers"], m["broker_state"])
	}
}
