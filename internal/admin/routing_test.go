package admin_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/busmesh/busmesh/internal/admin"
	"github.com/busmesh/busmesh/internal/config"
)

// fakeRouting is a routing table of one version per change, validated as
// the ambassador validates it.
type fakeRouting struct {
	mu       sync.Mutex
	version  uint64
	policies map[string]config.ServicePolicy
}

func (f *fakeRouting) Routing() (uint64, map[string]config.ServiceRouting) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]config.ServiceRouting{}
	for s, p := range f.policies {
		out[s] = config.ServiceRouting{Policy: p, LB: "queue", Admin: f.version > 1}
	}
	return f.version, out
}

func (f *fakeRouting) ChangeTraffic(service string, change func(uint64, config.Traffic, config.Traffic) (config.Traffic, error)) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.policies[service]
	rules, err := change(f.version, p.Traffic(), config.Traffic{Split: map[string]int{"v1": 100}})
	if err != nil {
		return 0, err
	}
	p.SetTraffic(rules)
	a := &config.Ambassador{LB: "queue", Services: map[string]*config.ServicePolicy{service: &p},
		Brokers: map[string]string{"kafka": "kafka://127.0.0.1:9092"}}
	if err := a.ValidateService("(admin change)", service); err != nil {
		return 0, err
	}
	f.policies[service] = p
	f.version++
	return f.version, nil
}

func send(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRoutesAPI: GET /v1/routes carries the table and its version; PUT
// and PATCH /v1/routes/{service} change it, refusing bad rules with the
// config file's messages, unknown keys, and stale versions.
func TestRoutesAPI(t *testing.T) {
	s := startAdmin(t)
	f := &fakeRouting{version: 1, policies: map[string]config.ServicePolicy{"orders": {Split: map[string]int{"v1": 100}}}}
	s.SetSidecar(admin.Sidecar{Routing: f})
	base := "http://" + s.Addr() + "/v1/routes"

	if _, body := get(t, base); !has(body, `"version":"1"`) || !has(body, `"split":{"v1":100}`) || !has(body, `"source":"file"`) {
		t.Errorf("GET /v1/routes = %s, want version 1 and the split", body)
	}
	for _, c := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"shift", "PATCH", "/orders", `{"split":{"v2":100}}`, 200, `"version":"2"`},
		{"shifted split", "GET", "", "", 200, `"split":{"v1":0,"v2":100}`},
		{"put", "PUT", "/orders", `{"split":{"v1":90,"v2":10},"sticky":"x-user"}`, 200, `"sticky":"x-user"`},
		{"bad weight", "PUT", "/orders", `{"split":{"v2":-5}}`, 400, "ambassador.services.orders.split.v2: -5 must be 0 or more"},
		{"bad fallback", "PUT", "/orders", `{"split":{"v2":1},"fallback":"maybe"}`, 400, `fallback: \"maybe\" is not a fallback (allowed: any, none)`},
		{"unknown key", "PUT", "/orders", `{"splitt":{"v2":1}}`, 400, "splitt"},
		{"over 100", "PATCH", "/orders", `{"split":{"v1":60,"v2":60}}`, 400, "add up to 120"},
		{"stale", "PATCH", "/orders", `{"split":{"v2":100},"if_version":"2"}`, 409, "version 3 is in force, not 2"},
		{"stale put", "PUT", "/orders?if_version=2", `{"split":{"v2":100}}`, 409, "version 3 is in force, not 2"},
		{"current", "PATCH", "/orders", `{"split":{"v2":100},"if_version":"3"}`, 200, `"version":"4"`},
		{"broker canary", "PATCH", "/orders", `{"brokers":{"kafka":10}}`, 200, `"brokers":{"kafka":10,"primary":90}`},
		{"unknown broker", "PATCH", "/orders", `{"brokers":{"rabbit":10}}`, 400,
			`ambassador.services.orders.brokers.rabbit: \"rabbit\" is not a broker (allowed: primary, kafka`},
		{"broker cut-over", "PATCH", "/orders", `{"brokers":{"kafka":100}}`, 200, `"brokers":{"kafka":100,"primary":0}`},
		{"brokers not 100", "PUT", "/orders", `{"split":{"v1":1},"brokers":{"kafka":40,"primary":10}}`, 400, "the weights add up to 50 (kafka=40 primary=10), not 100"},
		{"bad service", "PUT", "/no.such", `{}`, 400, "service name"},
		{"reset", "DELETE", "/orders", "", 200, `"split":{"v1":100}`},
	} {
		code, body := send(t, cmpOr(c.method, "GET"), base+c.path, c.body)
		if code != c.code || !has(body, c.want) {
			t.Errorf("%s: %s %s = %d %s, want %d with %q", c.name, c.method, c.path, code, body, c.code, c.want)
		}
	}
	if v, _ := f.Routing(); v != 7 {
		t.Errorf("version %d after six changes, want 7", v)
	}
}

// has is strings.Contains that ignores spaces: protojson's output
// varies them on purpose.
func has(body, want string) bool {
	return strings.Contains(body, want) || strings.Contains(strings.ReplaceAll(body, " ", ""), strings.ReplaceAll(want, " ", ""))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
