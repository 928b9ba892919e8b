package inject

import (
	"bytes"
	"fmt"
	"net"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/busmesh/busmesh/internal/config"
)

// Resources of the sidecar, sized from `make bench` (README, Benchmark):
// 25-26 MB resident idle, 34-35 MB at 32 concurrent calls, about 0.22 ms
// of CPU per call (2.1-2.3 s per 10,000). The memory request covers the
// loaded figure; the limit leaves room for bodies up to max_body_bytes in
// flight. 50m of CPU carries about 200 calls/s; there is no CPU limit, as
// throttling a proxy adds latency to every call (procs: 1 already keeps it
// to one CPU).
const (
	CPURequest    = "50m"
	MemoryRequest = "40Mi"
	MemoryLimit   = "128Mi"
)

// sidecarConfig is the part of config.Config inject writes; the broker
// comes from BUSMESH_BROKER.
type sidecarConfig struct {
	Mesh       string            `yaml:"mesh,omitempty"`
	Admin      string            `yaml:"admin"`
	Ambassador *ambassadorConfig `yaml:"ambassador,omitempty"`
	Adapter    *adapterConfig    `yaml:"adapter,omitempty"`
	Identity   *identityConfig   `yaml:"identity,omitempty"`
}

// identityConfig points the sidecar at the identity Secret's files, as
// mounted at IdentityDir.
type identityConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// mountedIdentity is the identity of a pod with AnnotationIdentity.
var mountedIdentity = &identityConfig{
	Cert: IdentityDir + "/tls.crt",
	Key:  IdentityDir + "/tls.key",
	CA:   IdentityDir + "/ca.crt",
}

type ambassadorConfig struct {
	Service   string            `yaml:"service"`
	HTTP      string            `yaml:"http"`
	Upstreams map[string]string `yaml:"upstreams,omitempty"`
}

type adapterConfig struct {
	Service string        `yaml:"service"`
	Target  string        `yaml:"target"`
	TLS     *appTLSConfig `yaml:"tls,omitempty"`
	Health  *healthConfig `yaml:"health,omitempty"`
}

// appTLSConfig is adapter.tls: the AnnotationAppTLS Secret's files, as
// mounted at AppTLSDir, and the name to verify.
type appTLSConfig struct {
	CA         string `yaml:"ca,omitempty"`
	ServerName string `yaml:"server_name,omitempty"`
	Cert       string `yaml:"cert,omitempty"`
	Key        string `yaml:"key,omitempty"`
}

type healthConfig struct {
	HTTP string `yaml:"http,omitempty"`
	GRPC bool   `yaml:"grpc,omitempty"`
}

// configFile returns the sidecar's config file for s, checked by the
// config package as the sidecar will check it. name is the workload's
// name, the ambassador's identity when the pod serves no service.
func configFile(s *spec, name string) (string, error) {
	c := sidecarConfig{Mesh: s.mesh, Admin: net.JoinHostPort("0.0.0.0", strconv.Itoa(AdminPort))}
	if s.service != "" {
		c.Adapter = &adapterConfig{Service: s.service, Target: fmt.Sprintf("%s://127.0.0.1:%d", s.protocol, s.port)}
		switch {
		case s.health != "":
			c.Adapter.Health = &healthConfig{HTTP: s.health}
		case s.protocol == "grpc" || s.protocol == "grpcs":
			c.Adapter.Health = &healthConfig{GRPC: true}
		}
		if s.appServerName != "" {
			c.Adapter.TLS = &appTLSConfig{ServerName: s.appServerName}
		}
	}
	if s.ambassador {
		caller := s.service
		if caller == "" {
			caller = name
		}
		c.Ambassador = &ambassadorConfig{Service: caller, HTTP: localhost(SharedPort)}
		if len(s.upstreams) > 0 {
			c.Ambassador.Upstreams = map[string]string{}
			for svc, p := range s.upstreams {
				c.Ambassador.Upstreams[svc] = localhost(p)
			}
		}
	}
	encode := func(c sidecarConfig) ([]byte, error) {
		var out bytes.Buffer
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(c); err != nil {
			return nil, fmt.Errorf("write sidecar config: %w", err)
		}
		return out.Bytes(), nil
	}
	// Checked without the identity's and the application TLS's files,
	// which exist only in the pod (the sidecar loads and checks them when
	// it starts).
	checked, err := encode(c)
	if err != nil {
		return "", err
	}
	url := s.broker
	if s.brokerSecret != "" {
		url = "nats://from-a-secret:4222" // checked when the sidecar starts
	}
	env := func(k string) (string, bool) { return url, k == config.EnvName("broker") }
	if _, err := config.Parse(AnnotationConfig, checked, env); err != nil {
		return "", err
	}
	if s.identity == "" && s.appTLS == "" {
		return string(checked), nil
	}
	if s.identity != "" {
		c.Identity = mountedIdentity
	}
	if s.appTLS != "" {
		tls := appTLSConfig{CA: AppTLSDir + "/ca.crt", Cert: AppTLSDir + "/tls.crt", Key: AppTLSDir + "/tls.key"}
		if c.Adapter.TLS != nil {
			tls.ServerName = c.Adapter.TLS.ServerName
		}
		c.Adapter.TLS = &tls
	}
	out, err := encode(c)
	return string(out), err
}

