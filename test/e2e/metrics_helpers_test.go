package e2e

import (
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads the sidecar's /metrics into metric families by name.
func (s *sidecar) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("parse /metrics of %s: %v", s.name, err)
	}
	return families
}

// sum adds up the samples of a counter, gauge or histogram (its count) on
// the sidecar's /metrics whose labels include want ("" matches a label
// that is absent or empty).
func (s *sidecar) sum(name string, want map[string]string) float64 {
	s.t.Helper()
	return sumOf(s.scrape()[name], want)
}

func sumOf(f *dto.MetricFamily, want map[string]string) float64 {
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.Metric {
		if !matches(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.Label {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// series counts the samples of a metric family.
func (s *sidecar) series(name string) int {
	s.t.Helper()
	if f := s.scrape()[name]; f != nil {
		return len(f.Metric)
	}
	return 0
}
