package inject_test

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/inject"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml")

var opts = inject.Options{Image: "busmesh:test", Broker: "nats://nats:4222"}

func run(t *testing.T, in []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := inject.Inject(bytes.NewReader(in), &out, opts); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	return out.Bytes()
}

func TestInjectGolden(t *testing.T) {
	in, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := inject.Inject(bytes.NewReader(in), &out, opts)
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	var got []string
	for _, r := range results {
		got = append(got, r.String())
	}
	want := []string{
		"deployment/hello injected",
		"service/hello skipped (no busmesh.io/service or busmesh.io/upstreams annotation)",
		"statefulset/caller injected",
		"pod/orders injected",
		"cronjob/report injected",
		"daemonset/agent injected",
		"deployment/billing injected",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("results (-got +want):\n%s", diff)
	}
	golden := filepath.Join("testdata", "workloads.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantOut, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(out.String(), string(wantOut)); diff != "" {
		t.Errorf("output (-got +want), -update rewrites the golden file:\n%s", diff)
	}
}

func TestInjectTwiceIsOnce(t *testing.T) {
	in, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	once := run(t, in)
	twice := run(t, once)
	if diff := cmp.Diff(string(twice), string(once)); diff != "" {
		t.Errorf("inject twice (-got) vs once (+want):\n%s", diff)
	}
	// Changed annotations replace what the first run added, in place.
	changed := regexp.MustCompile(`(?m)^ *busmesh.io/identity: caller-identity\n`).ReplaceAll(once, nil)
	changed = bytes.ReplaceAll(changed, []byte("busmesh.io/port: \"8080\""), []byte("busmesh.io/port: \"8081\""))
	changed = regexp.MustCompile(`(?m)^ *busmesh.io/app-tls: billing-client\n`).ReplaceAll(changed, nil)
	again := run(t, changed)
	if n := bytes.Count(again, []byte("- name: busmesh\n")); n != 6 {
		t.Errorf("after a re-injection: %d busmesh containers, want 6 (one per workload)", n)
	}
	if bytes.Contains(again, []byte("busmesh-app-tls")) || bytes.Contains(again, []byte(inject.AppTLSDir)) {
		t.Errorf("the application TLS volume or its files stayed after busmesh.io/app-tls was removed")
	}
	if bytes.Contains(again, []byte("busmesh-identity")) {
		t.Errorf("the identity volume stayed after busmesh.io/identity was removed")
	}
	if !bytes.Contains(again, []byte("target: http://127.0.0.1:8081")) {
		t.Errorf("the changed port did not reach the config:\n%s", again)
	}
}

// TestInjectKeepsTheRest removes what inject adds from its output and
// finds the input, decoded, unchanged: no field lost, none reordered.
func TestInjectKeepsTheRest(t *testing.T) {
	in, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, in)
	want, got := decodeAll(t, in), decodeAll(t, out)
	for _, doc := range got {
		for _, tmpl := range templates(doc) {
			meta := tmpl["metadata"].(map[string]any)
			ann := meta["annotations"].(map[string]any)
			delete(ann, inject.AnnotationConfig)
			if ann["prometheus.io/port"] == "15000" {
				delete(ann, "prometheus.io/scrape")
				delete(ann, "prometheus.io/port")
				delete(ann, "prometheus.io/path")
			}
			if len(ann) == 0 {
				delete(meta, "annotations")
			}
			if len(meta) == 0 {
				delete(tmpl, "metadata")
			}
			spec := tmpl["spec"].(map[string]any)
			spec["initContainers"] = dropNamed(spec["initContainers"], "busmesh")
			spec["volumes"] = dropNamed(dropNamed(dropNamed(spec["volumes"], "busmesh-config"), "busmesh-identity"), "busmesh-app-tls")
			for _, k := range []string{"initContainers", "volumes"} {
				if spec[k] == nil {
					delete(spec, k)
				}
			}
		}
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("output less the sidecar (-got) vs input (+want):\n%s", diff)
	}
	// Key order of the untouched objects is the input's, byte for byte.
	service := "kind: Service\nmetadata:\n  name: hello\n  namespace: demo\nspec:\n  selector: {app: hello}\n  ports:\n  - port: 80\n    targetPort: 8080\n"
	if !bytes.Contains(out, []byte(service)) {
		t.Errorf("the Service changed; output:\n%s", out)
	}
	if !bytes.Contains(out, []byte(`args: ["-listen=:8080"] # a comment that stays`)) {
		t.Errorf("a comment or flow style was lost; output:\n%s", out)
	}
}

