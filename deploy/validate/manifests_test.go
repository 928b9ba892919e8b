package validate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// loadDir decodes every YAML file of a deploy/kubernetes folder strictly.
func loadDir(t *testing.T, dir string) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("../kubernetes", dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := decodeStrict(f, b)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, docs...)
	}
	return objs
}

// TestManifestsDemo checks the demo applications' sidecars, and that each
// broker folder gives them what they need: the Secret busmesh-broker, or a
// documented way to make it.
func TestManifestsDemo(t *testing.T) {
	demo := loadDir(t, "demo")
	want := []string{"ConfigMap/caller-busmesh", "ConfigMap/hello-busmesh", "Deployment/caller", "Deployment/hello"}
	if got := kinds(demo); !slices.Equal(got, want) {
		t.Fatalf("demo objects = %v, want %v", got, want)
	}
	wirings := map[string]sidecarWiring{}
	for _, o := range demo {
		if o.kind != "Deployment" {
			continue
		}
		w := checkSidecar(t, o, demo)
		wirings[o.name] = w
		if r := w.broker.ValueFrom; r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != "busmesh-broker" || r.SecretKeyRef.Key != "url" {
			t.Errorf("%s: BUSMESH_BROKER = %+v, want the Secret busmesh-broker, key url", o, w.broker)
		}
		if w.identity == nil || w.identity.Secret.SecretName != o.name+"-identity" {
			t.Errorf("%s: identity = %+v, want the Secret %s-identity at /etc/busmesh/identity", o, w.identity, o.name)
		}
		ann, _, _ := podTemplate(o)
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "15000" {
			t.Errorf("%s: scrape annotations %v", o, ann)
		}
	}
	// The caller calls hello on the port its ambassador opens.
	if up := wirings["caller"].config.Ambassador.Upstreams["hello"]; up != "127.0.0.1:9001" {
		t.Errorf("caller's ambassador has hello on %q, want 127.0.0.1:9001", up)
	}
	if !strings.Contains(strings.Join(containerArgs(t, demo, "caller"), " "), "http://127.0.0.1:9001/") {
		t.Errorf("the caller application does not call 127.0.0.1:9001")
	}
	if a := wirings["hello"].config.Adapter; a.Service != "hello" || a.Target != "http://127.0.0.1:8080" {
		t.Errorf("hello's adapter = %+v", a)
	}

	for _, broker := range []struct{ dir, url string }{
		{"nats", "nats://nats:4222"},
		{"kafka", "kafka://busmesh-kafka-bootstrap:9092"},
		{"rabbitmq", ""}, // made from the operator's Secret, as the file says
	} {
		objs := loadDir(t, broker.dir)
		var url string
		for _, o := range objs {
			if s, ok := o.typed.(*corev1.Secret); ok && s.Name == "busmesh-broker" {
				url = s.StringData["url"]
			}
		}
		if url != broker.url {
			t.Errorf("%s: busmesh-broker url = %q, want %q", broker.dir, url, broker.url)
		}
		checkCustom(t, objs)
	}
	// The Services the URLs name exist: nats here; the operators make
	// busmesh-kafka-bootstrap (Kafka "busmesh") and busmesh-rabbitmq.
	nats := loadDir(t, "nats")
	if !slices.Contains(kinds(nats), "Service/nats") {
		t.Errorf("no Service nats in %v", kinds(nats))
	}
	if !slices.Contains(kinds(loadDir(t, "kafka")), "Kafka/busmesh") {
		t.Errorf("no Kafka named busmesh: busmesh-kafka-bootstrap would not exist")
	}
	rabbit := loadDir(t, "rabbitmq")
	if !slices.Contains(kinds(rabbit), "RabbitmqCluster/busmesh-rabbitmq") {
		t.Errorf("no RabbitmqCluster busmesh-rabbitmq")
	}
	b, err := os.ReadFile("../kubernetes/rabbitmq/rabbitmq.yaml")
	if err != nil || !strings.Contains(string(b), "kubectl create secret generic busmesh-broker --from-literal=url=") {
		t.Errorf("rabbitmq.yaml does not say how to make busmesh-broker (%v)", err)
	}
}

func containerArgs(t *testing.T, objs []object, workload string) []string {
	t.Helper()
	for _, o := range objs {
		if o.name == workload {
			if _, spec, ok := podTemplate(o); ok {
				return append(spec.Containers[0].Command, spec.Containers[0].Args...)
			}
		}
	}
	t.Fatalf("no workload %s", workload)
	return nil
}
