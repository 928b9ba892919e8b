package ambassador

import (
	"context"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// traffic is a service's traffic rules, compiled with its route: routes
// that match calls to a version, a weighted split over versions (sticky by
// a header's hash when asked), what to do when the chosen version has no
// healthy instance, and a mirror.
type traffic struct {
	routes   []trafficRoute
	split    []weighted // cumulative weights, in version order
	total    int
	sticky   string // header name, "" for a random pick
	fallback string // config.FallbackAny or FallbackNone
	mirror   *mirror
	lanes    []laneShare // brokers weights, cumulative; nil: all on the primary
}

type trafficRoute struct {
	match   config.TrafficMatch
	version string
	subject string
}

type weighted struct {
	upTo    int // cumulative weight
	version string
	subject string
}

type mirror struct {
	version string
	subject string
	percent int
	out     *mirrorSender // the broker copies go over
}

// compileTraffic compiles p's traffic rules for service; nil when it has
// none.
func compileTraffic(service string, p config.ServicePolicy, subjects broker.Subjects, mirrors map[string]*mirrorSender, lanes map[string]*lane) *traffic {
	if len(p.Routes) == 0 && len(p.Split) == 0 && p.Mirror == nil && len(p.Brokers) == 0 {
		return nil
	}
	t := &traffic{sticky: p.Sticky, fallback: p.Fallback}
	if t.fallback == "" {
		t.fallback = config.FallbackAny
	}
	for _, r := range p.Routes {
		t.routes = append(t.routes, trafficRoute{match: r.Match, version: r.Version, subject: subjects.Version(service, r.Version)})
	}
	for _, v := range slices.Sorted(maps.Keys(p.Split)) {
		if w := p.Split[v]; w > 0 {
			t.total += w
			t.split = append(t.split, weighted{upTo: t.total, version: v, subject: subjects.Version(service, v)})
		}
	}
	upTo := 0
	for _, name := range slices.Sorted(maps.Keys(p.Brokers)) {
		// compile checked that every name is a lane.
		if w := p.Brokers[name]; w > 0 {
			upTo += w
			t.lanes = append(t.lanes, laneShare{upTo: upTo, lane: lanes[name]})
		}
	}
	if m := p.Mirror; m != nil && m.Percent > 0 {
		// mirrors[""] is the sidecar's own broker; compile checked that
		// another one named is open.
		t.mirror = &mirror{version: m.Version, subject: subjects.Version(service, m.Version), percent: m.Percent, out: mirrors[m.Broker]}
		if m.Version == "" { // on another broker: the service's queue group there
			t.mirror.subject = subjects.Service(service)
		}
	}
	return t
}

// chooseLane sets the broker call c goes over by the brokers weights,
// which add up to 100.
func (t *traffic) chooseLane(c *Call) {
	if len(t.lanes) == 0 {
		return
	}
	n := rand.IntN(100)
	for i := range t.lanes {
		if n < t.lanes[i].upTo {
			c.lane = t.lanes[i].lane
			return
		}
	}
}

// choose sets the version and subject of call c: the first route that
// matches it, else the split.
func (t *traffic) choose(c *Call, caller string) {
	for i := range t.routes {
		r := &t.routes[i]
		if r.matches(&c.Req, caller) {
			c.Version, c.Subject = r.version, r.subject
			return
		}
	}
	if t.total == 0 {
		return
	}
	var n int
	if v, ok := header(c.Req.Headers, t.sticky); t.sticky != "" && ok {
		h := fnv.New32a()
		h.Write([]byte(v))
		n = int(h.Sum32() % uint32(t.total))
	} else {
		n = rand.IntN(t.total)
	}
	for i := range t.split {
		if n < t.split[i].upTo {
			c.Version, c.Subject = t.split[i].version, t.split[i].subject
			return
		}
	}
}

// matches reports whether every condition of r's match holds for req.
func (r *trafficRoute) matches(req *envelope.Request, caller string) bool {
	m := &r.match
	if m.Caller != "" && m.Caller != caller {
		return false
	}
	if m.PathPrefix != "" && (req.Protocol != envelope.ProtocolHTTP || !strings.HasPrefix(req.Path, m.PathPrefix)) {
		return false
	}
	if m.GRPCMethod != "" && (req.Protocol != envelope.ProtocolGRPC || !strings.HasPrefix(req.Method, m.GRPCMethod)) {
		return false
	}
	for name, want := range m.Headers {
		if v, ok := header(req.Headers, name); !ok || v != want {
			return false
		}
	}
	return true
}

// header returns the first value of a header (or gRPC metadata key) in an
// envelope's header list, by name in any case.
func header(list []string, name string) (string, bool) {
	for i := 0; i+1 < len(list); i += 2 {
		if strings.EqualFold(list[i], name) {
			return list[i+1], true
		}
	}
	return "", false
}

// routeTraffic applies a service's traffic rules: it picks the call's
// version subset before the rest of the pipeline runs, falls back (to any
// version, or to no-healthy-instances) when that version has no healthy
// instance, and copies the configured share of calls to the mirror.
func (a *Ambassador) routeTraffic(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		t := c.Route.traffic
		if t == nil {
			return next(ctx, c)
		}
		t.choose(c, a.cfg.Service)
		// Each broker's discovery knows the instances over that broker.
		if reg := c.lane.reg; c.Version != c.Route.Policy.Version && reg != nil {
			if t.fallback == config.FallbackNone {
				if err := healthyOrWhy(ctx, reg, c.Route.Service, c.Version); err != nil {
					return err
				}
			} else if !versionFound(ctx, c, reg) {
				c.Version, c.Subject = c.Route.Policy.Version, c.Route.Subject
			}
		}
		err := next(ctx, c)
		if t.mirror != nil && !c.Req.More && rand.IntN(100) < t.mirror.percent {
			a.sendMirror(c, t.mirror)
		}
		return err
	}
}

