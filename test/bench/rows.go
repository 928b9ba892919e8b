package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/busmesh/busmesh/test/testpb"
)

// childTimeout bounds the start of a child process of this binary.
const childTimeout = 20 * time.Second

// Row names, as the tables and targets refer to them.
const (
	rowDirectHTTP = "direct-http"
	rowDirectGRPC = "direct-grpc"
	rowProxyChain = "proxy-chain"
	rowMeshGRPC   = "mesh-grpc-nats"
)

func rawRowName(broker string) string  { return "raw-" + broker }
func meshRowName(broker string) string { return "mesh-http-" + broker }

// row is one way of making the echo call, measured at every concurrency
// and body size.
type row struct {
	name   string // short name in the tables
	about  string // what it is, for the legend
	broker string // the broker it rides on; "" for none
	procs  []rowProc
	calls  callerFactory
}

// rowProc is a process whose CPU and memory a row reports.
type rowProc struct {
	role    string // "ambassador", "adapter", "proxy 1", "responder", "broker (nats-server)", ...
	pid     int    // a process the bench started, or a broker server it found
	admin   string // a sidecar's admin address, for profiles
	sidecar bool   // a busmesh sidecar: the memory targets apply
}

// skip is a row that is not measured, and why.
type skip struct{ row, why string }

// env is everything a run set up: the processes, the rows over them, and
// what could not be set up.
type env struct {
	sup     *supervisor
	binary  string
	appHTTP string
	appGRPC string
	maxConc int
	runID   string // prefix of names on shared brokers, unique per run

	rows    []*row
	skipped []skip
	brokers []string            // "nats-server 2.12.1 at 127.0.0.1:4222", for the header
	servers map[string]*rowProc // each broker's server process, where this machine runs it
	notes   []string            // for the report's notes
	closers []func() error
}

// setUp starts the application, the brokers' responders, the sidecars and
// the proxies, and checks every row with one call of each size. A broker
// that cannot be reached, or a row that does not answer, is skipped with
// a note; a failure of what every row needs is an error.
func setUp(ctx context.Context, o *options, sup *supervisor) (e *env, err error) {
	e = &env{sup: sup, servers: map[string]*rowProc{}, maxConc: slices.Max(o.concurrency), runID: fmt.Sprintf("bench-%d", os.Getpid())}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.binary = o.binary
	if e.binary == "" {
		if e.binary, err = buildBusmesh(ctx, sup.dir); err != nil {
			return nil, err
		}
	}
	_, addrs, err := sup.startChild(ctx, "app", childTimeout, "app")
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Sscan(addrs, &e.appHTTP, &e.appGRPC); err != nil {
		return nil, fmt.Errorf("app's ready line %q: %w", addrs, err)
	}
	client := newHTTPClient(e.maxConc)
	e.closers = append(e.closers, func() error { client.CloseIdleConnections(); return nil })
	e.rows = append(e.rows, &row{name: rowDirectHTTP, about: "the load generator POSTs to the echo application itself: the floor of any HTTP sidecar",
		calls: httpCallers(client, "http://"+e.appHTTP+"/echo")})

	var raws, meshes []*row
	var natsURL string
	for _, b := range o.brokers {
		url, addr, err := e.openBroker(ctx, o, b)
		if err != nil {
			e.skip(err.Error(), rawRowName(b), meshRowName(b))
			continue
		}
		if b == "nats" {
			natsURL = url
		}
		// The broker's own CPU per call goes beside the clients': a broker
		// is in every call's path too.
		srv := e.servers[b]
		if r, err := e.rawRow(ctx, b, url, addr); err != nil {
			e.skip(err.Error(), rawRowName(b))
		} else {
			raws = append(raws, r.with(srv))
		}
		if r, err := e.meshHTTPRow(ctx, b, url); err != nil {
			e.skip(err.Error(), meshRowName(b))
		} else {
			meshes = append(meshes, r.with(srv))
		}
		if b == "nats" {
			if r, err := e.meshHTTPSecureRow(ctx, url); err != nil {
				e.skip(err.Error(), rowMeshSecure)
			} else {
				meshes = append(meshes, r.with(srv))
			}
		}
	}
	e.rows = append(append(e.rows, raws...), meshes...)

	if r, err := e.directGRPCRow(); err != nil {
		e.skip(err.Error(), rowDirectGRPC)
	} else {
		e.rows = append(e.rows, r)
	}
	switch {
	case !slices.Contains(o.brokers, "nats"):
		e.skip("nats is not among -brokers", rowMeshGRPC)
	case natsURL == "":
		e.skip("NATS is not reachable", rowMeshGRPC)
	default:
		if r, err := e.meshGRPCRow(ctx, natsURL); err != nil {
			e.skip(err.Error(), rowMeshGRPC)
		} else {
			e.rows = append(e.rows, r.with(e.servers["nats"]))
		}
	}
	if r, err := e.proxyRow(ctx); err != nil {
		e.skip(err.Error(), rowProxyChain)
	} else {
		e.rows = append(e.rows, r)
	}
	e.check(ctx, o.sizes)
	return e, ctx.Err()
}