func decodeAll(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return docs
			}
			t.Fatalf("decode: %v", err)
		}
		docs = append(docs, m)
	}
}

// templates returns the pod template (or Pod) of a decoded workload.
func templates(doc map[string]any) []map[string]any {
	at := map[string][]string{
		"Pod": nil, "Deployment": {"spec", "template"}, "StatefulSet": {"spec", "template"},
		"CronJob": {"spec", "jobTemplate", "spec", "template"}, "DaemonSet": {"spec", "template"},
	}
	keys, ok := at[doc["kind"].(string)]
	if !ok {
		return nil
	}
	m := doc
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return []map[string]any{m}
}

func dropNamed(list any, name string) any {
	items, _ := list.([]any)
	var kept []any
	for _, it := range items {
		if it.(map[string]any)["name"] != name {
			kept = append(kept, it)
		}
	}
	if kept == nil {
		return nil
	}
	return kept
}

// TestInjectConfig checks the config each sidecar gets, as the sidecar
// reads it.
func TestInjectConfig(t *testing.T) {
	in, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, run(t, in))
	configs := map[string]*config.Config{}
	identities, appTLSs := map[string]any{}, map[string]any{}
	for _, doc := range docs {
		for _, tmpl := range templates(doc) {
			ann := tmpl["metadata"].(map[string]any)["annotations"].(map[string]any)
			name := doc["metadata"].(map[string]any)["name"].(string)
			text := []byte(ann[inject.AnnotationConfig].(string))
			// The identity's files exist only in the pod: parsed without it
			// (deploy/validate loads real ones in its place).
			var raw map[string]any
			if err := yaml.Unmarshal(text, &raw); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_, hasID := raw["identity"]
			adapter, _ := raw["adapter"].(map[string]any)
			appTLS, hasTLS := adapter["tls"].(map[string]any)
			if hasID || hasTLS {
				if hasID {
					identities[name] = raw["identity"]
					delete(raw, "identity")
				}
				if hasTLS {
					appTLSs[name] = maps.Clone(appTLS)
					for _, k := range []string{"ca", "cert", "key"} {
						delete(appTLS, k)
					}
				}
				var err error
				if text, err = yaml.Marshal(raw); err != nil {
					t.Fatal(err)
				}
			}
			c, err := config.Parse(name, text, func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			configs[name] = c
		}
	}
	// Only the caller has busmesh.io/identity: its config names the
	// mounted Secret's files.
	want := map[string]any{"caller": map[string]any{
		"cert": inject.IdentityDir + "/tls.crt", "key": inject.IdentityDir + "/tls.key", "ca": inject.IdentityDir + "/ca.crt"}}
	if diff := cmp.Diff(identities, want); diff != "" {
		t.Errorf("identity sections (-got +want):\n%s", diff)
	}
	// billing is https with busmesh.io/app-tls: its adapter names the
	// mounted Secret's files and the server name.
	wantTLS := map[string]any{"billing": map[string]any{"ca": inject.AppTLSDir + "/ca.crt", "cert": inject.AppTLSDir + "/tls.crt",
		"key": inject.AppTLSDir + "/tls.key", "server_name": "billing.internal"}}
	if diff := cmp.Diff(appTLSs, wantTLS); diff != "" {
		t.Errorf("adapter.tls sections (-got +want):\n%s", diff)
	}
	if a := configs["billing"].Adapter; a == nil || a.Target != "https://127.0.0.1:8443" || a.Health == nil || a.Health.HTTP != "/status" {
		t.Errorf("billing adapter = %+v, want https://127.0.0.1:8443 with health /status", a)
	}
	if a := configs["hello"].Adapter; a == nil || a.Service != "hello" || a.Target != "http://127.0.0.1:8080" || a.Health == nil || a.Health.HTTP != "/healthz" {
		t.Errorf("hello adapter = %+v, want service hello, target http://127.0.0.1:8080, health /healthz", a)
	}
	if configs["hello"].Ambassador != nil {
		t.Errorf("hello has an ambassador; it asked for none")
	}
	if a := configs["caller"].Ambassador; a == nil || a.HTTP != "127.0.0.1:15001" || a.Service != "caller" ||
		!cmp.Equal(a.Upstreams, map[string]string{"hello": "127.0.0.1:9001", "orders": "127.0.0.1:9002"}) {
		t.Errorf("caller ambassador = %+v", a)
	}
	if c := configs["orders"]; c.Adapter == nil || c.Adapter.Target != "grpc://127.0.0.1:9090" || !c.Adapter.Health.GRPC || c.Ambassador == nil {
		t.Errorf("orders = %+v, want a gRPC adapter with the gRPC health check and an ambassador", c)
	}
	if m := configs["agent"].Mesh; m != "shop" {
		t.Errorf("agent mesh = %q, want shop (busmesh.io/mesh)", m)
	}
	if m := configs["hello"].Mesh; m != config.DefaultMesh {
		t.Errorf("hello mesh = %q, want the default", m)
	}
	for name, c := range configs {
		if c.Admin != "0.0.0.0:15000" {
			t.Errorf("%s: admin = %q, want 0.0.0.0:15000 (probes and scrapes come from outside the pod)", name, c.Admin)
		}
	}
}

