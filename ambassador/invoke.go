package ambassador

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Invoker carries a call over the bus until the head of its answer is in
// (c.Answer), or fails it with a *reason.Error. ctx ends at the call's
// deadline or when its caller goes away. The rest of a streamed answer is
// the listener's to read after Invoker returns.
type Invoker func(ctx context.Context, c *Call) error

// Middleware wraps an Invoker with one concern (deadlines, breakers,
// retries, tracing...). The chain is built once, at New; each middleware
// may refuse a call before it is sent, and learns how a call ended by
// c.OnEnd.
type Middleware func(next Invoker) Invoker

// chain wraps inner in mw, the first the outermost.
func chain(inner Invoker, mw ...Middleware) Invoker {
	for i := len(mw) - 1; i >= 0; i-- {
		inner = mw[i](inner)
	}
	return inner
}

// requireHealthy answers a call at once, without publishing, when
// discovery knows no healthy instance that may take it.
func (a *Ambassador) requireHealthy(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		if reg := c.lane.reg; reg != nil {
			if err := healthyOrWhy(ctx, reg, c.Route.Service, c.Version); err != nil {
				return err
			}
			a.relabel(c)
		}
		return next(ctx, c)
	}
}

// healthyOrWhy is nil when reg knows, or comes to know, a healthy instance
// of service at version (findHealthy); else why not: the call's deadline
// (or, for a call without one, the wait for the answer's head) ended the
// wait for discovery, or no instance is known.
func healthyOrWhy(ctx context.Context, reg *discovery.Registry, service, version string) error {
	if findHealthy(ctx, reg, service, version) {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || reason.Of(context.Cause(ctx)) == reason.Timeout {
		return reason.Errorf(reason.Timeout, "no healthy instance of service %q was known before the deadline", service)
	}
	return noHealthy(service, version)
}

// findHealthy reports whether reg knows a healthy instance of service at
// version, waiting for discovery where it may not have heard yet: a
// service no route names is learnt on its first call, asked and the
// answer awaited briefly (discovery.Registry.Learn); for one a route
// names, a version that never had a healthy instance is awaited through
// the service's first announcement interval (discovery.Registry.AwaitFirst),
// bounded by the call's deadline. Each broker has its discovery: a call
// split onto another asks there.
func findHealthy(ctx context.Context, reg *discovery.Registry, service, version string) bool {
	return available(reg, service, version) ||
		reg.Learn(ctx, service, learnWait) && available(reg, service, version) ||
		reg.AwaitFirst(ctx, service, version) && available(reg, service, version)
}

// maxReturned bounds the instances one call tries in direct mode when the
// broker hands it back undelivered.
const maxReturned = 1024

// learnWait bounds how long the first call to a service waits for
// discovery to learn its instances.
const learnWait = 500 * time.Millisecond

// available reports whether reg knows a healthy instance of service at
// version ("" for any).
func available(reg *discovery.Registry, service, version string) bool {
	healthy := reg.Healthy(service)
	if version == "" {
		return len(healthy) > 0
	}
	for i := range healthy {
		if healthy[i].Version == version {
			return true
		}
	}
	return false
}

func noHealthy(service, version string) *reason.Error {
	if version != "" {
		return reason.Errorf(reason.NoHealthy, "no healthy instance of service %q at version %q is known", service, version)
	}
	return reason.Errorf(reason.NoHealthy, "no healthy instance of service %q is known", service)
}

// roundTrip is the innermost Invoker: encode the request with the first
// part of its body, pick where it goes, publish it, stream the rest of the
// body once an adapter accepts, and wait for the answer. It is one
// attempt: the retry middleware runs it again for the next.
func (a *Ambassador) roundTrip(ctx context.Context, c *Call) error {
	req := &c.Req
	req.ID = a.inbox.register(&c.p, c.Route.Service, c.lane.pub)
	if c.try.keyed && req.AttemptOf == 0 {
		req.AttemptOf = req.ID
	}
	req.Source, req.SourceService = a.sidecar, a.cfg.Service
	req.Service, req.ReplyTo = c.Route.Service, a.inbox.subject
	req.Deadline, req.Window = 0, uint32(c.p.offered)
	if !c.Deadline.IsZero() {
		req.Deadline = c.Deadline.UnixNano()
	}
	req.Body, req.More = nil, false // a retry's: measured without the last attempt's
	pub := c.lane.pub
	room := pub.MaxMessage() - req.EncodedSize() - stream.Slack
	if room < 0 {
		return reason.Errorf(reason.HeadersTooLarge, "request headers do not fit the broker's %d-byte messages", pub.MaxMessage())
	}
	body, more, err := c.Body.First(min(room, stream.MaxInline))
	if err != nil {
		return err
	}
	req.Body, req.More = body, more
	if more {
		c.p.expectAccept()
	}
	if err := a.send(ctx, c, c.try.avoid); err != nil {
		return err
	}
	if more {
		c.pump = make(chan struct{})
		pumpCtx := ctx
		if c.try.keyed || c.try.replayable {
			// A retry stops this attempt's pump before the next starts.
			pumpCtx, c.try.stopPump = context.WithCancel(ctx)
		}
		go a.sendRest(pumpCtx, c)
	}
	return a.await(ctx, c)
}

// send picks where the request goes (other than avoid) and publishes it.
func (a *Ambassador) send(ctx context.Context, c *Call, avoid *instanceStats) error {
	if !broker.Connected(c.lane.pub.Broker()) { // a retry's broker may have gone since
		return brokerDown(c.lane)
	}
	pick, perr := a.pick(c, avoid)
	if perr != nil {
		return perr
	}
	err := c.lane.pub.PublishReturnable(ctx, pick.subject, &c.Req, c.Req.ID, a.inbox.returned)
	if broker.Abandoned(ctx, err) {
		// The call ended (its deadline, the caller gone) before its request
		// went out: neither the instance nor the broker failed it.
		pick.done(doneInfo{reason: reason.Cancelled})
		return ended(ctx, c)
	}
	if err != nil {
		pick.done(doneInfo{reason: reason.BrokerUnavailable, failed: true})
		a.publishFailed("request", pick.subject, err)
		switch {
		case errors.Is(err, broker.ErrTooLarge):
			return reason.Errorf(reason.RequestTooLarge, "%v", err)
		case errors.Is(err, context.DeadlineExceeded):
			return reason.Errorf(reason.Timeout, "%v", err)
		}
		return reason.Errorf(reason.BrokerUnavailable, "%v", err)
	}
	c.pick = pick
	return nil
}

// await waits for the answer, until the call's deadline or the attempt's
// (per_try_timeout). In direct mode a request the broker hands back
// undelivered goes to another instance: it never reached an application,
// so sending it again is safe. When a deadline ends first, the serving
// adapter is told to stop. Whatever the outcome, the pick hears it.
func (a *Ambassador) await(ctx context.Context, c *Call) error {
	sent := time.Now()
	var perTry <-chan time.Time
	if !c.try.deadline.IsZero() {
		t := time.NewTimer(time.Until(c.try.deadline))
		defer t.Stop()
		perTry = t.C
	}
	for returned := 0; ; returned++ {
		tryExpired := false
		select {
		case <-c.p.ready:
		case <-ctx.Done():
		case <-perTry:
			tryExpired = true
		}
		answered, err := c.p.result()
		if c.pick.stats != nil && errors.Is(err, errNoResponders) && ctx.Err() == nil && returned < maxReturned {
			// Nobody is behind that instance (gone, or announced by someone
			// else): discovery leaves it out for a while, and the request,
			// which reached no application, goes to another while any is
			// left (the retry policy's no-responders is for what is left).
			c.lane.reg.Suspect(c.Route.Service, c.pick.stats.instance)
			trace.SpanFromContext(ctx).AddEvent("busmesh.retry", trace.WithAttributes(
				attribute.String("busmesh.reason", reason.NoResponders.String())))
			avoid := c.pick.stats
			c.pick.done(doneInfo{reason: reason.NoResponders, failed: true})
			c.pick = pickResult{}
			c.p.clearFailure()
			serr := a.send(ctx, c, avoid)
			if serr == nil {
				continue
			}
			if reason.Of(serr) != reason.NoHealthy {
				// The resend failed on its own account (the call ended,
				// the broker failed): that is the call's end. With no
				// other instance left, no-responders stays the answer.
				return serr
			}
		}
		took := time.Since(sent)
		switch {
		case answered:
			resp := &c.p.resp
			c.pick.done(doneInfo{latency: took, sample: true, reason: reason.Parse(resp.Error), failed: failedAnswer(resp)})
			return nil
		case errors.Is(err, errNoResponders):
			c.pick.done(doneInfo{reason: reason.NoResponders, failed: true})
			return reason.Errorf(reason.NoResponders, "no instance of service %q is connected to the broker", c.Route.Service)
		case errors.Is(err, stream.ErrTooLarge):
			c.pick.done(doneInfo{reason: reason.RequestTooLarge})
			return reason.Errorf(reason.RequestTooLarge, "request body is over max_body_bytes (%d)", capOf(c.Route.Policy.MaxBodyBytes))
		case err != nil:
			c.pick.done(doneInfo{reason: reason.StreamFailed, failed: true})
			return reason.Errorf(reason.StreamFailed, "%v", err)
		case tryExpired && ctx.Err() == nil:
			c.pick.done(doneInfo{latency: took, sample: true, reason: reason.Timeout, failed: true})
			a.cancelRemote(c, "per-try timeout")
			return &reason.Error{Reason: reason.Timeout, Detail: fmt.Sprintf("no answer from service %q within the per-try timeout", c.Route.Service)}
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || c.nearDeadline():
			// A timeout counts as a (long) sample: the estimate then keeps
			// calls away from the instance for a while.
			c.pick.done(doneInfo{latency: took, sample: true, reason: reason.Timeout, failed: true})
			// The reason's name: the adapter counts the call as timed out
			// too, even when this comes a moment before its deadline.
			a.cancelRemote(c, reason.Timeout.String())
			return timedOut(c)
		case reason.Of(context.Cause(ctx)) == reason.Timeout:
			// The idle timeout, or the wait for the answer's head of a call
			// without a deadline (an upgrade, an event stream, a gRPC
			// call): the latter fails the instance as a deadline would.
			c.pick.done(doneInfo{latency: took, sample: true, reason: reason.Timeout, failed: !c.headBy.IsZero()})
			a.cancelRemote(c, "timeout")
			return context.Cause(ctx)
		default:
			c.pick.done(doneInfo{latency: took, reason: reason.Cancelled})
			a.cancelRemote(c, "caller cancelled")
			return ended(ctx, c)
		}
	}
}

// ended is the error of call c, whose ctx ended: its deadline passed (or
// the caller, whose clock runs ahead, reset the call as it came), another
// timeout ended it (idle, an upgrade's wait), or the caller went away.
func ended(ctx context.Context, c *Call) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || c.nearDeadline():
		return timedOut(c)
	case reason.Of(context.Cause(ctx)) == reason.Timeout:
		return context.Cause(ctx)
	}
	return reason.Errorf(reason.Cancelled, "the caller went away")
}