// skip records rows that will not be measured.
func (e *env) skip(why string, rows ...string) {
	for _, r := range rows {
		e.skipped = append(e.skipped, skip{r, why})
	}
}

// close closes the clients, newest first; the supervisor stops processes.
func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		_ = e.closers[i]()
	}
	e.closers = nil
}

// openBroker makes broker b reachable: it probes NATS and RabbitMQ and
// starts the kfake cluster. It returns the URL sidecars use and the
// address raw clients use, and records the broker's server process.
func (e *env) openBroker(ctx context.Context, o *options, b string) (url, addr string, err error) {
	switch b {
	case "nats":
		addr = o.natsAddr
		if err := probe(addr); err != nil {
			return "", "", fmt.Errorf("NATS is not reachable at %s (%v); start it with: nats-server -a 127.0.0.1 -p 4222 -js (or bash .ci/run), or set BUSMESH_TEST_NATS", addr, err)
		}
		e.findServer(b, addr)
		return "nats://" + addr, addr, nil
	case "rabbitmq":
		addr = o.rabbitAddr
		if err := probe(addr); err != nil {
			return "", "", fmt.Errorf("RabbitMQ is not reachable at %s (%v); start it with: rabbitmq-server -detached (or bash .ci/run), or set BUSMESH_TEST_RABBITMQ", addr, err)
		}
		e.findServer(b, addr)
		url = "amqp://guest:guest@" + addr + "/"
		return url, url, nil
	case "kafka":
		p, addr, err := e.sup.startChild(ctx, "kfake", childTimeout, "kfake")
		if err != nil {
			return "", "", fmt.Errorf("start kfake: %w", err)
		}
		e.servers[b] = &rowProc{role: "broker (kfake)", pid: p.pid()}
		e.brokers = append(e.brokers, "kfake (franz-go, in-memory, one broker) at "+addr+", in a child process of the bench")
		return "kafka://" + addr, addr, nil
	}
	return "", "", fmt.Errorf("unknown broker %q", b)
}

// findServer records broker b's server process: the process on this
// machine listening at addr (nats-server, RabbitMQ's beam.smp), named by
// its command; a note for a broker it cannot see (on another machine).
func (e *env) findServer(b, addr string) {
	pid, err := listenerPID(addr)
	if err != nil {
		e.notes = append(e.notes, fmt.Sprintf("%s's server CPU is not reported: %v", b, err))
		return
	}
	e.servers[b] = &rowProc{role: "broker (" + processName(pid) + ")", pid: pid}
}

// with returns r with p among its processes, when p is not nil.
func (r *row) with(p *rowProc) *row {
	if p != nil {
		r.procs = append(r.procs, *p)
	}
	return r
}

