package kafka

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/busmesh/busmesh/broker"
)

// requestTimeout bounds a control request (metadata, topic creation,
// offsets) whose ctx has no earlier deadline.
const requestTimeout = 10 * time.Second

// cluster is what a Conn knows of the Kafka cluster: its brokers, the topics
// in use and their partition leaders. It sends the control requests, one at
// a time per broker, each on its own connection.
type cluster struct {
	cfg    *config
	health *health

	mu         sync.RWMutex
	brokers    map[int32]string // node id → host:port
	controller int32
	topics     map[string]*topic        // topics known to exist
	creating   map[string]chan struct{} // topics being looked up or created

	ctlMu  sync.Mutex
	ctl    map[string]*ctlConn // by address
	closed bool
	stop   context.Context // cancelled by close, to end calls in flight
	cancel context.CancelFunc
}

// ctlConn is the control connection to one broker; sem serialises its use.
type ctlConn struct {
	sem chan struct{}
	w   *wire
}

func newCluster(cfg *config, h *health) *cluster {
	stop, cancel := context.WithCancel(context.Background())
	return &cluster{
		stop:     stop,
		cancel:   cancel,
		cfg:      cfg,
		health:   h,
		brokers:  map[int32]string{},
		topics:   map[string]*topic{},
		creating: map[string]chan struct{}{},
		ctl:      map[string]*ctlConn{},
	}
}

// addr returns the address of broker node, or "" if it is unknown.
func (cl *cluster) addr(node int32) string {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	return cl.brokers[node]
}

// call sends a control request to the broker at addr. A connection that
// failed while idle is replaced once: control requests are safe to repeat.
func (cl *cluster) call(ctx context.Context, addr string, msg protocol.Message) (protocol.Message, error) {
	if addr == "" {
		return nil, errors.New("no address for the broker: metadata is out of date")
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	defer context.AfterFunc(cl.stop, cancel)()
	cl.ctlMu.Lock()
	if cl.closed {
		cl.ctlMu.Unlock()
		return nil, broker.ErrClosed
	}
	cc := cl.ctl[addr]
	if cc == nil {
		cc = &ctlConn{sem: make(chan struct{}, 1)}
		cl.ctl[addr] = cc
	}
	cl.ctlMu.Unlock()
	select {
	case cc.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, cl.ctxErr(ctx)
	}
	defer func() { <-cc.sem }()
	for {
		fresh := cc.w == nil
		if fresh {
			w, err := dialWire(ctx, cl.cfg, addr)
			if err != nil {
				if ctx.Err() != nil {
					return nil, cl.ctxErr(ctx)
				}
				cl.health.lost(addr, err)
				return nil, err
			}
			cl.health.ok(addr)
			cc.w = w
		}
		res, err := cc.w.roundTrip(ctx, msg)
		if err == nil {
			return res, nil
		}
		cc.w.close()
		cc.w = nil
		if ctx.Err() != nil {
			return nil, cl.ctxErr(ctx)
		}
		if fresh {
			cl.health.lost(addr, err)
			return nil, err
		}
	}
}

// ctxErr is the error for a call that ctx ended: ErrClosed if close did.
func (cl *cluster) ctxErr(ctx context.Context) error {
	if cl.stop.Err() != nil {
		return broker.ErrClosed
	}
	return ctx.Err()
}

// close closes the control connections; later calls fail.
func (cl *cluster) close() {
	cl.cancel()
	cl.ctlMu.Lock()
	cl.closed = true
	conns := cl.ctl
	cl.ctlMu.Unlock()
	for _, cc := range conns {
		cc.sem <- struct{}{}
		if cc.w != nil {
			cc.w.close()
			cc.w = nil
		}
	}
}

// candidates lists the addresses to ask for metadata: known brokers first,
// then the URL's.
func (cl *cluster) candidates() []string {
	cl.mu.RLock()
	nodes := make([]int32, 0, len(cl.brokers))
	for n := range cl.brokers {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	addrs := make([]string, 0, len(nodes)+len(cl.cfg.addrs))
	for _, n := range nodes {
		addrs = append(addrs, cl.brokers[n])
	}
	cl.mu.RUnlock()
	for _, a := range cl.cfg.addrs {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// metadata asks any broker about topics (none: only the brokers) and
// updates what the cluster knows.
func (cl *cluster) metadata(ctx context.Context, topics []string) (*metadata.Response, error) {
	if topics == nil {
		topics = []string{} // nil would ask for every topic
	}
	var errs []error
	for _, addr := range cl.candidates() {
		r, err := cl.call(ctx, addr, &metadata.Request{TopicNames: topics})
		if err == nil {
			m := r.(*metadata.Response)
			cl.update(m)
			return m, nil
		}
		if errors.Is(err, broker.ErrClosed) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, &unreachableError{errors.Join(errs...)}
}

// unreachableError reports that no broker answered, and why for each. It
// is a broker.ErrDisconnected: a later attempt may succeed.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string   { return "no broker answered: " + e.err.Error() }
func (e *unreachableError) Unwrap() []error { return []error{broker.ErrDisconnected, e.err} }

// refresh updates the leaders of t unless they are younger than maxAge, so
// that many readers failing at once ask once.
func (cl *cluster) refresh(ctx context.Context, t *topic, maxAge time.Duration) {
	if maxAge > 0 && time.Since(time.Unix(0, t.updated.Load())) < maxAge {
		return
	}
	_, _ = cl.metadata(ctx, []string{t.name})
}

func (cl *cluster) update(m *metadata.Response) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, b := range m.Brokers {
		cl.brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	cl.controller = m.ControllerID
	for _, mt := range m.Topics {
		if t := cl.topics[mt.Name]; t != nil && mt.ErrorCode == 0 {
			t.setLeaders(leaders(mt))
		}
	}
}
