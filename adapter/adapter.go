package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Options configure an Adapter.
type Options struct {
	Config  *config.Adapter
	Sidecar string // this sidecar's ID, which names its inbox
	Mesh    string // the mesh's name; "" is broker.DefaultMesh
	Broker  broker.Broker
	Logger  *slog.Logger // nil discards
	Metrics *telemetry.Metrics
	// Announce is the discovery announcement interval (default 2s).
	Announce time.Duration
}

// Adapter takes a service's calls off the broker and makes them to the
// local application.
type Adapter struct {
	cfg      *config.Adapter
	sidecar  string
	subjects broker.Subjects
	inbox    string // subjects.AdapterInbox: frames of the calls it serves
	broker   broker.Broker
	logger   *slog.Logger
	metrics  *telemetry.Metrics
	limiter  telemetry.Limiter
	inflight prometheus.Gauge
	target   string // scheme://host[/base] of the application, no trailing slash
	client   *http.Client
	grpc     *grpc.ClientConn // set when the application is a gRPC server
	maxMsg   int
	chunk    int
	announce *discovery.Announcer

	// Calls are served by workers, at most concurrency of them, started as
	// needed and kept: a worker's stack has grown to what a call needs, so
	// the next call does not grow a new goroutine's. A full adapter stops
	// taking calls off the broker until a worker is free.
	jobs    chan *envelope.Request
	workers atomic.Int32 // started
	busy    atomic.Int32 // serving a call
	running sync.WaitGroup

	latency telemetry.LatencyWindow // the application's answer times, announced as p50

	mu         sync.Mutex
	calls      map[callKey]*serverCall
	subs       []broker.Subscription // inbox and cancel subjects
	queue      broker.Subscription   // the service's queue group, while healthy
	own        broker.Subscription   // the instance's subject (direct mode), from Start to Shutdown
	started    bool
	stopHealth context.CancelFunc
	healthDone chan struct{}
}

// callKey names a call: ids are unique per calling sidecar only.
type callKey struct {
	source string
	id     uint64
}

// serverCall is a call being served.
type serverCall struct {
	cancel  context.CancelFunc
	inbound *stream.Inbound // the rest of the request body, when streamed
	window  *stream.Window  // credit for response frames, once streaming
}

// New returns an Adapter; Start subscribes it.
func New(o Options) (*Adapter, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	u, err := url.Parse(o.Config.Target)
	if err != nil {
		return nil, fmt.Errorf("adapter target %q: %w", o.Config.Target, err)
	}
	maxMsg := broker.MaxMessageBytes(o.Broker)
	if o.Announce <= 0 {
		o.Announce = config.DefaultInterval
	}
	a := &Adapter{
		cfg:      o.Config,
		sidecar:  o.Sidecar,
		subjects: broker.NewSubjects(o.Mesh),
		inbox:    broker.NewSubjects(o.Mesh).AdapterInbox(o.Sidecar),
		broker:   o.Broker,
		logger:   o.Logger.With(telemetry.KeyComponent, "adapter", telemetry.KeyService, o.Config.Service),
		metrics:  o.Metrics,
		limiter:  telemetry.Limiter{Interval: time.Second},
		inflight: o.Metrics.AdapterInflight.WithLabelValues(o.Config.Service),
		target:   u.Scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/"),
		client:   newClient(o.Config.Concurrency),
		maxMsg:   maxMsg,
		chunk:    stream.ChunkSize(maxMsg),
		jobs:     make(chan *envelope.Request),
		calls:    map[callKey]*serverCall{},
	}
	if u.Scheme == "grpc" {
		if a.grpc, err = dialGRPC(u.Host, grpcwire.MaxMessage(int64(o.Config.MaxBodyBytes))); err != nil {
			return nil, fmt.Errorf("adapter target %q: %w", o.Config.Target, err)
		}
	}
	a.announce = discovery.NewAnnouncer(o.Broker, discovery.Self{
		Service:     o.Config.Service,
		Instance:    o.Config.Instance,
		Version:     o.Config.Version,
		Zone:        o.Config.Zone,
		Labels:      o.Config.Labels,
		Sidecar:     o.Sidecar,
		Concurrency: o.Config.Concurrency,
		Mesh:        o.Mesh,
	}, o.Announce, a.readings, a.logger)
	return a, nil
}