// probe checks that something listens at addr.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// rawRow connects the broker's own client for request/reply and starts its
// responder process.
func (e *env) rawRow(ctx context.Context, b, url, addr string) (*row, error) {
	name := e.runID + "-raw-" + b
	var (
		r     requester
		about string
		err   error
	)
	switch b {
	case "nats":
		var version string
		r, version, err = newNATSRequester(url, name)
		about = "nats.go Conn.RequestWithContext to a queue-group subscriber that calls Msg.Respond"
		if err == nil {
			e.brokers = append(e.brokers, version+" at "+addr)
		}
	case "rabbitmq":
		var version string
		r, version, err = newRabbitRequester(url, name)
		about = "amqp091-go: publish to a queue with direct reply-to (amq.rabbitmq.reply-to) and a correlation id; the responder publishes the body back"
		if err == nil {
			e.brokers = append(e.brokers, version+" at "+strings.TrimSuffix(strings.TrimPrefix(addr, "amqp://guest:guest@"), "/"))
		}
	case "kafka":
		r, err = newKafkaRequester(ctx, addr, name)
		about = "franz-go kgo: produce to a request topic, the responder produces to a reply topic; long-poll fetch, linger 0"
	}
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, r.close)
	target := url
	if b == "kafka" {
		target = addr
	}
	p, _, err := e.sup.startChild(ctx, rawRowName(b)+" responder", childTimeout, "responder", "-kind", b, "-url", target, "-name", name)
	if err != nil {
		return nil, err
	}
	return &row{name: rawRowName(b), about: about, broker: b, calls: rawCallers(r),
		procs: []rowProc{{role: "responder", pid: p.pid()}}}, nil
}

// meshPair starts an adapter in front of target and an ambassador for it,
// on broker url. The ambassador listens on the address returned.
func (e *env) meshPair(ctx context.Context, rowName, url, service, target string, grpcPort bool) (amb, ad *sidecar, listen string, err error) {
	var admins [2]string
	for i := range admins {
		if admins[i], err = freeAddr(); err != nil {
			return nil, nil, "", err
		}
	}
	if listen, err = freeAddr(); err != nil {
		return nil, nil, "", err
	}
	ad, err = startSidecar(ctx, e.sup, e.binary, sidecarSpec{Name: rowName + " adapter", ID: e.runID + "-" + rowName + "-adapter",
		Broker: url, Admin: admins[0], Service: service, Target: target})
	if err != nil {
		return nil, nil, "", err
	}
	amb, err = startSidecar(ctx, e.sup, e.binary, sidecarSpec{Name: rowName + " ambassador", ID: e.runID + "-" + rowName + "-ambassador",
		Broker: url, Admin: admins[1], Service: service, GRPC: grpcPort, Listen: listen})
	if err != nil {
		return nil, nil, "", err
	}
	return amb, ad, listen, nil
}

func sidecarProcs(amb, ad *sidecar) []rowProc {
	return []rowProc{
		{role: "ambassador", pid: amb.proc.pid(), admin: amb.admin, sidecar: true},
		{role: "adapter", pid: ad.proc.pid(), admin: ad.admin, sidecar: true},
	}
}

// meshHTTPRow is busmesh's HTTP path on broker b: app → ambassador's
// per-service port → broker → adapter → echo application.
func (e *env) meshHTTPRow(ctx context.Context, b, url string) (*row, error) {
	name := meshRowName(b)
	amb, ad, listen, err := e.meshPair(ctx, name, url, e.runID+"-echo-"+b, "http://"+e.appHTTP, false)
	if err != nil {
		if errors.Is(err, errUnknownScheme) {
			return nil, fmt.Errorf("not measured: the busmesh binary does not register the %q broker scheme (cmd/busmesh does not import its backend)", strings.SplitN(url, ":", 2)[0])
		}
		return nil, err
	}
	client := newHTTPClient(e.maxConc)
	e.closers = append(e.closers, func() error { client.CloseIdleConnections(); return nil })
	return &row{name: name, broker: b, procs: sidecarProcs(amb, ad),
		about: "busmesh: POST to the ambassador's per-service port (`upstreams`), an envelope over " + b + " to the adapter, which calls the echo application",
		calls: httpCallers(client, "http://"+listen+"/echo")}, nil
}

