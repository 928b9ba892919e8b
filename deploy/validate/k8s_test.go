package validate

import (
	"bufio"
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/testutil"
)

// object is one decoded manifest document.
type object struct {
	source     string // file and document, for messages
	apiVersion string
	kind       string
	name       string
	typed      any            // the k8s.io/api type, nil for custom resources
	raw        map[string]any // every object, loosely
}

func (o object) String() string { return fmt.Sprintf("%s %s/%s", o.source, o.kind, o.name) }

// customKinds are the operators' resources the manifests may hold; they
// have no types in k8s.io/api and are checked loosely.
var customKinds = []string{
	"kafka.strimzi.io/v1beta2/Kafka",
	"kafka.strimzi.io/v1beta2/KafkaNodePool",
	"rabbitmq.com/v1beta1/RabbitmqCluster",
}

func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/Pod":
		return &corev1.Pod{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}
	}
	return nil
}

// decodeStrict splits a YAML stream into documents and decodes each into
// its k8s.io/api type; an unknown or misspelt field, a duplicate key or a
// kind without a type (other than customKinds) is an error.
func decodeStrict(source string, data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for doc := 1; ; doc++ {
		b, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		var raw map[string]any
		if err := yaml.UnmarshalStrict(b, &raw); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		if raw == nil {
			continue // only comments
		}
		o := object{source: fmt.Sprintf("%s#%d", source, doc), raw: raw}
		o.apiVersion, _ = raw["apiVersion"].(string)
		o.kind, _ = raw["kind"].(string)
		if meta, ok := raw["metadata"].(map[string]any); ok {
			o.name, _ = meta["name"].(string)
		}
		if o.name == "" {
			return nil, fmt.Errorf("%s: no metadata.name", o)
		}
		o.typed = newTyped(o.apiVersion, o.kind)
		switch {
		case o.typed != nil:
			if err := yaml.UnmarshalStrict(b, o.typed); err != nil {
				return nil, fmt.Errorf("%s: %w", o, err)
			}
		case !slices.Contains(customKinds, o.apiVersion+"/"+o.kind):
			return nil, fmt.Errorf("%s: %s %s is no kind these manifests should hold", o, o.apiVersion, o.kind)
		}
		objs = append(objs, o)
	}
}

// podTemplate returns the pod metadata and spec of a workload.
func podTemplate(o object) (annotations map[string]string, spec *corev1.PodSpec, ok bool) {
	switch v := o.typed.(type) {
	case *corev1.Pod:
		return v.Annotations, &v.Spec, true
	case *appsv1.Deployment:
		return v.Spec.Template.Annotations, &v.Spec.Template.Spec, true
	case *appsv1.StatefulSet:
		return v.Spec.Template.Annotations, &v.Spec.Template.Spec, true
	case *appsv1.DaemonSet:
		return v.Spec.Template.Annotations, &v.Spec.Template.Spec, true
	case *batchv1.Job:
		return v.Spec.Template.Annotations, &v.Spec.Template.Spec, true
	case *batchv1.CronJob:
		return v.Spec.JobTemplate.Spec.Template.Annotations, &v.Spec.JobTemplate.Spec.Template.Spec, true
	}
	return nil, nil, false
}

// sidecarWiring is what checkSidecar found, for the caller's own checks.
type sidecarWiring struct {
	container *corev1.Container
	config    *config.Config
	broker    *corev1.EnvVar
	identity  *corev1.Volume
	appTLS    *corev1.Volume // the adapter's TLS to its application
}

