package validate

import (
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/busmesh/busmesh/internal/config"
)

const chartDir = "../helm/busmesh"

// render renders the chart as `helm template busmesh deploy/helm/busmesh
// -f valuesFile --set ...` would, in strict mode (a misspelt value path
// fails), and decodes every object strictly.
func render(t *testing.T, valuesFile string, set map[string]any) []object {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	vals := map[string]any{}
	if valuesFile != "" {
		if vals, err = chartutil.ReadValuesFile(filepath.Join(chartDir, valuesFile)); err != nil {
			t.Fatalf("read %s: %v", valuesFile, err)
		}
	}
	vals = chartutil.CoalesceTables(set, vals)
	objs, err := renderChart(ch, vals)
	if err != nil {
		t.Fatalf("render with %s %v: %v", valuesFile, set, err)
	}
	return objs
}

func renderChart(ch *chart.Chart, vals map[string]any) ([]object, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "busmesh", Namespace: "demo", IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	var objs []object
	for _, name := range slices.Sorted(maps.Keys(out)) {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(out[name]) == "" {
			continue
		}
		docs, err := decodeStrict(name, []byte(out[name]))
		if err != nil {
			return nil, err
		}
		objs = append(objs, docs...)
	}
	return objs, nil
}

func find[T any](t *testing.T, objs []object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.typed.(T); ok && o.name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T %q among %v", zero, name, objs)
	return zero
}

func kinds(objs []object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.kind+"/"+o.name)
	}
	slices.Sort(ks)
	return ks
}

func TestChartKubeVersion(t *testing.T) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	// Native sidecars are on by default from Kubernetes 1.29.
	for v, want := range map[string]bool{"v1.28.9": false, "v1.29.0": true, "v1.33.1": true} {
		if got := chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, v); got != want {
			t.Errorf("kubeVersion %q accepts %s: %v, want %v", ch.Metadata.KubeVersion, v, got, want)
		}
	}
}

// TestChartPerBroker renders the chart with each broker's values file.
func TestChartPerBroker(t *testing.T) {
	tests := []struct {
		values     string
		wantBroker string
		wantKinds  []string
	}{
		{"", "nats://nats:4222", nil},
		{"values-nats.yaml", "nats://busmesh-nats:4222", []string{"Deployment/busmesh-nats", "Service/busmesh-nats"}},
		{"values-kafka.yaml", "kafka://busmesh-kafka-bootstrap:9092", []string{"Kafka/busmesh", "KafkaNodePool/busmesh-dual-role"}},
		{"values-rabbitmq.yaml", "amqp://$(BUSMESH_RABBITMQ_USERNAME):$(BUSMESH_RABBITMQ_PASSWORD)@busmesh-rabbitmq:5672/", []string{"RabbitmqCluster/busmesh-rabbitmq"}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(cmpName(tt.values), ".yaml"), func(t *testing.T) {
			objs := render(t, tt.values, nil)
			want := append([]string{"ConfigMap/busmesh-busmesh", "Deployment/busmesh"}, tt.wantKinds...)
			slices.Sort(want)
			if got := kinds(objs); !slices.Equal(got, want) {
				t.Errorf("objects = %v, want %v", got, want)
			}
			d := find[*appsv1.Deployment](t, objs, "busmesh")
			w := checkSidecar(t, objects(objs, "busmesh")[0], objs)
			if w.broker.Value != tt.wantBroker {
				t.Errorf("BUSMESH_BROKER = %q, want %q", w.broker.Value, tt.wantBroker)
			}
			if a := w.config.Adapter; a == nil || a.Service != "hello" || a.Target != "http://127.0.0.1:8080" {
				t.Errorf("adapter = %+v, want service hello to http://127.0.0.1:8080", a)
			}
			if w.config.Ambassador != nil {
				t.Errorf("an ambassador without upstreams")
			}
			ann := d.Spec.Template.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "15000" || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("scrape annotations = %v", ann)
			}
			if d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *d.Spec.Template.Spec.TerminationGracePeriodSeconds < 31 {
				t.Errorf("terminationGracePeriodSeconds %v leaves the sidecar no 30s to drain", d.Spec.Template.Spec.TerminationGracePeriodSeconds)
			}
			if tt.values == "values-rabbitmq.yaml" {
				// $(VAR) expands only variables defined before it.
				env := w.container.Env
				i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == "BUSMESH_BROKER" })
				for _, v := range []string{"BUSMESH_RABBITMQ_USERNAME", "BUSMESH_RABBITMQ_PASSWORD"} {
					j := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == v })
					if j < 0 || j > i || env[j].ValueFrom.SecretKeyRef.Name != "busmesh-rabbitmq-default-user" {
						t.Errorf("%s is not set from busmesh-rabbitmq-default-user before BUSMESH_BROKER: %+v", v, env)
					}
				}
			}
			checkCustom(t, objs)
		})
	}
}

