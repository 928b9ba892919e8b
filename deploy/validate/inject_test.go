package validate

import (
	"bytes"
	"os"
	"testing"

	"github.com/busmesh/busmesh/internal/inject"
)

// TestInjectOutput runs busmesh inject's code on the sample workloads and
// decodes what it writes strictly into the k8s.io/api types.
func TestInjectOutput(t *testing.T) {
	for _, tt := range []struct {
		file     string
		injected []string
		oneMesh  bool // the workloads call each other: all with identities or none
	}{
		{"../kubernetes/inject/hello.yaml", []string{"hello", "caller"}, true},
		{"../../internal/inject/testdata/workloads.yaml", []string{"hello", "caller", "orders", "report", "agent"}, false},
	} {
		t.Run(tt.file, func(t *testing.T) {
			in, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			opts := inject.Options{Image: "busmesh:test", Broker: "nats://nats:4222"}
			var out bytes.Buffer
			if _, err := inject.Inject(bytes.NewReader(in), &out, opts); err != nil {
				t.Fatalf("inject: %v", err)
			}
			objs, err := decodeStrict("inject "+tt.file, out.Bytes())
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			before, err := decodeStrict(tt.file, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != len(before) {
				t.Errorf("inject wrote %d objects of %d", len(objs), len(before))
			}
			seen := map[string]bool{}
			withIdentity := map[bool][]string{}
			for _, o := range objs {
				if _, _, ok := podTemplate(o); !ok {
					continue
				}
				seen[o.name] = true
				w := checkSidecar(t, o, objs)
				withIdentity[w.identity != nil] = append(withIdentity[w.identity != nil], o.name)
				if w.container.Image != "busmesh:test" {
					t.Errorf("%s: image %q", o, w.container.Image)
				}
				if o.name == "agent" {
					if r := w.broker.ValueFrom; r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != "broker-credentials" || r.SecretKeyRef.Key != "url" {
						t.Errorf("%s: BUSMESH_BROKER = %+v, want the Secret broker-credentials, key url", o, w.broker)
					}
				} else if w.broker.Value == "" {
					t.Errorf("%s: BUSMESH_BROKER has no value", o)
				}
			}
			if tt.oneMesh && len(withIdentity[true]) > 0 && len(withIdentity[false]) > 0 {
				// An adapter with an identity drops unsigned requests: a
				// caller without one would wait out its timeout on every call.
				t.Errorf("%v have identities and %v none: calls between them are dropped", withIdentity[true], withIdentity[false])
			}
			for _, name := range tt.injected {
				if !seen[name] {
					t.Errorf("%s was not injected", name)
				}
			}
			var again bytes.Buffer
			if _, err := inject.Inject(bytes.NewReader(out.Bytes()), &again, opts); err != nil {
				t.Fatalf("inject of the injected: %v", err)
			}
			if again.String() != out.String() {
				t.Errorf("inject twice differs from once")
			}
		})
	}
}