// checkSidecar checks the busmesh native sidecar of a pod: restart policy,
// image and arguments, the admin port, probes, env, mounts, resources and
// the non-root security context; and parses its config file (from the
// ConfigMap among objs or the downward-API annotation) as the sidecar
// does. It returns what it found.
func checkSidecar(t *testing.T, o object, objs []object) sidecarWiring {
	t.Helper()
	annotations, spec, ok := podTemplate(o)
	if !ok {
		t.Fatalf("%s: not a workload", o)
	}
	var w sidecarWiring
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == "busmesh" {
			w.container = &spec.InitContainers[i]
			if i != 0 {
				t.Errorf("%s: busmesh is init container %d; first, it serves the init containers after it too", o, i)
			}
		}
	}
	for _, c := range spec.Containers {
		if c.Name == "busmesh" {
			t.Errorf("%s: busmesh is an ordinary container; it must be a native sidecar (an init container)", o)
		}
	}
	c := w.container
	if c == nil {
		t.Fatalf("%s: no busmesh init container", o)
	}
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: busmesh restartPolicy = %v, want Always (a native sidecar)", o, c.RestartPolicy)
	}
	if c.Image == "" {
		t.Errorf("%s: busmesh has no image", o)
	}
	if want := []string{"sidecar", "--config", "/etc/busmesh/config/sidecar.yaml"}; !slices.Equal(c.Args, want) || len(c.Command) > 0 {
		t.Errorf("%s: busmesh command %q args %q, want the image's entrypoint with %q", o, c.Command, c.Args, want)
	}

	// The admin port: declared, probed, scraped.
	var adminPort int32
	for _, p := range c.Ports {
		if p.Name == "busmesh-admin" {
			adminPort = p.ContainerPort
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				t.Errorf("%s: busmesh-admin protocol %s", o, p.Protocol)
			}
		}
	}
	if adminPort == 0 {
		t.Fatalf("%s: busmesh declares no busmesh-admin port", o)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startupProbe", c.StartupProbe, "/readyz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}}
	for _, p := range probes {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("%s: busmesh %s is not an httpGet", o, p.name)
		case p.probe.HTTPGet.Path != p.path:
			t.Errorf("%s: busmesh %s path %q, want %q", o, p.name, p.probe.HTTPGet.Path, p.path)
		case p.probe.HTTPGet.Port != intstr.FromString("busmesh-admin") && p.probe.HTTPGet.Port != intstr.FromInt32(adminPort):
			t.Errorf("%s: busmesh %s port %s, want busmesh-admin", o, p.name, p.probe.HTTPGet.Port.String())
		}
	}
	if annotations["prometheus.io/scrape"] == "true" && annotations["prometheus.io/port"] == "" {
		t.Errorf("%s: prometheus.io/scrape without prometheus.io/port", o)
	}

	// Env: the broker, and a Go memory limit from the container's.
	for i, e := range c.Env {
		switch e.Name {
		case "BUSMESH_BROKER":
			w.broker = &c.Env[i]
			if e.Value == "" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Errorf("%s: BUSMESH_BROKER has neither a value nor a Secret", o)
			}
		case "GOMEMLIMIT":
			if e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
				t.Errorf("%s: GOMEMLIMIT = %+v, want the container's limits.memory", o, e)
			}
		}
	}
	if w.broker == nil {
		t.Errorf("%s: busmesh has no BUSMESH_BROKER", o)
	}

	// Resources: the request holds the measured RSS under load (35 MB).
	req, lim := c.Resources.Requests[corev1.ResourceMemory], c.Resources.Limits[corev1.ResourceMemory]
	if req.Cmp(resource.MustParse("35Mi")) < 0 || lim.Cmp(req) < 0 {
		t.Errorf("%s: busmesh memory request %s limit %s; want a request of at least 35Mi (measured RSS under load) and a limit above it", o, req.String(), lim.String())
	}
	if cpu := c.Resources.Requests[corev1.ResourceCPU]; cpu.IsZero() {
		t.Errorf("%s: busmesh requests no CPU", o)
	}

	// Non-root, read-only, no privileges.
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: busmesh has no securityContext", o)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0:
		t.Errorf("%s: busmesh runAsNonRoot %s runAsUser %s, want a non-root user", o, show(sc.RunAsNonRoot), show(sc.RunAsUser))
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: busmesh allows privilege escalation", o)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: busmesh root filesystem is writable", o)
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Errorf("%s: busmesh keeps capabilities", o)
	}

	// Mounts: the config, and the identity where one is given.
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	var configText string
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		if v == nil {
			t.Errorf("%s: busmesh mounts %s, which the pod does not have", o, m.Name)
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: busmesh mounts %s writable", o, m.Name)
		}
		switch m.MountPath {
		case "/etc/busmesh/config":
			configText = configFrom(t, o, v, annotations, objs)
		case "/etc/busmesh/identity":
			if v.Secret == nil || v.Secret.SecretName == "" {
				t.Errorf("%s: /etc/busmesh/identity is no Secret", o)
			}
			w.identity = v
		case "/etc/busmesh/app-tls":
			if v.Secret == nil || v.Secret.SecretName == "" {
				t.Errorf("%s: /etc/busmesh/app-tls is no Secret", o)
			}
			w.appTLS = v
		default:
			t.Errorf("%s: busmesh mounts %s at %s", o, m.Name, m.MountPath)
		}
	}
	if configText == "" {
		t.Fatalf("%s: busmesh has no config at /etc/busmesh/config/sidecar.yaml", o)
	}
	// The Secrets' files exist only in the pod: real ones issued here
	// take their place, so that Parse loads and checks them as the sidecar
	// would.
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(configText), &raw); err != nil {
		t.Fatalf("%s: sidecar.yaml: %v", o, err)
	}
	withIdentityFiles(t, o, raw, w.identity)
	withAppTLSFiles(t, o, raw, w.appTLS)
	out, err := yaml.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	configText = string(out)
	broker := "nats://broker-from-a-secret:4222"
	if w.broker != nil && w.broker.Value != "" && !strings.Contains(w.broker.Value, "$(") {
		broker = w.broker.Value
	}
	env := func(k string) (string, bool) { return broker, k == "BUSMESH_BROKER" }
	cfg, err := config.Parse(o.String()+" sidecar.yaml", []byte(configText), env)
	if err != nil {
		t.Fatalf("%s: the sidecar would refuse its config: %v\n%s", o, err, configText)
	}
	w.config = cfg
	if want := fmt.Sprintf("0.0.0.0:%d", adminPort); cfg.Admin != want {
		t.Errorf("%s: config admin = %q, want %q (the declared, probed port on the pod's address)", o, cfg.Admin, want)
	}
	return w
}

