package admin

import (
	"math"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// gatherStats reads the sidecar's Prometheus metrics into the Admin API's
// stats: the metrics are the one record of traffic, the API a view of it.
func gatherStats(m *telemetry.Metrics) (*busmeshv1.GetStatsResponse, error) {
	families, err := m.Registry.Gather()
	if err != nil {
		return nil, err
	}
	amb, ad := map[string]*busmeshv1.ServiceStats{}, map[string]*busmeshv1.ServiceStats{}
	get := func(set map[string]*busmeshv1.ServiceStats, service string) *busmeshv1.ServiceStats {
		s := set[service]
		if s == nil {
			s = &busmeshv1.ServiceStats{Service: service, Codes: map[string]uint64{}, Errors: map[string]uint64{}}
			set[service] = s
		}
		return s
	}
	// A service's latency is spread over series (one per caller, instance
	// and protocol): their buckets are summed before the quantiles.
	type hist struct {
		stats  *busmeshv1.ServiceStats
		count  uint64
		bounds []float64
		counts []uint64
	}
	hists := map[*busmeshv1.ServiceStats]*hist{}
	merge := func(s *busmeshv1.ServiceStats, h *dto.Histogram) {
		m := hists[s]
		if m == nil {
			m = &hist{stats: s}
			hists[s] = m
		}
		m.count += h.GetSampleCount()
		for i, b := range h.Bucket {
			if i >= len(m.bounds) {
				m.bounds = append(m.bounds, b.GetUpperBound())
				m.counts = append(m.counts, 0)
			}
			m.counts[i] += b.GetCumulativeCount()
		}
	}
	code := func(l map[string]string) string {
		if c := l["grpc_code"]; c != "" {
			return c
		}
		return l["code"]
	}
	resp := &busmeshv1.GetStatsResponse{Rejected: map[string]uint64{}}
	for _, f := range families {
		for _, metric := range f.Metric {
			l := labels(metric)
			switch f.GetName() {
			case "busmesh_ambassador_requests_total":
				s := get(amb, l["service"])
				n := uint64(metric.GetCounter().GetValue())
				s.Requests += n
				s.Codes[code(l)] += n
			case "busmesh_ambassador_errors_total":
				get(amb, l["service"]).Errors[l["reason"]] += uint64(metric.GetCounter().GetValue())
			case "busmesh_ambassador_request_duration_seconds":
				merge(get(amb, l["service"]), metric.GetHistogram())
			case "busmesh_ambassador_inflight_requests":
				get(amb, l["service"]).Inflight += uint64(metric.GetGauge().GetValue())
			case "busmesh_adapter_requests_total":
				s := get(ad, l["service"])
				n := uint64(metric.GetCounter().GetValue())
				s.Requests += n
				s.Codes[code(l)] += n
			case "busmesh_adapter_request_duration_seconds":
				merge(get(ad, l["service"]), metric.GetHistogram())
			case "busmesh_adapter_inflight_requests":
				get(ad, l["service"]).Inflight = uint64(metric.GetGauge().GetValue())
			case "busmesh_envelopes_rejected_total":
				resp.Rejected[l["component"]+"/"+l["reason"]] += uint64(metric.GetCounter().GetValue())
			}
		}
	}
	for s, m := range hists {
		h := &dto.Histogram{SampleCount: &m.count}
		for i := range m.bounds {
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: &m.bounds[i], CumulativeCount: &m.counts[i]})
		}
		s.P50, s.P99 = quantile(h, 0.5), quantile(h, 0.99)
	}
	resp.Ambassador, resp.Adapter = sorted(amb), sorted(ad)
	return resp, nil
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.Label))
	for _, p := range m.Label {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func sorted(set map[string]*busmeshv1.ServiceStats) []*busmeshv1.ServiceStats {
	out := make([]*busmeshv1.ServiceStats, 0, len(set))
	for _, s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// quantile estimates a quantile from histogram buckets by linear
// interpolation within the bucket, as Prometheus's histogram_quantile does.
func quantile(h *dto.Histogram, q float64) *durationpb.Duration {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return nil
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range h.Bucket {
		count := float64(b.GetCumulativeCount())
		if count >= rank {
			bound := b.GetUpperBound()
			if math.IsInf(bound, 1) || count == prevCount {
				return durationpb.New(seconds(prevBound))
			}
			return durationpb.New(seconds(prevBound + (bound-prevBound)*(rank-prevCount)/(count-prevCount)))
		}
		prevBound, prevCount = b.GetUpperBound(), count
	}
	return durationpb.New(seconds(prevBound))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