func TestInjectErrors(t *testing.T) {
	deployment := func(annotations string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      annotations:\n" +
			annotations + "    spec:\n      containers:\n      - name: app\n        image: web\n"
	}
	ok := deployment("        busmesh.io/service: web\n        busmesh.io/port: \"8080\"\n")
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"not YAML", ok + "---\nkind: [unclosed\n", []string{"document 2: not YAML"}},
		{"not an object", "- a\n- b\n", []string{"document 1: not a Kubernetes object"}},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", []string{"document 1 (/x): not a Kubernetes object: apiVersion or kind is missing"}},
		{"kind it cannot inject", ok + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    busmesh.io/service: web\n",
			[]string{"document 2 (Service/web): cannot inject a Service"}},
		{"missing port", deployment("        busmesh.io/service: web\n"),
			[]string{"document 1 (Deployment/web): busmesh.io/port is missing"}},
		{"port without service", deployment("        busmesh.io/port: \"8080\"\n"),
			[]string{"document 1 (Deployment/web): busmesh.io/port is set but busmesh.io/service is missing"}},
		{"bad port", deployment("        busmesh.io/service: web\n        busmesh.io/port: http\n"),
			[]string{`busmesh.io/port: "http" is not a port (1-65535)`}},
		{"port of the sidecar", deployment("        busmesh.io/service: web\n        busmesh.io/port: \"15000\"\n"),
			[]string{"busmesh.io/port: 15000 is a port of the sidecar"}},
		{"upstream on the application's port", deployment("        busmesh.io/service: web\n        busmesh.io/port: \"8080\"\n        busmesh.io/upstreams: orders:8080\n"),
			[]string{"busmesh.io/upstreams: orders:8080: 8080 is the application's port (busmesh.io/port)"}},
		{"upstream on the shared port", deployment("        busmesh.io/upstreams: orders:15001\n"),
			[]string{"busmesh.io/upstreams: orders:15001: 15001 is the ambassador's shared port"}},
		{"bad upstreams", deployment("        busmesh.io/upstreams: orders=9001\n"),
			[]string{`busmesh.io/upstreams: "orders=9001" is not service:port (example: orders:9001)`}},
		{"bad protocol", deployment("        busmesh.io/service: web\n        busmesh.io/port: \"8080\"\n        busmesh.io/protocol: tcp\n"),
			[]string{`busmesh.io/protocol: "tcp" is not a protocol (allowed: http, grpc, https, grpcs)`}},
		{"app TLS over plain HTTP", deployment("        busmesh.io/service: web\n        busmesh.io/port: \"8080\"\n        busmesh.io/app-tls: web-client\n"),
			[]string{`busmesh.io/app-tls: "web-client": TLS to the application needs busmesh.io/protocol https or grpcs, not http`}},
		{"empty app TLS", deployment("        busmesh.io/service: web\n        busmesh.io/port: \"8443\"\n        busmesh.io/protocol: https\n        busmesh.io/app-tls: \"\"\n"),
			[]string{`busmesh.io/app-tls: empty: the name of a Secret with ca.crt, tls.crt and tls.key`}},
		{"bad mesh", deployment("        busmesh.io/upstreams: a:9001\n        busmesh.io/mesh: a.b\n"),
			[]string{"document 1 (Deployment/web): busmesh.io/mesh:"}},
		{"bad service name", deployment("        busmesh.io/service: web.v1\n        busmesh.io/port: \"8080\"\n"),
			[]string{"document 1 (Deployment/web): busmesh.io/service:"}},
		{"no containers", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    busmesh.io/upstreams: a:9001\nspec: {}\n",
			[]string{"document 1 (Pod/p): spec has no pod spec with containers"}},
		{"two bad objects", deployment("        busmesh.io/service: web\n") + "---\n" + deployment("        busmesh.io/port: \"1\"\n"),
			[]string{"document 1 (Deployment/web): busmesh.io/port is missing", "document 2 (Deployment/web): busmesh.io/port is set"}},
		{"bad item of a List", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(deployment("        busmesh.io/service: web\n"), "\n", "\n  "),
			[]string{"document 1 (Deployment/web): busmesh.io/port is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := inject.Inject(strings.NewReader(tt.in), &out, opts)
			if err == nil {
				t.Fatalf("Inject = nil error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Inject error = %q, want it to contain %q", err, w)
				}
			}
			var oe *inject.ObjectError
			if !errors.As(err, &oe) {
				t.Errorf("Inject error %T is no *inject.ObjectError", err)
			}
			if out.Len() > 0 {
				t.Errorf("Inject wrote %d bytes despite the error", out.Len())
			}
		})
	}
}

