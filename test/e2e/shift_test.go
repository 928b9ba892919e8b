package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestBlueGreenShift: blue-green from the CLI under load. Eight callers
// call a service whose config file sends every call to blue (v1); in the
// middle `busmesh shift SERVICE v2=100` moves the split to green (v2)
// through the caller sidecar's admin API. No call fails, and every call
// sent more than a second after the command returned lands on green
// (every call sent after it returned, as the swap is done by then);
// `busmesh routes` shows the new table and its version. The admin token
// guards the change.
func TestBlueGreenShift(t *testing.T) {
	for _, b := range brokers(t) {
		modes := []string{"queue"}
		if b.name == "nats" {
			modes = append(modes, "direct")
		}
		for _, lb := range modes {
			t.Run(b.name+"/"+lb, func(t *testing.T) {
				t.Parallel()
				requireBroker(t, b)
				testBlueGreenShift(t, b, lb)
			})
		}
	}
}

func testBlueGreenShift(t *testing.T, b brokerCase, lb string) {
	service := unique("store")
	for _, v := range []string{"v1", "v2"} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, v)
		}))
		t.Cleanup(app.Close)
		for i := range 2 { // two instances of each color
			startSidecar(t, fmt.Sprintf("callee-%s-%d", v, i), versionedCalleeConfig, map[string]string{
				"id": unique("store-" + v), "broker": b.url, "service": service, "version": v, "target": app.URL,
			})
		}
	}
	port, admin := freePort(t), freePort(t)
	file := filepath.Join(t.TempDir(), "caller.yaml")
	text := "admin_token: s3cret\n" + trafficCaller(b.url, unique("web"), admin, service, port, lb, `      routes:
        - match: {headers: {x-color: green}}
          version: v2
      split: {v1: 100}
`)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	caller := runSidecar(t, binary, "caller", file, admin)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(client.CloseIdleConnections)
	call := getter(client, port)
	cli := func(token string, args ...string) (string, int) {
		if !slices.Contains(args, "--admin") {
			args = append(args, "--admin", admin)
		}
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "BUSMESH_ADMIN_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	// Green is known to the caller before the switch: the header route
	// reaches it.
	eventually(t, 10*time.Second, "green reachable", func() bool {
		v, err := call("x-color", "green")
		return err == nil && v == "v2"
	})

	// The CLI's refusals: a wrong token, a bad argument, an invalid version.
	if out, code := cli("wrong", "shift", service, "v2=100"); code != 1 || !strings.Contains(out, "admin token") {
		t.Errorf("shift with a wrong token: exit %d, %s; want 1 and the token named", code, out)
	}
	if out, code := cli("s3cret", "shift", service, "v2"); code != 2 {
		t.Errorf("shift %s v2: exit %d, %s; want 2", service, code, out)
	}
	if out, code := cli("s3cret", "shift", service, "v.2=100"); code != 2 || !strings.Contains(out, "split.v.2") {
		t.Errorf("shift %s v.2=100: exit %d, %s; want 2 naming split.v.2", service, code, out)
	}

	var switched atomic.Int64 // unix nanoseconds when shift returned
	var total, fails, lateBlue, blueAfter, greenAfter atomic.Int64
	stop := callers(8, func() {
		sent := time.Now().UnixNano()
		v, err := call()
		total.Add(1)
		if err != nil {
			if fails.Add(1) <= 3 {
				t.Logf("call failed: %v", err)
			}
			return
		}
		if sw := switched.Load(); sw != 0 && sent > sw {
			if v == "v1" {
				blueAfter.Add(1)
				if sent > sw+int64(time.Second) {
					lateBlue.Add(1)
				}
			} else {
				greenAfter.Add(1)
			}
		}
	})
	time.Sleep(6 * time.Second)
	began := time.Now()
	out, code := cli("s3cret", "shift", service, "v2=100")
	switched.Store(time.Now().UnixNano())
	t.Logf("%s/%s: busmesh shift took %v: %s", b.name, lb, time.Since(began).Round(time.Millisecond), strings.TrimSpace(out))
	if code != 0 || !strings.Contains(out, "v1=0 v2=100") || !strings.Contains(out, "routing table version 2") {
		t.Errorf("shift: exit %d, %s; want 0, v1=0 v2=100, version 2", code, out)
	}
	time.Sleep(6 * time.Second)
	stop()
	t.Logf("%s/%s: %d calls, %d failed; after the switch %d on green, %d on blue (%d of them sent over 1s after)",
		b.name, lb, total.Load(), fails.Load(), greenAfter.Load(), blueAfter.Load(), lateBlue.Load())
	if fails.Load() > 0 || lateBlue.Load() > 0 || greenAfter.Load() == 0 {
		t.Errorf("blue-green by busmesh shift: %d of %d calls failed, %d went to blue over 1s after the switch, %d to green",
			fails.Load(), total.Load(), lateBlue.Load(), greenAfter.Load())
	}

	// Again, as on a fleet (--admin A,B): no change, the same version.
	if out, code := cli("s3cret", "shift", service, "v2=100", "--admin", admin+","+admin); code != 0 ||
		strings.Count(out, "routing table version 2") != 2 {
		t.Errorf("shift again on two addresses: exit %d, %s; want 0 and version 2 twice", code, out)
	}

	// busmesh routes confirms: the new version, the split, its source.
	out, code = cli("", "routes", "-o", "json")
	var routes struct {
		Version  uint64 `json:"version"`
		Services []struct {
			Service string         `json:"service"`
			Split   map[string]int `json:"split"`
			Source  string         `json:"source"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil || code != 0 {
		t.Fatalf("routes -o json: exit %d, %v\n%s", code, err, out)
	}
	if len(routes.Services) != 1 || routes.Version != 2 || routes.Services[0].Split["v2"] != 100 ||
		routes.Services[0].Split["v1"] != 0 || routes.Services[0].Source != "admin" {
		t.Errorf("routes after the shift = %+v, want version 2, v1=0 v2=100 from admin", routes)
	}
	if out, _ := cli("", "routes"); !strings.Contains(out, "routing table version 2") {
		t.Errorf("routes: %s, want the version", out)
	}
	// --reset: the file's rules again, and calls on blue.
	if out, code := cli("s3cret", "shift", service, "--reset"); code != 0 || !strings.Contains(out, "split v1=100 (routing table version 3)") {
		t.Errorf("shift --reset: exit %d, %s; want the file's split, version 3", code, out)
	}
	if v, err := call(); err != nil || v != "v1" {
		t.Errorf("after --reset: %q, %v; want v1", v, err)
	}
	if !strings.Contains(caller.log.String(), `"msg":"routes changed by the admin API"`) {
		t.Error("the caller did not log the admin change")
	}
}
