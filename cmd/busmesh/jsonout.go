package main

import (
	"encoding/json"
	"io"
	"maps"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// The -o json views: plain JSON for scripts and jq, numbers as numbers
// (counts, milliseconds, seconds), bodies as text when they are text. The
// REST API on the admin port keeps protobuf JSON.

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// ms is a duration in milliseconds, null when unknown.
func ms(d *durationpb.Duration) *float64 {
	if d == nil {
		return nil
	}
	v := float64(d.AsDuration()) / float64(time.Millisecond)
	return &v
}

type instanceJSON struct {
	Name        string            `json:"name"`
	Sidecar     string            `json:"sidecar"`
	Version     string            `json:"version"`
	Zone        string            `json:"zone"`
	Labels      map[string]string `json:"labels"`
	Healthy     bool              `json:"healthy"`
	Inflight    uint32            `json:"inflight"`
	Concurrency uint32            `json:"concurrency"`
	P50Ms       *float64          `json:"p50_ms"`
	LastSeen    time.Time         `json:"last_seen"`
}

type serviceJSON struct {
	Name      string         `json:"name"`
	Healthy   int32          `json:"healthy"`
	Instances []instanceJSON `json:"instances"`
}

func servicesJSON(r *busmeshv1.ListServicesResponse) any {
	out := struct {
		Services []serviceJSON `json:"services"`
	}{Services: []serviceJSON{}}
	for _, s := range r.Services {
		sj := serviceJSON{Name: s.Name, Healthy: s.Healthy, Instances: []instanceJSON{}}
		for _, in := range s.Instances {
			labels := in.Labels
			if labels == nil {
				labels = map[string]string{}
			}
			sj.Instances = append(sj.Instances, instanceJSON{Name: in.Name, Sidecar: in.Sidecar, Version: in.Version,
				Zone: in.Zone, Labels: labels, Healthy: in.Healthy, Inflight: in.Inflight, Concurrency: in.Concurrency,
				P50Ms: ms(in.P50), LastSeen: in.LastSeen.AsTime().UTC()})
		}
		out.Services = append(out.Services, sj)
	}
	return out
}

type serviceStatsJSON struct {
	Service  string            `json:"service"`
	Requests uint64            `json:"requests"`
	Codes    map[string]uint64 `json:"codes"`
	Errors   map[string]uint64 `json:"errors"`
	Inflight uint64            `json:"inflight"`
	P50Ms    *float64          `json:"p50_ms"`
	P99Ms    *float64          `json:"p99_ms"`
}

func statsJSON(r *busmeshv1.GetStatsResponse) any {
	conv := func(in []*busmeshv1.ServiceStats) []serviceStatsJSON {
		out := []serviceStatsJSON{}
		for _, s := range in {
			out = append(out, serviceStatsJSON{Service: s.Service, Requests: s.Requests, Codes: nonNil(s.Codes),
				Errors: nonNil(s.Errors), Inflight: s.Inflight, P50Ms: ms(s.P50), P99Ms: ms(s.P99)})
		}
		return out
	}
	return struct {
		Sidecar    string             `json:"sidecar"`
		UptimeS    float64            `json:"uptime_s"`
		Ambassador []serviceStatsJSON `json:"ambassador"`
		Adapter    []serviceStatsJSON `json:"adapter"`
		Rejected   map[string]uint64  `json:"rejected"`
	}{r.Sidecar, r.Uptime.AsDuration().Seconds(), conv(r.Ambassador), conv(r.Adapter), nonNil(r.Rejected)}
}

func nonNil(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return maps.Clone(m)
}

func routesJSON(r *busmeshv1.ListRoutesResponse) any {
	type route struct {
		Kind    string `json:"kind"`
		Listen  string `json:"listen,omitempty"`
		Match   string `json:"match,omitempty"`
		Service string `json:"service"`
		Target  string `json:"target,omitempty"`
	}
	out := struct {
		Routes []route `json:"routes"`
		// Version is the routing table's (0: no ambassador).
		Version  uint64        `json:"version"`
		Services []trafficJSON `json:"services"`
	}{Routes: []route{}, Version: r.Version, Services: []trafficJSON{}}
	for _, rt := range r.Routes {
		out.Routes = append(out.Routes, route{rt.Kind, rt.Listen, rt.Match, rt.Service, rt.Target})
	}
	for _, s := range r.Services {
		out.Services = append(out.Services, serviceTrafficJSON(s))
	}
	return out
}

// trafficJSON is a service's entry in the routing table, with the config
// file's key names.
type trafficJSON struct {
	Service  string           `json:"service"`
	LB       string           `json:"lb"`
	Version  string           `json:"version,omitempty"`
	Routes   []trafficRoute   `json:"routes,omitempty"`
	Split    map[string]int32 `json:"split,omitempty"`
	Brokers  map[string]int32 `json:"brokers,omitempty"`
	Sticky   string           `json:"sticky,omitempty"`
	Fallback string           `json:"fallback,omitempty"`
	Mirror   *trafficMirror   `json:"mirror,omitempty"`
	// Source is "file" or "admin".
	Source string `json:"source"`
}

type trafficRoute struct {
	Match struct {
		Headers    map[string]string `json:"headers,omitempty"`
		PathPrefix string            `json:"path_prefix,omitempty"`
		GRPCMethod string            `json:"grpc_method,omitempty"`
		Caller     string            `json:"caller,omitempty"`
	} `json:"match"`
	Version string `json:"version"`
}

type trafficMirror struct {
	Version string `json:"version,omitempty"`
	Broker  string `json:"broker,omitempty"`
	Percent int32  `json:"percent"`
}

func serviceTrafficJSON(s *busmeshv1.ServiceTraffic) trafficJSON {
	r := s.GetRules()
	out := trafficJSON{Service: s.Service, LB: s.Lb, Version: s.Version, Split: r.GetSplit(), Brokers: r.GetBrokers(),
		Sticky: r.GetSticky(), Fallback: r.GetFallback(), Source: s.Source}
	for _, rt := range r.GetRoutes() {
		var j trafficRoute
		m := rt.GetMatch()
		j.Match.Headers, j.Match.PathPrefix, j.Match.GRPCMethod, j.Match.Caller = m.GetHeaders(), m.GetPathPrefix(), m.GetGrpcMethod(), m.GetCaller()
		j.Version = rt.Version
		out.Routes = append(out.Routes, j)
	}
	if m := r.GetMirror(); m != nil {
		out.Mirror = &trafficMirror{m.Version, m.Broker, m.Percent}
	}
	return out
}

// callJSON is a call's answer. Body is the body as text when it is UTF-8,
// else BodyBase64 holds it; MeshError is the X-Busmesh-Error reason when
// the mesh, not the service, answered.
type callJSON struct {
	Status     int32             `json:"status"`
	DurationMs float64           `json:"duration_ms"`
	MeshError  string            `json:"mesh_error,omitempty"`
	Instance   string            `json:"instance,omitempty"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body,omitempty"`
	BodyBase64 []byte            `json:"body_base64,omitempty"`
}

func callResponseJSON(r *busmeshv1.CallResponse) any {
	out := callJSON{Status: r.Status, DurationMs: float64(r.Duration.AsDuration()) / float64(time.Millisecond),
		MeshError: r.Headers["X-Busmesh-Error"], Instance: r.Headers["X-Busmesh-Instance"], Headers: r.Headers}
	if out.Headers == nil {
		out.Headers = map[string]string{}
	}
	if utf8.Valid(r.Body) {
		body := string(r.Body)
		out.Body = &body
	} else {
		out.BodyBase64 = r.Body
	}
	return out
}