// timedOut is the error of call c when its deadline passed.
func timedOut(c *Call) error {
	return reason.Errorf(reason.Timeout, "no answer from service %q within %v", c.Route.Service,
		c.Deadline.Sub(c.Start).Round(time.Millisecond))
}

// sendRest streams the rest of the request body once the adapter accepts
// the call. A failure fails the call at once (unless it has its answer)
// and tells the adapter to stop.
func (a *Ambassador) sendRest(ctx context.Context, c *Call) {
	defer close(c.pump)
	peer, window, err := c.p.waitAccepted(ctx)
	if err != nil {
		return
	}
	s := &stream.Sender{Pub: c.lane.pub, Subject: peer, ID: c.Req.ID, Source: a.sidecar, Window: window}
	if err := c.Body.Rest(ctx, s); err != nil && ctx.Err() == nil {
		if !errors.Is(err, stream.ErrTooLarge) && !errors.Is(err, stream.ErrReadBody) {
			a.publishFailed("frame", peer, err)
		}
		_ = stream.Cancel(context.WithoutCancel(ctx), c.lane.pub, peer, c.Req.ID, a.sidecar, err.Error())
		c.p.fail(c.Req.ID, err)
	}
}

// forPeer returns ctx sealing, with security on, for service only
// (secure.ForPeer).
func (a *Ambassador) forPeer(ctx context.Context, service *string) context.Context {
	if a.inbox.guard == nil {
		return ctx
	}
	return secure.ForPeer(ctx, service)
}

