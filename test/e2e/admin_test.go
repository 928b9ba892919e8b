package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestAdminAPI reads the caller's admin API three ways, REST through
// grpc-gateway, gRPC, and the CLI, and checks they agree with the mesh.
func TestAdminAPI(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	m := startHTTPMesh(t, b, echoApp())
	if resp, _ := do(t, newRequest(t, "GET", "http://"+m.port+"/", nil)); resp.StatusCode != 200 {
		t.Fatalf("call: status %d", resp.StatusCode)
	}

	// REST/JSON.
	resp, err := http.Get("http://" + m.caller.admin + "/v1/services?service=" + m.service)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET /v1/services: %d %q, want 200 JSON", resp.StatusCode, ct)
	}
	var rest busmeshv1.ListServicesResponse
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(raw, &rest); err != nil {
		t.Fatalf("GET /v1/services is not the API's JSON: %v\n%s", err, raw)
	}

	// gRPC, on the same port.
	conn, err := grpc.NewClient(m.caller.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	viaGRPC, err := busmeshv1.NewAdminClient(conn).ListServices(testCtx(t, 10*time.Second), &busmeshv1.ListServicesRequest{Service: m.service})
	if err != nil {
		t.Fatalf("gRPC ListServices = %v", err)
	}
	summary := func(r *busmeshv1.ListServicesResponse) []string {
		var s []string
		for _, svc := range r.Services {
			for _, in := range svc.Instances {
				s = append(s, svc.Name+"/"+in.Name+"/"+map[bool]string{true: "healthy", false: "unhealthy"}[in.Healthy])
			}
		}
		return s
	}
	want := []string{m.service + "/" + m.instance + "/healthy"}
	if diff := cmp.Diff(summary(&rest), want); diff != "" {
		t.Errorf("REST services (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(summary(viaGRPC), want); diff != "" {
		t.Errorf("gRPC services (-got +want):\n%s", diff)
	}

	// The CLI.
	out, err := exec.Command(binary, "services", m.service, "--admin", m.caller.admin, "-o", "json").Output()
	if err != nil {
		t.Fatalf("busmesh services: %v", err)
	}
	var cli busmeshv1.ListServicesResponse // the CLI's plain JSON has the same names
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(out, &cli); err != nil {
		t.Fatalf("busmesh services -o json: %v\n%s", err, out)
	}
	if diff := cmp.Diff(summary(&cli), want); diff != "" {
		t.Errorf("CLI services (-got +want):\n%s", diff)
	}
	out, err = exec.Command(binary, "call", m.service, "/via-cli?q=1", "--admin", m.caller.admin, "-X", "POST", "-d", "cli body").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "200 ") || !strings.Contains(string(out), "X-Echo-Path: /via-cli") || !strings.HasSuffix(string(out), "cli body") {
		t.Errorf("busmesh call: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "stats", "--admin", m.caller.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), m.service) {
		t.Errorf("busmesh stats: %v\n%s", err, out)
	}
}