// directGRPCRow calls the application's gRPC server itself.
func (e *env) directGRPCRow() (*row, error) {
	client, err := e.grpcClient(e.appGRPC, "")
	if err != nil {
		return nil, err
	}
	return &row{name: rowDirectGRPC, about: "gRPC unary Echo straight to the application's gRPC server: the floor of the gRPC row",
		calls: grpcCallers(client)}, nil
}

// meshGRPCRow is busmesh's gRPC path over NATS.
func (e *env) meshGRPCRow(ctx context.Context, url string) (*row, error) {
	service := e.runID + "-grpc"
	amb, ad, listen, err := e.meshPair(ctx, rowMeshGRPC, url, service, "grpc://"+e.appGRPC, true)
	if err != nil {
		return nil, err
	}
	client, err := e.grpcClient(listen, service+".mesh")
	if err != nil {
		return nil, err
	}
	return &row{name: rowMeshGRPC, broker: "nats", procs: sidecarProcs(amb, ad), calls: grpcCallers(client),
		about: "busmesh gRPC: unary Echo to the ambassador's `grpc:` port (:authority names the service), over NATS to an adapter with target grpc://"}, nil
}

// grpcClient dials addr with one connection shared by all workers.
func (e *env) grpcClient(addr, authority string) (testpb.EchoClient, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	e.closers = append(e.closers, conn.Close)
	return testpb.NewEchoClient(conn), nil
}

// proxyRow is the classic HTTP sidecar shape: two reverse proxies, each a
// process, in front of the application.
func (e *env) proxyRow(ctx context.Context) (*row, error) {
	p2, addr2, err := e.sup.startChild(ctx, "proxy 2", childTimeout, "proxy", "-upstream", "http://"+e.appHTTP)
	if err != nil {
		return nil, err
	}
	p1, addr1, err := e.sup.startChild(ctx, "proxy 1", childTimeout, "proxy", "-upstream", "http://"+addr2)
	if err != nil {
		return nil, err
	}
	client := newHTTPClient(e.maxConc)
	e.closers = append(e.closers, func() error { client.CloseIdleConnections(); return nil })
	return &row{name: rowProxyChain, procs: []rowProc{{role: "proxy 1", pid: p1.pid()}, {role: "proxy 2", pid: p2.pid()}},
		about: fmt.Sprintf("load generator → httputil.ReverseProxy → httputil.ReverseProxy → echo application, each proxy a process with a %d-connection keep-alive pool", proxyIdleConns),
		calls: httpCallers(client, "http://"+addr1+"/echo")}, nil
}

// check makes one call of each size on every row, retrying for a while
// (an ambassador learns of its adapter within a discovery round), and
// skips rows that do not answer.
func (e *env) check(ctx context.Context, sizes []int) {
	kept := e.rows[:0]
	for _, r := range e.rows {
		if err := checkRow(ctx, r, sizes); err != nil {
			e.skip("set up, but does not answer: "+err.Error(), r.name)
			continue
		}
		kept = append(kept, r)
	}
	e.rows = kept
}

func checkRow(ctx context.Context, r *row, sizes []int) error {
	deadline := time.Now().Add(15 * time.Second)
	for _, size := range sizes {
		call, err := r.calls(size)
		if err != nil {
			return err
		}
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = call(cctx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d-byte call: %w", size, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// row returns the row named name, or nil.
func (e *env) row(name string) *row {
	for _, r := range e.rows {
		if r.name == name {
			return r
		}
	}
	return nil
}
