package ambassador

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Call is one call on its way through the ambassador, whatever protocol the
// application spoke: a listener translates the application's request into
// a Call, the pipeline (Invoker and its Middleware) carries it over the bus
// until its answer's head is in, and the listener translates the answer
// back. Calls are pooled: nothing may keep one after the listener ends it.
type Call struct {
	// Route is where the call goes; nil when the request named no service.
	Route *Route
	// Req is the request envelope, filled by the listener (method, path,
	// headers, host) and by the pipeline (id, addressing, body).
	Req envelope.Request
	// Body is the request body's source.
	Body Body
	// Start is when the call arrived; Deadline when its caller gives up,
	// zero for a call without a deadline (timeout: none, an event stream,
	// a gRPC call whose caller set none).
	Start, Deadline time.Time
	// Version is the version subset the call goes to ("" for any), and
	// Subject where it goes in queue mode: the route's, until traffic
	// rules choose another.
	Version, Subject string

	p      pending       // what arrives from the serving adapter
	lane   *lane         // the broker the call goes over: the primary, or a brokers split's pick
	pick   pickResult    // the instance picked in direct mode
	pump   chan struct{} // closed when the rest of the body has been sent
	cancel context.CancelFunc
	out    Outcome
	ends   []func(*Outcome)
	idle   *idleWatch      // ends a call with no byte moving, or whose head is late, when set
	headBy time.Time       // a call without a deadline: when its answer's head is due (awaitHead)
	edge   *telemetry.Edge // the call's edge: metrics labels and window
	// relabeled: relabel looked for the service of a call on the Unknown
	// edge once already (its lookup takes the registry's lock).
	relabeled bool
	// bytesOut counts the answer's body streamed in frames, for the
	// access log.
	bytesOut int64
	// http is the HTTP listener's Body, kept in the pooled call so that
	// a call does not allocate one.
	http httpBody
	// try is the state of the call's current attempt (retry.go); replay
	// its Body when it may be retried.
	try    attempt
	replay replayBody
}

// Body is where a call's request body comes from.
type Body interface {
	// First reads the part of the body that travels in the request
	// envelope, at most room bytes; more says the rest follows in frames.
	First(room int) (data []byte, more bool, err error)
	// Rest sends the rest of the body, once the adapter has accepted the
	// call, through s. An error fails the call.
	Rest(ctx context.Context, s *stream.Sender) error
}

// Outcome is how a call ended, as its caller saw it. The listener sets it;
// it is counted when the call ends.
type Outcome struct {
	// Status is the HTTP status the caller got (for gRPC, the HTTP/2
	// status, 200), or reason.StatusClientClosed when the caller left.
	Status int
	// GRPC says the call was gRPC; Code is then its status code.
	GRPC bool
	Code codes.Code
	// Reason is why the mesh answered, None when the application did.
	Reason reason.Reason
	// ReasonText is Reason as the adapter named it (a newer adapter's
	// reason may be Unknown here).
	ReasonText string
	// Latency is the time from the call's arrival to its answer's head.
	Latency time.Duration
}

var callPool = sync.Pool{New: func() any {
	c := &Call{}
	c.p.ready = make(chan struct{}, 1)
	return c
}}

// OnEnd registers f to run when the call ends, with its outcome: how
// middleware learns what became of a call it passed on (hooks run in the
// reverse order of registration).
func (c *Call) OnEnd(f func(*Outcome)) { c.ends = append(c.ends, f) }

// Answer returns the head of the adapter's answer. It is valid once the
// Invoker has returned without error, until the call ends.
func (c *Call) Answer() *envelope.Response { return &c.p.resp }

// answeredBy sets the outcome of an answer the application gave.
func (c *Call) answeredBy(status int) {
	c.out.Status, c.out.Latency = status, time.Since(c.Start)
}

// failedWith sets the outcome of a call the mesh answered.
func (c *Call) failedWith(r reason.Reason, text string) {
	c.out.Reason, c.out.ReasonText = r, text
	if !c.out.GRPC {
		c.out.Status = r.HTTPStatus()
	} else {
		c.out.Status, c.out.Code = 200, r.GRPCCode()
	}
	c.out.Latency = time.Since(c.Start)
}

// nearDeadline reports whether the call's deadline has passed, or
// nearly: a caller that gave up then counts as timed out.
func (c *Call) nearDeadline() bool {
	return !c.Deadline.IsZero() && time.Until(c.Deadline) < callerClockSlack
}

// reset readies a pooled call for its next use, keeping the capacity of
// its header list but nothing it pointed to.
func (c *Call) reset() {
	h := c.Req.Headers
	clear(h[:cap(h)])
	c.Route, c.Body, c.pump, c.cancel, c.http, c.idle = nil, nil, nil, nil, httpBody{}, nil
	c.Version, c.Subject = "", ""
	c.Req = envelope.Request{Headers: h[:0]}
	c.pick, c.out = pickResult{}, Outcome{} // c.ends: emptied by settle
	c.try, c.replay = attempt{}, replayBody{}
	c.edge, c.relabeled, c.bytesOut, c.lane, c.headBy = nil, false, 0, nil, time.Time{}
}

// awaitHead bounds the wait for the answer's head of a call without a
// deadline to d from its start, through an idle watch on ctx (the
// listener changes the watch's timeout once the head came), and returns
// the call's context.
func (c *Call) awaitHead(ctx context.Context, d time.Duration) context.Context {
	ctx, c.idle = watchIdle(ctx, d)
	c.idle.set(d, true)
	c.headBy = c.Start.Add(d)
	return ctx
}

// answerBy is when the call's answer must have begun: its deadline, or,
// for a call without one, when its head is due (zero: never).
func (c *Call) answerBy() time.Time {
	if c.Deadline.IsZero() {
		return c.headBy
	}
	return c.Deadline
}
