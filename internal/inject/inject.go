package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Options says what Inject adds.
type Options struct {
	// Image is the sidecar's image (required).
	Image string
	// Broker is the broker URL of workloads without AnnotationBroker; empty
	// makes that annotation required.
	Broker string
}

// Result says what Inject did with one object.
type Result struct {
	// Doc is the object's document, counted from 1.
	Doc int
	// Kind and Name identify the object.
	Kind, Name string
	// Injected is true when the object has the sidecar now.
	Injected bool
	// Reason says why an object was left as it was.
	Reason string
}

// String reads "deployment/web injected" or "service/web skipped (not a
// workload)".
func (r Result) String() string {
	if r.Injected {
		return fmt.Sprintf("%s/%s injected", strings.ToLower(r.Kind), r.Name)
	}
	return fmt.Sprintf("%s/%s skipped (%s)", strings.ToLower(r.Kind), r.Name, r.Reason)
}

// ObjectError is a problem with one object of the input.
type ObjectError struct {
	// Doc is the document, counted from 1.
	Doc int
	// Kind and Name identify the object; empty when the document is not
	// an object.
	Kind, Name string
	Err        error
}

func (e *ObjectError) Error() string {
	if e.Kind == "" && e.Name == "" {
		return fmt.Sprintf("document %d: %v", e.Doc, e.Err)
	}
	return fmt.Sprintf("document %d (%s/%s): %v", e.Doc, e.Kind, e.Name, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }

// podSpecPath is where each kind keeps its pod template's metadata and
// spec (below the object's root); a Pod keeps them at the root.
var podSpecPath = map[string][]string{
	"Pod":         nil,
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// Inject reads YAML documents from r and writes them to w, each workload
// that asks for it (a busmesh.io/ annotation) with the sidecar added. It
// writes nothing when any object is in error, and returns every error, each
// an *ObjectError naming the document and object.
func Inject(r io.Reader, w io.Writer, opts Options) ([]Result, error) {
	if opts.Image == "" {
		return nil, errors.New("inject: no sidecar image")
	}
	var (
		out     bytes.Buffer
		results []Result
		errs    []error
	)
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	enc.CompactSeqIndent()
	dec := yaml.NewDecoder(r)
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The decoder cannot go on past a syntax error.
			errs = append(errs, &ObjectError{Doc: doc, Err: fmt.Errorf("not YAML: %w", err)})
			break
		}
		if len(n.Content) == 0 {
			continue // an empty document: nothing to keep
		}
		rs, err := injectObject(n.Content[0], doc, opts)
		results = append(results, rs...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := enc.Encode(&n); err != nil {
			errs = append(errs, &ObjectError{Doc: doc, Err: fmt.Errorf("write: %w", err)})
		}
	}
	if len(errs) > 0 {
		return results, errors.Join(errs...)
	}
	if err := enc.Close(); err != nil {
		return results, fmt.Errorf("inject: write: %w", err)
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		return results, fmt.Errorf("inject: write: %w", err)
	}
	return results, nil
}

// injectObject injects obj, the root of document doc, in place; a List
// has each of its items injected.
func injectObject(obj *yaml.Node, doc int, opts Options) ([]Result, error) {
	if obj.Kind != yaml.MappingNode {
		return nil, &ObjectError{Doc: doc, Err: errors.New("not a Kubernetes object (a mapping with apiVersion and kind)")}
	}
	kind, name := scalar(obj, "kind"), scalar(path(obj, "metadata"), "name")
	fail := func(format string, args ...any) error {
		return &ObjectError{Doc: doc, Kind: kind, Name: name, Err: fmt.Errorf(format, args...)}
	}
	if kind == "" || scalar(obj, "apiVersion") == "" {
		return nil, fail("not a Kubernetes object: apiVersion or kind is missing")
	}
	if strings.HasSuffix(kind, "List") {
		items := lookup(obj, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil, fail("items is not a list")
		}
		var (
			results []Result
			errs    []error
		)
		for _, item := range items.Content {
			rs, err := injectObject(item, doc, opts)
			results = append(results, rs...)
			errs = append(errs, err)
		}
		return results, errors.Join(errs...)
	}
	annotations := path(obj, "metadata", "annotations")
	at, workload := podSpecPath[kind]
	template := obj
	if len(at) > 0 {
		template = path(obj, at...)
	}
	podAnnotations := path(template, "metadata", "annotations")
	get := func(key string) (string, bool) {
		for _, m := range []*yaml.Node{podAnnotations, annotations} {
			if v := lookup(m, key); v != nil && v.Kind == yaml.ScalarNode {
				return v.Value, true
			}
		}
		return "", false
	}
	result := Result{Doc: doc, Kind: kind, Name: name}
	switch {
	case !requested(get):
		result.Reason = "no " + AnnotationService + " or " + AnnotationUpstreams + " annotation"
		return []Result{result}, nil
	case !workload:
		return nil, fail("cannot inject a %s: it has busmesh.io annotations but no pod template (kinds injected: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)", kind)
	case name == "":
		return nil, fail("metadata.name is missing")
	}
	podSpec := lookup(template, "spec")
	if podSpec == nil || podSpec.Kind != yaml.MappingNode || lookup(podSpec, "containers") == nil {
		return nil, fail("%s has no pod spec with containers", strings.Join(append(at, "spec"), "."))
	}
	s, err := parseSpec(get, opts.Broker)
	if err != nil {
		return nil, fail("%v", err)
	}
	cfg, err := configFile(s, name)
	if err != nil {
		return nil, fail("%v", err)
	}
	addSidecar(template, podSpec, s, cfg, opts.Image)
	result.Injected = true
	return []Result{result}, nil
}

// addSidecar edits the pod template in place: the config annotation, the
// scrape annotations (unless the pod has its own), the native sidecar
// first among the init containers, and its volumes. What a previous
// injection added is replaced where it stands.
func addSidecar(template, podSpec *yaml.Node, s *spec, cfg, image string) {
	meta := child(template, "metadata", yaml.MappingNode)
	annotations := child(meta, "annotations", yaml.MappingNode)
	cfgNode := str(cfg)
	cfgNode.Style = yaml.LiteralStyle
	set(annotations, AnnotationConfig, cfgNode)
	if lookup(annotations, "prometheus.io/scrape") == nil {
		set(annotations, "prometheus.io/scrape", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "true", Style: yaml.DoubleQuotedStyle})
		set(annotations, "prometheus.io/port", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(AdminPort), Style: yaml.DoubleQuotedStyle})
		set(annotations, "prometheus.io/path", str("/metrics"))
	}
	upsertNamed(child(podSpec, "initContainers", yaml.SequenceNode), ContainerName, toNode(sidecar(s, image)), true)
	vols := child(podSpec, "volumes", yaml.SequenceNode)
	removeNamed(vols, identityVolume) // the identity may have been dropped
	removeNamed(vols, appTLSVolume)   // so may the application's TLS
	for _, v := range volumes(s) {
		upsertNamed(vols, v.Name, toNode(v), false)
	}
}