// configFrom returns the sidecar.yaml a config volume projects.
func configFrom(t *testing.T, o object, v *corev1.Volume, annotations map[string]string, objs []object) string {
	t.Helper()
	switch {
	case v.ConfigMap != nil:
		for _, other := range objs {
			if cm, ok := other.typed.(*corev1.ConfigMap); ok && cm.Name == v.ConfigMap.Name {
				if s, ok := cm.Data["sidecar.yaml"]; ok {
					return s
				}
				t.Errorf("%s: ConfigMap %s has no sidecar.yaml", o, cm.Name)
				return ""
			}
		}
		t.Errorf("%s: ConfigMap %s is not among the manifests", o, v.ConfigMap.Name)
	case v.DownwardAPI != nil:
		for _, it := range v.DownwardAPI.Items {
			if it.Path != "sidecar.yaml" || it.FieldRef == nil {
				continue
			}
			key, ok := strings.CutPrefix(it.FieldRef.FieldPath, "metadata.annotations['")
			if !ok {
				t.Errorf("%s: sidecar.yaml comes from %s, not an annotation", o, it.FieldRef.FieldPath)
				return ""
			}
			return annotations[strings.TrimSuffix(key, "']")]
		}
		t.Errorf("%s: the downward API volume has no sidecar.yaml", o)
	default:
		t.Errorf("%s: the config volume is neither a ConfigMap nor the downward API", o)
	}
	return ""
}