// cancelRemote tells the serving adapter to stop a call: directly when it
// is known, else through the service's cancel subject.
func (a *Ambassador) cancelRemote(c *Call, why string) {
	subject := c.p.peerInbox()
	if subject == "" {
		subject = a.subjects.Cancel(c.Route.Service)
	}
	ctx, cancel := context.WithTimeout(a.forPeer(context.Background(), &c.Route.Service), time.Second)
	defer cancel()
	if err := stream.Cancel(ctx, c.lane.pub, subject, c.Req.ID, a.sidecar, why); err != nil {
		a.logger.Debug("cancel not sent", telemetry.KeySubject, subject, telemetry.KeyErr, err)
	}
}

// callerClockSlack is how close to its deadline a call whose caller goes
// away counts as timed out: a gRPC client resets the stream at its own
// deadline, which reaches the ambassador a moment before the deadline the
// ambassador derived from grpc-timeout (the server starts its clock when it
// reads the headers: on a busy host tens, at times over a hundred,
// milliseconds after the client started its own).
const callerClockSlack = 200 * time.Millisecond

// begin takes a pooled call for a request on rt that arrived at start and
// must be answered by deadline (zero: none); ctx ends then, or when parent
// does.
func (a *Ambassador) begin(parent context.Context, rt *Route, start, deadline time.Time, grpc bool) (*Call, context.Context) {
	c := callPool.Get().(*Call)
	c.Route, c.Start, c.Deadline, c.lane = rt, start, deadline, a.primary
	if rt != nil {
		c.Version, c.Subject = rt.Policy.Version, rt.Subject
	}
	c.out.GRPC = grpc
	a.started(c)
	if rt != nil {
		// The call's frames and cancels are sealed for the service called
		// alone, whatever else has named its adapter's inbox.
		parent = a.forPeer(parent, &rt.Service)
	}
	if deadline.IsZero() { // timeout: none, upgrades, event streams, gRPC calls without a deadline
		ctx, cancel := context.WithCancel(parent)
		c.cancel = cancel
		return c, ctx
	}
	ctx, cancel := context.WithDeadline(parent, deadline)
	c.cancel = cancel
	return c, ctx
}