// versionFound reports whether reg knows, or comes to know, a healthy
// instance at the version traffic rules chose for c, which has a fallback.
// A version not heard yet is awaited through the service's first hearing
// (findHealthy), so a canary whose adapter is heard after the stable
// one's gets its first calls; the wait takes at most half of what is left
// before the answer is due, so a canary that never comes costs its calls
// a delay, not their deadline.
func versionFound(ctx context.Context, c *Call, reg *discovery.Registry) bool {
	if available(reg, c.Route.Service, c.Version) {
		return true
	}
	if by := c.answerBy(); !by.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(by)/2))
		defer cancel()
	}
	return findHealthy(ctx, reg, c.Route.Service, c.Version)
}

// sendMirror copies c's request to the mirror, fire and forget: the copy
// has an id of its own and its answer goes to the mirror inbox (the same
// subject on every broker), where it is counted and dropped, so the caller
// never sees it. The copy is encoded now, while c is at hand, and
// published off the caller's path (mirrorSender). It is sent once the
// primary has answered, so it gets the call's whole timeout from now: the
// call's deadline would leave the shadow only what the primary did not
// use.
func (a *Ambassador) sendMirror(c *Call, m *mirror) {
	copyReq := c.Req
	copyReq.ID = a.inbox.nextID.Add(1)
	copyReq.ReplyTo = a.mirrorInbox
	copyReq.Version = m.version
	copyReq.AttemptOf = 0 // a copy is never a retry: no adapter answers it from a record
	copyReq.Window = mirrorWindow
	var deadline time.Time
	copyReq.Deadline = 0
	if !c.Deadline.IsZero() {
		deadline = time.Now().Add(c.Deadline.Sub(c.Start))
		copyReq.Deadline = deadline.UnixNano()
	}
	data := copyReq.AppendEnvelope(make([]byte, 0, copyReq.EncodedSize()))
	m.out.send(mirrorCopy{subject: m.subject, service: c.Route.Service, version: m.version, data: data,
		id: copyReq.ID, deadline: deadline})
}

// mirrorAnswers handles what comes to the mirror inbox over out's broker
// (label: primary or the ambassador.brokers name): answers' heads are
// counted and dropped; and, as a caller that discards the answer, it
// grants credit for the answer's frames as they are dropped and pongs the
// shadow adapter's liveness pings until the answer ends, so a copy whose
// answer is long or slow is served to its end, not stalled or reaped as a
// vanished caller's. With security on, only the service a copy went to
// answers for it, and what goes back is sealed for that service.
func (a *Ambassador) mirrorAnswers(out *mirrorSender) func(context.Context, []byte) {
	out.answering(a.sidecar, a.forPeer)
	return func(_ context.Context, data []byte) {
		e, from, ok := a.inbox.open(data)
		if !ok {
			return
		}
		switch e.Kind {
		case envelope.KindResponse:
			var r envelope.Response
			if err := r.Unmarshal(e.Msg); err != nil {
				a.logger.Debug("mirror answer undecodable", telemetry.KeyErr, err)
				return
			}
			service, tracked := out.heard(r.ID)
			if tracked && !a.inbox.sentBy(service, &e, from, len(data)) {
				return
			}
			a.metrics.MirrorAnswers.WithLabelValues(telemetry.Code(int(r.Status)), out.label).Inc()
			if tracked {
				out.headed(r.ID, &r)
			}
		case envelope.KindFrame:
			var f envelope.Frame
			if err := f.Unmarshal(e.Msg); err != nil {
				a.logger.Debug("mirror frame undecodable", telemetry.KeyErr, err)
				return
			}
			service, tracked := out.heard(f.ID)
			if !tracked {
				if f.Ping { // a copy forgotten: the shadow is told to stop
					a.inbox.bind(&e, from)
					out.pinged(f.ID, f.ReplyTo)
				}
				return
			}
			if !a.inbox.sentBy(service, &e, from, len(data)) {
				return
			}
			if f.Ping {
				out.pinged(f.ID, f.ReplyTo)
			} else {
				out.dropped(f.ID, &f)
			}
		}
	}
}