// show prints what a pointer points to, or nil.
func show[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// mountedIdentity is where a sidecar's config names the identity Secret's
// files, as mounted.
var mountedIdentity = map[string]any{
	"cert": "/etc/busmesh/identity/tls.crt",
	"key":  "/etc/busmesh/identity/tls.key",
	"ca":   "/etc/busmesh/identity/ca.crt",
}

// withIdentityFiles checks that a config c names the identity Secret's
// files where the pod mounts them, if it mounts a Secret it requires (an
// optional one may be there for later), and points those paths at real
// identity files for its mesh and service, issued here.
func withIdentityFiles(t *testing.T, o object, c map[string]any, mounted *corev1.Volume) {
	t.Helper()
	id, named := c["identity"].(map[string]any)
	required := mounted != nil && (mounted.Secret.Optional == nil || !*mounted.Secret.Optional)
	switch {
	case !named && required:
		t.Errorf("%s: the identity Secret %s is mounted, but sidecar.yaml names no identity: the sidecar would run without it", o, mounted.Secret.SecretName)
		return
	case !named:
		return
	case mounted == nil:
		t.Errorf("%s: sidecar.yaml names identity files, but no Secret is mounted at /etc/busmesh/identity", o)
	}
	for k, want := range mountedIdentity {
		if id[k] != want {
			t.Errorf("%s: identity.%s = %v, want %s (the mounted Secret's file)", o, k, id[k], want)
		}
	}
	mesh, _ := c["mesh"].(string)
	if mesh == "" {
		mesh = "default"
	}
	var service string
	for _, side := range []string{"adapter", "ambassador"} {
		if m, ok := c[side].(map[string]any); ok && service == "" {
			service, _ = m["service"].(string)
		}
	}
	now := time.Now()
	ca, err := identity.NewCA(mesh, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(service, time.Hour, now)
	if err != nil {
		t.Fatalf("%s: issue an identity for service %q: %v", o, service, err)
	}
	dir := t.TempDir()
	files := map[string]any{}
	for k, data := range map[string][]byte{"cert": certPEM, "key": keyPEM, "ca": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert().Raw})} {
		files[k] = filepath.Join(dir, k+".pem")
		if err := os.WriteFile(files[k].(string), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c["identity"] = files
}

// withAppTLSFiles checks that an adapter config c names the application
// TLS Secret's files where the pod mounts them, if it mounts one, and
// points those paths at real files (a CA and a client certificate issued
// here).
func withAppTLSFiles(t *testing.T, o object, c map[string]any, mounted *corev1.Volume) {
	t.Helper()
	adapter, _ := c["adapter"].(map[string]any)
	tlsCfg, _ := adapter["tls"].(map[string]any)
	files := map[string]string{"ca": "/etc/busmesh/app-tls/ca.crt", "cert": "/etc/busmesh/app-tls/tls.crt", "key": "/etc/busmesh/app-tls/tls.key"}
	switch {
	case mounted == nil:
		for k := range files {
			if tlsCfg[k] != nil {
				t.Errorf("%s: adapter.tls.%s is set, but no Secret is mounted at /etc/busmesh/app-tls", o, k)
			}
		}
		return
	case tlsCfg == nil:
		t.Errorf("%s: the application TLS Secret %s is mounted, but the adapter's config names no adapter.tls", o, mounted.Secret.SecretName)
		return
	}
	ca := testutil.NewCA(t, "app CA")
	cert, key := ca.WriteFiles(t, ca.Client(t, "adapter"), "adapter")
	real := map[string]string{"ca": ca.File, "cert": cert, "key": key}
	for k, want := range files {
		if tlsCfg[k] != want {
			t.Errorf("%s: adapter.tls.%s = %v, want %s (the mounted Secret's file)", o, k, tlsCfg[k], want)
		}
		tlsCfg[k] = real[k]
	}
}