func cmpName(values string) string {
	if values == "" {
		return "defaults"
	}
	return values
}

func objects(objs []object, name string) []object {
	var out []object
	for _, o := range objs {
		if o.name == name && o.kind == "Deployment" {
			out = append(out, o)
		}
	}
	return out
}

// checkCustom checks the operators' resources loosely: the fields the
// mesh relies on.
func checkCustom(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		spec, _ := o.raw["spec"].(map[string]any)
		switch o.kind {
		case "KafkaNodePool":
			roles := fmt.Sprint(spec["roles"])
			if !strings.Contains(roles, "controller") || !strings.Contains(roles, "broker") {
				t.Errorf("%s: roles %s, want controller and broker (KRaft)", o, roles)
			}
		case "Kafka":
			k, _ := spec["kafka"].(map[string]any)
			if !strings.Contains(fmt.Sprint(k["listeners"]), "port:9092") {
				t.Errorf("%s: no listener on 9092: %v", o, k["listeners"])
			}
			if _, zk := spec["zookeeper"]; zk {
				t.Errorf("%s: has ZooKeeper; the mesh runs Kafka in KRaft mode", o)
			}
		case "RabbitmqCluster":
			if spec["replicas"] == nil {
				t.Errorf("%s: no replicas", o)
			}
		}
	}
}

// TestChartWiring renders a caller and callee with identity, token,
// upstreams, a broker Secret and extra config.
func TestChartWiring(t *testing.T) {
	objs := render(t, "", map[string]any{
		"app": map[string]any{"name": "orders"},
		"mesh": map[string]any{
			"name": "shop", "service": "orders", "protocol": "grpc", "health": "",
			"upstreams": map[string]any{"payments": 9001, "stock": 9002},
		},
		"broker":   map[string]any{"existingSecret": "broker-url", "urlKey": "amqp"},
		"admin":    map[string]any{"port": 15090, "token": map[string]any{"value": "s3cret"}},
		"identity": map[string]any{"secretName": "orders-identity"},
		"sidecar":  map[string]any{"extraConfig": map[string]any{"discovery": map[string]any{"interval": "1s"}}},
	})
	want := []string{"ConfigMap/orders-busmesh", "Deployment/orders", "Secret/orders-busmesh-admin-token"}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Fatalf("objects = %v, want %v", got, want)
	}
	w := checkSidecar(t, objects(objs, "orders")[0], objs)
	if r := w.broker.ValueFrom; r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != "broker-url" || r.SecretKeyRef.Key != "amqp" {
		t.Errorf("BUSMESH_BROKER = %+v, want the Secret broker-url, key amqp", w.broker)
	}
	if w.identity == nil || w.identity.Secret.SecretName != "orders-identity" {
		t.Errorf("identity volume = %+v, want the Secret orders-identity", w.identity)
	}
	c := w.config
	if c.Adapter == nil || c.Adapter.Target != "grpc://127.0.0.1:8080" || c.Adapter.Health == nil || !c.Adapter.Health.GRPC {
		t.Errorf("adapter = %+v, want grpc://127.0.0.1:8080 with the gRPC health check", c.Adapter)
	}
	if a := c.Ambassador; a == nil || a.Service != "orders" || a.HTTP != "127.0.0.1:15001" ||
		a.Upstreams["payments"] != "127.0.0.1:9001" || a.Upstreams["stock"] != "127.0.0.1:9002" {
		t.Errorf("ambassador = %+v", c.Ambassador)
	}
	if c.Mesh != "shop" {
		t.Errorf("mesh = %q, want shop (mesh.name)", c.Mesh)
	}
	if c.Discovery.Interval.D().String() != "1s" {
		t.Errorf("extraConfig's discovery.interval did not arrive: %v", c.Discovery.Interval.D())
	}
	d := find[*appsv1.Deployment](t, objs, "orders")
	if p := d.Spec.Template.Annotations["prometheus.io/port"]; p != "15090" {
		t.Errorf("prometheus.io/port = %q, want the admin port 15090", p)
	}
	secret := find[*corev1.Secret](t, objs, "orders-busmesh-admin-token")
	if string(secret.Data["token"]) != "s3cret" {
		t.Errorf("token Secret data = %q", secret.Data)
	}
	var token *corev1.EnvVar
	for i, e := range w.container.Env {
		if e.Name == "BUSMESH_ADMIN_TOKEN" {
			token = &w.container.Env[i]
		}
	}
	if token == nil || token.ValueFrom.SecretKeyRef.Name != secret.Name || token.ValueFrom.SecretKeyRef.Key != "token" {
		t.Errorf("BUSMESH_ADMIN_TOKEN = %+v, want the Secret %s", token, secret.Name)
	}
}