// newClient is the HTTP client of the local application: no proxy from the
// environment, no redirects followed and no transparent decompression,
// because the adapter passes the application's answers through as they are.
func newClient(concurrency int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        concurrency,
			MaxIdleConnsPerHost: concurrency,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Start subscribes to the adapter's inbox, the service's cancel subject and
// the instance's own subject (direct mode), checks the application if a
// health check is configured and, when it is healthy, joins the service's
// queue group. It announces itself, healthy or not.
func (a *Adapter) Start(ctx context.Context) error {
	inbox, err := a.broker.Subscribe(ctx, a.inbox, a.handleFrame)
	if err != nil {
		return fmt.Errorf("adapter inbox: %w", err)
	}
	cancels, err := a.broker.Subscribe(ctx, a.subjects.Cancel(a.cfg.Service), a.handleFrame)
	if err != nil {
		inbox.Unsubscribe()
		return fmt.Errorf("adapter cancel subject: %w", err)
	}
	direct := a.subjects.Instance(a.cfg.Service, a.cfg.Instance)
	own, err := a.broker.Subscribe(ctx, direct, a.handleRequest)
	if err != nil {
		inbox.Unsubscribe()
		cancels.Unsubscribe()
		return fmt.Errorf("adapter subscribe %s: %w", direct, err)
	}
	a.mu.Lock()
	a.subs = []broker.Subscription{inbox, cancels}
	a.own = own
	a.started = true
	a.mu.Unlock()
	healthy := true
	if a.cfg.Health != nil {
		if err := a.checkApp(ctx); err != nil {
			healthy = false
			a.logger.Warn("application unhealthy at start: taking no calls until it passes", telemetry.KeyErr, err)
		}
	}
	if healthy {
		if err := a.joinQueue(ctx); err != nil {
			_ = a.Shutdown(context.Background()) // the start's error is the one to report
			return err
		}
	}
	// Announce once calls can be taken, so no caller is sent here early.
	if err := a.announce.Start(ctx, healthy); err != nil {
		_ = a.Shutdown(context.Background()) // the start's error is the one to report
		return err
	}
	if a.cfg.Health != nil {
		hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		a.mu.Lock()
		a.stopHealth, a.healthDone = cancel, make(chan struct{})
		a.mu.Unlock()
		go func() {
			defer close(a.healthDone)
			a.watchHealth(hctx, healthy)
		}()
	}
	a.logger.Info("serving", telemetry.KeySubject, a.subjects.Service(a.cfg.Service), telemetry.KeyInstance, a.cfg.Instance,
		"target", a.target, "healthy", healthy)
	return nil
}

// joinQueue joins the service's queue group: calls start arriving.
func (a *Adapter) joinQueue(ctx context.Context) error {
	subject := a.subjects.Service(a.cfg.Service)
	queue, err := a.broker.QueueSubscribe(ctx, subject, subject, a.handleRequest)
	if err != nil {
		return fmt.Errorf("adapter subscribe %s: %w", subject, err)
	}
	a.mu.Lock()
	a.queue = queue
	a.mu.Unlock()
	return nil
}

// drainTimeout bounds how long leaving a subscription may take to serve
// what the broker already handed over.
const drainTimeout = 10 * time.Second

// leave ends subscriptions, serving first what the broker already
// delivered to this instance; calls in flight go on.
func leave(subs ...broker.Subscription) error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if d, ok := s.(broker.Drainer); ok {
				errs[i] = d.Drain(ctx)
			} else {
				errs[i] = s.Unsubscribe()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// leaveQueue leaves the service's queue group.
func (a *Adapter) leaveQueue() error {
	a.mu.Lock()
	q := a.queue
	a.queue = nil
	a.mu.Unlock()
	return leave(q)
}

// setServing follows the application's health. Unhealthy, the adapter
// says so, then leaves the queue group; it keeps its instance subject, so
// a caller that chose it just before hearing still gets an answer.
// Healthy, it joins the queue group, then says so.
func (a *Adapter) setServing(ctx context.Context, healthy bool) {
	if !healthy {
		a.announce.SetHealthy(false)
		if err := a.leaveQueue(); err != nil {
			a.logger.Warn("leaving the queue group", telemetry.KeyErr, err)
		}
		return
	}
	if err := a.joinQueue(ctx); err != nil {
		a.logger.Error("rejoining the queue group", telemetry.KeyErr, err)
		return
	}
	a.announce.SetHealthy(true)
}

// leaveGrace is how long an adapter that said goodbye keeps taking calls:
// long enough for the goodbye to reach ambassadors over any broker, so a
// call sent just before is still served.
const leaveGrace = 250 * time.Millisecond

// Shutdown drains: it says goodbye, keeps taking calls a moment for those
// sent before the goodbye arrived, leaves the queue group and its instance
// subject, waits for the calls in flight to finish (until ctx ends, when it
// cancels them), then unsubscribes the rest.
func (a *Adapter) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	started, subs, stopHealth, healthDone := a.started, a.subs, a.stopHealth, a.healthDone
	a.started, a.subs, a.stopHealth = false, nil, nil
	a.mu.Unlock()
	if !started {
		return nil
	}
	if stopHealth != nil {
		stopHealth()
		<-healthDone
	}
	var errs []error
	// Goodbye first: ambassadors stop choosing this instance before it
	// stops taking calls.
	errs = append(errs, a.announce.Stop(ctx))
	t := time.NewTimer(leaveGrace)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	a.mu.Lock()
	own := a.own
	a.own = nil
	a.mu.Unlock()
	errs = append(errs, a.leaveQueue(), leave(own))
	// No call arrives any more: the workers end with their last one.
	close(a.jobs)
	done := make(chan struct{})
	go func() { a.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		a.mu.Lock()
		for _, c := range a.calls {
			c.cancel()
		}
		a.mu.Unlock()
		<-done
		errs = append(errs, fmt.Errorf("drain: %w", ctx.Err()))
	}
	for _, s := range subs {
		errs = append(errs, s.Unsubscribe())
	}
	a.client.CloseIdleConnections()
	if a.grpc != nil {
		errs = append(errs, a.grpc.Close())
	}
	return errors.Join(errs...)
}

// handleRequest takes one call off the service subject. It blocks while the
// adapter is at its concurrency limit, so the broker holds the rest.
func (a *Adapter) handleRequest(ctx context.Context, data []byte) {
	kind, msg, err := envelope.Unwrap(data)
	if err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	if kind != envelope.KindRequest {
		a.reject("unexpected-kind", len(data), fmt.Errorf("a %s on the service subject", kind))
		return
	}
	req := new(envelope.Request)
	if err := req.Unmarshal(msg); err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	switch {
	case req.Service != a.cfg.Service:
		a.reject("wrong-service", len(data), fmt.Errorf("request for service %q", req.Service))
		return
	case req.ReplyTo == "" || req.Source == "":
		a.reject("malformed", len(data), errors.New("request without reply_to or source"))
		return
	case req.Deadline != 0 && time.Now().UnixNano() >= req.Deadline:
		// The caller has given up: serving it would be wasted work.
		a.reject("expired", len(data), errors.New("deadline passed before the call was taken"))
		return
	}
	a.dispatch(ctx, req)
}

// dispatch hands a call to an idle worker, or starts one while under the
// concurrency limit, or else waits for a worker to be free.
func (a *Adapter) dispatch(ctx context.Context, req *envelope.Request) {
	select {
	case a.jobs <- req:
		return
	default:
	}
	if n := a.workers.Load(); int(n) < a.cfg.Concurrency && a.workers.CompareAndSwap(n, n+1) {
		a.running.Add(1)
		go a.worker(req)
		return
	}
	select {
	case a.jobs <- req:
	case <-ctx.Done():
	}
}

// worker serves calls until the adapter closes its jobs.
func (a *Adapter) worker(req *envelope.Request) {
	defer a.running.Done()
	for ok := true; ok; req, ok = <-a.jobs {
		a.busy.Add(1)
		a.serve(req)
		a.busy.Add(-1)
	}
}

// handleFrame takes a frame for a call being served: more request body,
// window updates, or a cancel (on the inbox or the service's cancel subject).
func (a *Adapter) handleFrame(_ context.Context, data []byte) {
	kind, msg, err := envelope.Unwrap(data)
	if err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	if kind != envelope.KindFrame {
		a.reject("unexpected-kind", len(data), fmt.Errorf("a %s on the inbox", kind))
		return
	}
	var f envelope.Frame
	if err := f.Unmarshal(msg); err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	a.mu.Lock()
	c := a.calls[callKey{f.Source, f.ID}]
	a.mu.Unlock()
	if c == nil {
		return // finished already, or served by another instance (cancels fan out)
	}
	switch {
	case f.Cancel:
		if c.inbound != nil {
			c.inbound.Fail(errors.New("cancelled by the caller: " + f.Error))
		}
		c.cancel()
	case f.Seq > 0 && c.inbound != nil:
		c.inbound.Push(&f)
	}
	if f.WindowUpdate > 0 {
		a.mu.Lock()
		w := c.window
		a.mu.Unlock()
		if w != nil {
			w.Grant(int64(f.WindowUpdate))
		}
	}
}

// readings are the load figures announced with the instance.
func (a *Adapter) readings() (int, time.Duration) { return int(a.busy.Load()), a.latency.TakeMedian() }

func (a *Adapter) register(k callKey, c *serverCall) {
	a.mu.Lock()
	a.calls[k] = c
	a.mu.Unlock()
}

func (a *Adapter) unregister(k callKey) {
	a.mu.Lock()
	delete(a.calls, k)
	a.mu.Unlock()
}

func (a *Adapter) reject(reason string, size int, err error) {
	a.metrics.EnvelopesRejected.WithLabelValues("adapter", reason).Inc()
	if ok, suppressed := a.limiter.Allow(); ok {
		a.logger.Warn("envelope rejected", telemetry.KeyReason, reason, telemetry.KeyBytes, size,
			telemetry.KeyErr, err, "suppressed", suppressed)
	}
}

// bodyReader reads the streamed rest of a request body, granting the
// caller credit as the application reads.
func (a *Adapter) bodyReader(ctx context.Context, req *envelope.Request, sc *serverCall) io.Reader {
	return stream.NewReader(ctx, sc.inbound, func(n int64) {
		_ = stream.Grant(ctx, a.broker, req.ReplyTo, req.ID, "", n)
	})
}
