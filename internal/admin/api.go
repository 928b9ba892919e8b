package admin

import (
	"bytes"
	"context"
	"errors"
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

// MaxCallAnswer is the most of an answer, headers and body, that Call
// returns: a gRPC client takes messages of up to 4 MiB by default (the
// busmesh CLI's included), and the headroom is for the message's framing.
// The answer is held in the sidecar's memory until it is sent, so a larger
// one would also grow the sidecar by its size.
const MaxCallAnswer = 4<<20 - 64<<10

// Call makes an HTTP call through the ambassador, as an application would
// on the shared port. The answer comes back whole, up to MaxCallAnswer:
// past that the call is cancelled and Call fails with ResourceExhausted
// (large answers are for the ambassador's own ports). An X-Busmesh-Timeout
// among the request's headers wins over its timeout field.
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, method, "http://"+req.Service+path, bytes.NewReader(req.Body))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "request: %v", err)
	}
	for k, v := range req.Headers {
		httpReq.Header.Set(k, v)
	}
	// The caller's own header is what it asked the mesh for (-H on the
	// CLI); the field is the default.
	if req.Timeout != nil && httpReq.Header.Get(headerTimeout) == "" {
		httpReq.Header.Set(headerTimeout, req.Timeout.AsDuration().String())
	}
	rec := &cappedRecorder{rec: httptest.NewRecorder(), limit: MaxCallAnswer, cancel: cancel}
	start := time.Now()
	err = serveCall(calls, rec, httpReq)
	if rec.over { // the call was cancelled for it, whatever it ended with
		ambassador := "AMBASSADOR"
		for _, r := range a.s.parts().Routes {
			if r.Kind == "http-shared" {
				ambassador = r.Listen
			}
		}
		return nil, status.Errorf(codes.ResourceExhausted,
			"the answer of %s %s is over the %d bytes (4 MiB less 64 KiB) the admin API returns, so the call was cancelled; "+
				"fetch large or streamed answers from the ambassador's shared port directly: curl -H 'Host: %s' http://%s%s",
			method, req.Service, MaxCallAnswer, req.Service, ambassador, path)
	}
	if err != nil {
		return nil, err
	}
	res := rec.rec.Result()
	body, _ := io.ReadAll(res.Body) // in memory already, at most MaxCallAnswer
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

// headerTimeout sets a call's deadline on the ambassador
// (ambassador.HeaderTimeout).
const headerTimeout = "X-Busmesh-Timeout"

// serveCall runs h. The ambassador aborts an answer that breaks off after
// its status with http.ErrAbortHandler, which net/http recovers from; the
// gRPC server runs Call in a goroutine of its own, where that panic would
// end the sidecar.
func serveCall(h http.Handler, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = status.Error(codes.DataLoss, "the answer broke off after its status (the call's deadline or idle timeout passed, or the service's stream failed)")
		}
	}()
	h.ServeHTTP(w, r)
	return nil
}

// errAnswerTooLarge fails the write that takes an answer past its cap.
var errAnswerTooLarge = errors.New("admin call: answer over MaxCallAnswer")

// cappedRecorder records an answer of at most limit bytes, headers
// included. The write that would pass it fails and cancels the call, so
// that neither the sidecar's memory nor the call's time grows with the
// answer (a download, an event stream).
type cappedRecorder struct {
	rec    *httptest.ResponseRecorder
	limit  int
	size   int // of the headers, once written, and the body
	headed bool
	over   bool
	cancel context.CancelFunc
}

func (c *cappedRecorder) Header() http.Header { return c.rec.Header() }

func (c *cappedRecorder) WriteHeader(code int) {
	if !c.headed && code >= 200 {
		c.headed = true
		for k, vs := range c.rec.Header() {
			for _, v := range vs {
				c.size += len(k) + len(v) + 8 // the map entry's framing
			}
		}
		if c.size > c.limit {
			c.over = true
			c.cancel()
		}
	}
	c.rec.WriteHeader(code)
}

func (c *cappedRecorder) Write(p []byte) (int, error) {
	if !c.headed {
		c.WriteHeader(http.StatusOK)
	}
	if c.over || c.size+len(p) > c.limit {
		c.over = true
		c.cancel() // before the error: the ambassador takes the call as given up, not failed
		return 0, errAnswerTooLarge
	}
	c.size += len(p)
	return c.rec.Write(p)
}

// Flush is the ambassador's flush of a streamed answer: nothing to do.
func (c *cappedRecorder) Flush() { c.rec.Flush() }