// TestChartAllow: allow rules go under adapter.allow with the identity
// they need, and the sidecar takes the config (checkSidecar parses it with
// identity files issued for it).
func TestChartAllow(t *testing.T) {
	allow := []any{map[string]any{"from": "web", "methods": []any{"GET"}, "paths": []any{"/orders/**"}}}
	objs := render(t, "", map[string]any{
		"app": map[string]any{"name": "orders"}, "mesh": map[string]any{"service": "orders"},
		"identity": map[string]any{"secretName": "orders-identity"}, "allow": allow,
		"admin": map[string]any{"metrics": map[string]any{"scrape": false}},
	})
	w := checkSidecar(t, objects(objs, "orders")[0], objs)
	want := []config.AllowRule{{From: "web", Methods: []string{"GET"}, Paths: []string{"/orders/**"}}}
	if a := w.config.Adapter; a == nil || !reflect.DeepEqual(a.Allow, want) {
		t.Errorf("adapter = %+v, want allow %+v", a, want)
	}
	if w.config.Identity == nil {
		t.Errorf("no identity in the config of a pod with identity.secretName")
	}
	d := find[*appsv1.Deployment](t, objs, "orders")
	if _, ok := d.Spec.Template.Annotations["prometheus.io/scrape"]; ok {
		t.Errorf("admin.metrics.scrape=false still adds the scrape annotations")
	}
}

// TestChartAppTLS: a grpcs application with appTLS gets its Secret
// mounted and named in adapter.tls, with the gRPC health check, and the
// sidecar takes the config (checkSidecar loads real files in their place).
func TestChartAppTLS(t *testing.T) {
	objs := render(t, "", map[string]any{
		"app":    map[string]any{"name": "billing"},
		"mesh":   map[string]any{"service": "billing", "protocol": "grpcs"},
		"appTLS": map[string]any{"secretName": "billing-client", "serverName": "billing.internal"},
	})
	w := checkSidecar(t, objects(objs, "billing")[0], objs)
	if w.appTLS == nil || w.appTLS.Secret.SecretName != "billing-client" {
		t.Errorf("app TLS volume = %+v, want the Secret billing-client", w.appTLS)
	}
	a := w.config.Adapter
	if a == nil || a.Target != "grpcs://127.0.0.1:8080" || a.Health == nil || !a.Health.GRPC || a.TLS == nil || a.TLS.ServerName != "billing.internal" {
		t.Errorf("adapter = %+v, want grpcs://127.0.0.1:8080, the gRPC health check and server_name billing.internal", a)
	}
}

func TestChartRefusesBadValues(t *testing.T) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		set  map[string]any
		want string
	}{
		// values.schema.json
		{map[string]any{"broker": map[string]any{"kind": "redis"}}, "/broker/kind"},
		{map[string]any{"mesh": map[string]any{"protocol": "tcp"}}, "/mesh/protocol"},
		{map[string]any{"appTLS": map[string]any{"secretName": "x"}}, "appTLS: TLS to the application needs mesh.protocol https or grpcs, not http"},
		{map[string]any{"mesh": map[string]any{"servce": "orders"}}, "servce"},
		{map[string]any{"mesh": map[string]any{"upstreams": map[string]any{"orders": "9001x"}}}, "/mesh/upstreams/orders"},
		{map[string]any{"admin": map[string]any{"port": 70000}}, "/admin/port"},
		// the templates
		{map[string]any{"mesh": map[string]any{"service": "", "upstreams": map[string]any{}}}, "mesh.service (to serve) or mesh.upstreams (to call) must be set"},
		{map[string]any{"broker": map[string]any{"url": ""}}, "broker.url: the broker URL"},
		{map[string]any{"allow": []any{map[string]any{"from": "web"}}}, "set identity.secretName"},
		{map[string]any{"allow": []any{map[string]any{"from": "web"}}, "mesh": map[string]any{"service": "", "upstreams": map[string]any{"x": 9001}}}, "allow: rules for who may call mesh.service"},
	}
	for _, tt := range tests {
		_, err := renderChart(ch, tt.set)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("render with %v: %v, want an error containing %q", tt.set, err, tt.want)
		}
	}
}
