package admin

import (
	"context"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// GetTraffic reads the sidecar's window of recent traffic per edge, which
// the ambassador's and adapter's record functions feed.
func (a *api) GetTraffic(context.Context, *busmeshv1.GetTrafficRequest) (*busmeshv1.GetTrafficResponse, error) {
	w := a.s.opts.Metrics.Window
	resp := &busmeshv1.GetTrafficResponse{Sidecar: a.s.opts.Sidecar, Window: durationpb.New(w.Span())}
	edges, services := w.Snapshot()
	for i := range edges {
		resp.Edges = append(resp.Edges, edgeTraffic(&edges[i]))
	}
	for i := range services {
		resp.Services = append(resp.Services, edgeTraffic(&services[i]))
	}
	return resp, nil
}

func edgeTraffic(e *telemetry.EdgeStats) *busmeshv1.EdgeTraffic {
	return &busmeshv1.EdgeTraffic{
		Side:        e.Side,
		Caller:      e.Caller,
		Service:     e.Service,
		Requests:    e.Requests,
		Failures:    e.Failures,
		Rate:        e.Rate,
		SuccessRate: e.SuccessRate(),
		P50:         durationpb.New(e.P50),
		P99:         durationpb.New(e.P99),
		Inflight:    e.Inflight,
	}
}