func localhost(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// The Kubernetes shapes inject writes, in the order a reader expects their
// fields. Field names are the API's; deploy/validate decodes the output
// strictly into k8s.io/api types.
type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Args            []string        `yaml:"args"`
	RestartPolicy   string          `yaml:"restartPolicy"`
	Ports           []containerPort `yaml:"ports"`
	Env             []envVar        `yaml:"env"`
	Resources       resources       `yaml:"resources"`
	SecurityContext securityContext `yaml:"securityContext"`
	StartupProbe    probe           `yaml:"startupProbe"`
	ReadinessProbe  probe           `yaml:"readinessProbe"`
	LivenessProbe   probe           `yaml:"livenessProbe"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type envVar struct {
	Name      string        `yaml:"name"`
	Value     string        `yaml:"value,omitempty"`
	ValueFrom *envVarSource `yaml:"valueFrom,omitempty"`
}

type envVarSource struct {
	SecretKeyRef     *secretKeyRef     `yaml:"secretKeyRef,omitempty"`
	ResourceFieldRef *resourceFieldRef `yaml:"resourceFieldRef,omitempty"`
}

type secretKeyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type resourceFieldRef struct {
	Resource string `yaml:"resource"`
	Divisor  string `yaml:"divisor,omitempty"`
}

type resources struct {
	Requests map[string]string `yaml:"requests"`
	Limits   map[string]string `yaml:"limits"`
}

type securityContext struct {
	RunAsNonRoot             bool           `yaml:"runAsNonRoot"`
	RunAsUser                int            `yaml:"runAsUser"`
	RunAsGroup               int            `yaml:"runAsGroup"`
	AllowPrivilegeEscalation bool           `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   bool           `yaml:"readOnlyRootFilesystem"`
	Capabilities             capabilities   `yaml:"capabilities"`
	SeccompProfile           seccompProfile `yaml:"seccompProfile"`
}