// end finishes a call: it settles it, if respondHTTP has not, counts the
// outcome and returns the call to the pool.
func (a *Ambassador) end(c *Call) {
	a.settle(c)
	a.record(c)
	if a.access != nil {
		a.logAccess(c)
	}
	c.p.clear()
	if cap(c.Req.Headers) <= 256 {
		c.reset()
		callPool.Put(c)
	}
}

// settle stops what still runs for a call and runs its OnEnd hooks, once:
// they hold what gates the calls after it (a breaker's slot and its
// record, outlier ejection, the retry budget), so they run before the
// caller can have its answer and send its next call.
func (a *Ambassador) settle(c *Call) {
	if c.cancel != nil {
		c.cancel()
	}
	if c.pump != nil {
		<-c.pump
	}
	c.idle.stop()
	// No answer may land while the call is counted: a late one would race
	// the reads of its instance in the hooks and in record.
	a.inbox.detach(&c.p)
	for i := len(c.ends) - 1; i >= 0; i-- {
		c.ends[i](&c.out)
	}
	clear(c.ends)
	c.ends = c.ends[:0]
}

// meshError returns err's *reason.Error, or wraps another error as a
// stream failure.
func meshError(err error) *reason.Error {
	if e, ok := errors.AsType[*reason.Error](err); ok {
		return e
	}
	return &reason.Error{Reason: reason.StreamFailed, Detail: fmt.Sprint(err)}
}
