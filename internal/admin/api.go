package admin

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// api implements busmeshv1.AdminServer.
type api struct {
	busmeshv1.UnimplementedAdminServer
	s *Server
}

func (a *api) ListServices(_ context.Context, req *busmeshv1.ListServicesRequest) (*busmeshv1.ListServicesResponse, error) {
	reg := a.s.parts().Registry
	resp := &busmeshv1.ListServicesResponse{}
	if reg == nil {
		return resp, nil
	}
	names := reg.Services()
	if req.Service != "" {
		names = []string{req.Service}
	}
	for _, name := range names {
		insts := reg.Instances(name)
		if len(insts) == 0 {
			continue
		}
		svc := &busmeshv1.Service{Name: name}
		for _, in := range insts {
			if in.Healthy {
				svc.Healthy++
			}
			svc.Instances = append(svc.Instances, &busmeshv1.Instance{
				Name:        in.Name,
				Version:     in.Version,
				Zone:        in.Zone,
				Labels:      in.Labels,
				Sidecar:     in.Sidecar,
				Healthy:     in.Healthy,
				Inflight:    uint32(in.Inflight),
				Concurrency: uint32(in.Concurrency),
				P50:         durationpb.New(in.P50),
				LastSeen:    timestamppb.New(in.LastSeen),
				Conflict:    in.Conflict,
			})
		}
		resp.Services = append(resp.Services, svc)
	}
	return resp, nil
}

func (a *api) GetStats(context.Context, *busmeshv1.GetStatsRequest) (*busmeshv1.GetStatsResponse, error) {
	st, err := gatherStats(a.s.opts.Metrics)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gather metrics: %v", err)
	}
	st.Sidecar = a.s.opts.Sidecar
	st.Uptime = durationpb.New(time.Since(a.s.started))
	return st, nil
}

func (a *api) GetHealth(context.Context, *busmeshv1.GetHealthRequest) (*busmeshv1.GetHealthResponse, error) {
	resp := &busmeshv1.GetHealthResponse{Sidecar: a.s.opts.Sidecar, Ready: a.s.ready.Load(), Broker: a.s.opts.Broker}
	if f := a.s.parts().Components; f != nil {
		resp.Components = f()
	}
	return resp, nil
}

// Call makes an HTTP call through the ambassador, as an application would
// on the shared port.
func (a *api) Call(ctx context.Context, req *busmeshv1.CallRequest) (*busmeshv1.CallResponse, error) {
	calls := a.s.parts().Calls
	if calls == nil {
		return nil, status.Error(codes.FailedPrecondition, "this sidecar has no ambassador to call through")
	}
	if req.Service == "" {
		return nil, status.Error(codes.InvalidArgument, "service is required")
	}
	method, path := req.Method, req.Path
	if method == "" {
		method = http.MethodGet
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	httpReq, err := http.NewRequestWithContext(ctx, method, "http://"+req.Service+path, bytes.NewReader(req.Body))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "request: %v", err)
	}
	for k, v := range req.Headers {
		httpReq.Header.Set(k, v)
	}
	if req.Timeout != nil {
		httpReq.Header.Set("X-Busmesh-Timeout", req.Timeout.AsDuration().String())
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	calls.ServeHTTP(rec, httpReq)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	out := &busmeshv1.CallResponse{
		Status:   int32(res.StatusCode),
		Headers:  map[string]string{},
		Body:     body,
		Duration: durationpb.New(time.Since(start)),
	}
	for k, vs := range res.Header {
		out.Headers[k] = strings.Join(vs, ", ")
	}
	return out, nil
}
