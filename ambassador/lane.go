package ambassador

import (
	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
)

// lane is one broker connection calls travel over: the sidecar's own
// (primary) or one of ambassador.brokers, which a service's brokers
// weights split calls onto. Everything a call publishes — the request,
// the rest of its body, grants, cancels, pongs — goes over its lane's
// publisher, and its answer comes back to the ambassador's inbox subject
// on that broker, which is subscribed there too and feeds the same
// pending-call table. So the rest of the call path does not know which
// broker carries it. Each lane has its own discovery (the instances that
// announce themselves over that broker) and its own balancer, for direct
// mode and the no-healthy-instances check.
type lane struct {
	name string // config.PrimaryBroker or an ambassador.brokers name: the to_broker label
	pub  *bus.Publisher
	reg  *discovery.Registry // nil: no discovery over this broker (calls go to the queue subject)
	lb   *balancer
	// conn tells whether the broker's connection is up; nil for a backend
	// that cannot tell. Resolved once, not per call.
	conn broker.Connectivity
}

// newLane is the lane of broker name, published to through pub.
func newLane(name string, pub *bus.Publisher, reg *discovery.Registry, lb *balancer) *lane {
	conn, _ := pub.Broker().(broker.Connectivity)
	return &lane{name: name, pub: pub, reg: reg, lb: lb, conn: conn}
}

// up reports whether the lane's broker connection is up (a backend that
// cannot tell is taken to be up).
func (l *lane) up() bool { return l.conn == nil || l.conn.Connected() }

// laneShare is one entry of a route's brokers weights, cumulative.
type laneShare struct {
	upTo int // cumulative percentage
	lane *lane
}

// primaryLane is the name of the sidecar's own broker.
const primaryLane = config.PrimaryBroker

// onLane names c's broker for an error's detail, when it is not the
// primary.
func (a *Ambassador) onLane(c *Call) string {
	if c.lane == nil || c.lane == a.primary {
		return ""
	}
	return " on broker " + c.lane.name
}

// splitBroker names the broker c went over when its service is split over
// brokers (the X-Busmesh-Broker header), else "".
func (c *Call) splitBroker() string {
	if c.lane == nil || c.Route == nil || c.Route.traffic == nil || len(c.Route.traffic.lanes) == 0 {
		return ""
	}
	return c.lane.name
}
