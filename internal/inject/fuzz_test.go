package inject_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/busmesh/busmesh/internal/inject"
)

// FuzzInject feeds Inject arbitrary input: it never panics, and what it
// writes, injected again, comes out the same.
func FuzzInject(f *testing.F) {
	for _, file := range []string{"testdata/workloads.yaml", "testdata/workloads.golden.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: &m\n  name: p\n  annotations: {busmesh.io/upstreams: 'a:9001'}\nspec:\n  containers: [{name: app}]\n  initContainers: *m\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {name: p, annotations: {busmesh.io/service: s, busmesh.io/port: '1'}}, spec: {containers: []}}]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var once bytes.Buffer
		if _, err := inject.Inject(bytes.NewReader(in), &once, opts); err != nil {
			return
		}
		var twice bytes.Buffer
		if _, err := inject.Inject(bytes.NewReader(once.Bytes()), &twice, opts); err != nil {
			t.Fatalf("injecting the output failed: %v\ninput:\n%s\noutput:\n%s", err, in, once.Bytes())
		}
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("twice differs from once\ninput:\n%s\nonce:\n%s\ntwice:\n%s", in, once.Bytes(), twice.Bytes())
		}
	})
}