type capabilities struct {
	Drop []string `yaml:"drop"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type probe struct {
	HTTPGet          httpGet `yaml:"httpGet"`
	PeriodSeconds    int     `yaml:"periodSeconds"`
	TimeoutSeconds   int     `yaml:"timeoutSeconds,omitempty"`
	FailureThreshold int     `yaml:"failureThreshold"`
}

type httpGet struct {
	Path string `yaml:"path"`
	Port string `yaml:"port"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

// Volume names inject owns in a pod.
const (
	configVolume   = "busmesh-config"
	identityVolume = "busmesh-identity"
	appTLSVolume   = "busmesh-app-tls"
	adminPortName  = "busmesh-admin"
)

// sidecar returns the native sidecar container for s.
func sidecar(s *spec, image string) container {
	get := func(path string, period, failures int) probe {
		return probe{HTTPGet: httpGet{Path: path, Port: adminPortName}, PeriodSeconds: period, TimeoutSeconds: 2, FailureThreshold: failures}
	}
	brokerEnv := envVar{Name: config.EnvName("broker"), Value: s.broker}
	if s.brokerSecret != "" {
		brokerEnv = envVar{Name: brokerEnv.Name, ValueFrom: &envVarSource{SecretKeyRef: &secretKeyRef{Name: s.brokerSecret, Key: BrokerSecretKey}}}
	}
	c := container{
		Name:          ContainerName,
		Image:         image,
		Args:          []string{"sidecar", "--config", ConfigFile},
		RestartPolicy: "Always",
		Ports:         []containerPort{{Name: adminPortName, ContainerPort: AdminPort, Protocol: "TCP"}},
		Env: []envVar{
			brokerEnv,
			// A soft memory limit at the container's: the GC works harder
			// before the kernel kills the sidecar.
			{Name: "GOMEMLIMIT", ValueFrom: &envVarSource{ResourceFieldRef: &resourceFieldRef{Resource: "limits.memory", Divisor: "1"}}},
		},
		Resources: resources{
			Requests: map[string]string{"cpu": CPURequest, "memory": MemoryRequest},
			Limits:   map[string]string{"memory": MemoryLimit},
		},
		SecurityContext: securityContext{
			RunAsNonRoot: true, RunAsUser: RunAsUser, RunAsGroup: RunAsUser,
			ReadOnlyRootFilesystem: true,
			Capabilities:           capabilities{Drop: []string{"ALL"}},
			SeccompProfile:         seccompProfile{Type: "RuntimeDefault"},
		},
		// The application starts once the startup probe passes: the
		// ambassador's ports are open and the broker is connected.
		StartupProbe:   get("/readyz", 1, 60),
		ReadinessProbe: get("/readyz", 5, 3),
		LivenessProbe:  get("/healthz", 10, 3),
		VolumeMounts:   []volumeMount{{Name: configVolume, MountPath: ConfigDir, ReadOnly: true}},
	}
	if s.identity != "" {
		c.VolumeMounts = append(c.VolumeMounts, volumeMount{Name: identityVolume, MountPath: IdentityDir, ReadOnly: true})
	}
	if s.appTLS != "" {
		c.VolumeMounts = append(c.VolumeMounts, volumeMount{Name: appTLSVolume, MountPath: AppTLSDir, ReadOnly: true})
	}
	return c
}

type volume struct {
	Name        string        `yaml:"name"`
	DownwardAPI *downwardAPI  `yaml:"downwardAPI,omitempty"`
	Secret      *secretVolume `yaml:"secret,omitempty"`
}

type downwardAPI struct {
	Items []downwardAPIItem `yaml:"items"`
}

type downwardAPIItem struct {
	Path     string   `yaml:"path"`
	FieldRef fieldRef `yaml:"fieldRef"`
}

type fieldRef struct {
	FieldPath string `yaml:"fieldPath"`
}

type secretVolume struct {
	SecretName  string `yaml:"secretName"`
	DefaultMode int    `yaml:"defaultMode"`
}

// volumes returns the pod volumes the sidecar mounts.
func volumes(s *spec) []volume {
	vs := []volume{{Name: configVolume, DownwardAPI: &downwardAPI{Items: []downwardAPIItem{{
		Path: "sidecar.yaml", FieldRef: fieldRef{FieldPath: "metadata.annotations['" + AnnotationConfig + "']"},
	}}}}}
	if s.identity != "" {
		// 0444: the kubelet writes the files as root; the sidecar's
		// non-root user must read them, and no other process runs in its
		// container.
		vs = append(vs, volume{Name: identityVolume, Secret: &secretVolume{SecretName: s.identity, DefaultMode: 0o444}})
	}
	if s.appTLS != "" {
		vs = append(vs, volume{Name: appTLSVolume, Secret: &secretVolume{SecretName: s.appTLS, DefaultMode: 0o444}})
	}
	return vs
}

// toNode turns v into a YAML node tree.
func toNode(v any) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		panic(fmt.Sprintf("inject: encode %T: %v", v, err)) // our own types always encode
	}
	return &n
}