func TestInjectNoBroker(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    busmesh.io/upstreams: a:9001\nspec:\n  containers: [{name: app, image: app}]\n"
	_, err := inject.Inject(strings.NewReader(in), &bytes.Buffer{}, inject.Options{Image: "busmesh:test"})
	if err == nil || !strings.Contains(err.Error(), "document 1 (Pod/p): busmesh.io/broker is missing") {
		t.Errorf("Inject without a broker = %v, want busmesh.io/broker is missing", err)
	}
}

func TestInjectBrokerSecret(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    busmesh.io/upstreams: a:9001\n    busmesh.io/broker: nats://in-the-clear:4222\n    busmesh.io/broker-secret: creds\nspec:\n  containers: [{name: app, image: app}]\n"
	out := string(run(t, []byte(in)))
	flat := regexp.MustCompile(`(?m)^ +`).ReplaceAllString(out, "")
	want := "- name: BUSMESH_BROKER\nvalueFrom:\nsecretKeyRef:\nname: creds\nkey: url\n"
	if !strings.Contains(flat, want) {
		t.Errorf("BUSMESH_BROKER does not come from the Secret:\n%s", out)
	}
	if strings.Contains(out, "value: nats://in-the-clear:4222") {
		t.Errorf("the URL in the clear is still used:\n%s", out)
	}
}

func TestInjectList(t *testing.T) {
	in := "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p\n    annotations:\n      busmesh.io/upstreams: a:9001\n  spec:\n    containers: [{name: app, image: app}]\n"
	out := run(t, []byte(in))
	if !bytes.Contains(out, []byte("- name: busmesh\n")) {
		t.Errorf("the List's Pod got no sidecar:\n%s", out)
	}
	if diff := cmp.Diff(string(run(t, out)), string(out)); diff != "" {
		t.Errorf("List injected twice vs once:\n%s", diff)
	}
}
