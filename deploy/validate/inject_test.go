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
	}{
		{"../kubernetes/inject/hello.yaml", []string{"hello", "caller"}},
		{"../../internal/inject/testdata/workloads.yaml", []string{"hello", "caller", "orders", "report", "agent"}},
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
			for _, o := range objs {
				if _, _, ok := podTemplate(o); !ok {
					continue
				}
				seen[o.name] = true
				w := checkSidecar(t, o, objs)
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
