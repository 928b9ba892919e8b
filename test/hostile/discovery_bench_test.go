package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/identity"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// BenchmarkDiscovery simulates N instances in M services beside one real
// service ("big", one real adapter), and measures one ambassador that
// routes to "big": its idle CPU (percent of a core), RSS, the discovery
// messages that reach its broker connection, and the calls per second
// through it (8 callers, queue mode; calls-x-quiet compares windows with
// the simulator running and paused). An in-process watcher of "big" measures join
// and goodbye to routable/dropped, a crashed instance's drop, and a
// restart (routable to all, and the answers it caused). Each scenario
// runs on a nats-server of its own with monitoring, started by the
// benchmark. Ratios are against the empty mesh, which runs first.
//
// BUSMESH_BENCH_BEFORE=path runs the scenarios against an older busmesh
// binary that still announced every instance on one mesh-wide subject
// (busmesh.<mesh>.discovery, pings answered by broadcast), with the
// simulator speaking that protocol, for the before/after figures; the
// in-process latencies are then not measured.
//
// Each scenario runs once whatever b.N: run it with make discovery-bench
// (-benchtime 1x); the figures are the reported metrics, not ns/op.
func BenchmarkDiscovery(b *testing.B) {
	for _, sc := range []scenario{
		{name: "empty"},
		{name: "unrouted-20000in2000", others: 2000, perOther: 10},
		{name: "routed-1000in1", inBig: 999},
		{name: "routed-5000in1", inBig: 4999},
		{name: "storm-10000/s-unheard", storm: 10_000, unheard: true},
		{name: "storm-10000/s", storm: 10_000},
		{name: "signed-empty", signed: true},
		{name: "signed-routed-1000in1", inBig: 999, signed: true},
		{name: "signed-routed-5000in1", inBig: 4999, signed: true},
		{name: "signed-storm-10000/s", storm: 10_000, signed: true},
	} {
		b.Run(sc.name, func(b *testing.B) { benchDiscovery(b, sc) })
	}
}

// scenario is one mesh the ambassador lives in.
type scenario struct {
	name             string
	inBig            int // simulated instances in the routed service
	others, perOther int // simulated services not routed, instances each
	// storm is a neighbour's discovery messages per second about the
	// routed service: a third forged hellos about its real instance, a
	// third hellos of instances nobody runs, a third pings with a reply
	// subject each.
	storm int
	// unheard sends the storm to another mesh, which nobody reads: what
	// the storm costs the machine (its sender, the broker) without
	// reaching any sidecar, the baseline of the storm's ratio.
	unheard bool
	// signed gives the mesh identities: the sidecars sign and check
	// announcements, and so do the simulated instances (each signs every
	// heartbeat, with its own hash chain); the storm stays unsigned. The
	// in-process latencies are not measured.
	signed bool
}

// empty holds the empty mesh's figures, for the ratios.
var empty struct {
	cpu, rss, rate float64
}

// unheard is the calls per second under a storm nobody reads.
var unheard float64

// benchInterval is the announcement interval of the benchmark: the
// default.
const benchInterval = 2 * time.Second

func benchDiscovery(b *testing.B, sc scenario) {
	b.StopTimer()
	inBig, others, perOther, isEmpty := sc.inBig, sc.others, sc.perOther, sc.name == "empty"
	srv := startNATS(b)
	url := "nats://" + srv.addr
	m := newMesh(b, url)
	m.service, m.interval = "big", benchInterval
	if sc.signed {
		m.secure()
	}
	before := os.Getenv("BUSMESH_BENCH_BEFORE")
	if before != "" {
		m.bin = before
	}
	adapter := m.addInstance(unique("real"), "real")

	s := newSim(b, url, m.name)
	s.legacy = before != ""
	if sc.signed {
		s.ca = m.ca
	}
	s.add("big", "sim", inBig)
	for i := range others {
		s.add(fmt.Sprintf("other%04d", i), "sim", perOther)
	}
	ctx, cancel := context.WithCancel(b.Context())
	defer s.wg.Wait()
	defer cancel()
	s.start(ctx)

	if sc.storm > 0 {
		mesh := m.name
		if sc.unheard {
			mesh = unique("elsewhere")
		}
		s.storm(ctx, mesh, sc.storm)
	}
	conns := srv.clients(b)
	m.startCaller("queue")
	amb := srv.newClient(b, conns)
	if got := m.awaitHealthy(1+inBig, 20*time.Second); got < 1+inBig {
		if !s.legacy {
			b.Fatalf("the caller knows %d healthy instances after 20s, want %d", got, 1+inBig)
		}
		b.Logf("before: the caller knows %d healthy instances after 20s, of %d", got, 1+inBig)
	}

	// Idle: the ambassador's CPU, RSS and messages over a window.
	idle := 5 * time.Second
	cpu0, msgs0 := procCPU(b, m.caller.cmd.Process.Pid), srv.outMsgs(b, amb)
	acpu0 := procCPU(b, adapter.cmd.Process.Pid)
	time.Sleep(idle)
	cpu := (procCPU(b, m.caller.cmd.Process.Pid) - cpu0).Seconds() / idle.Seconds() * 100
	b.ReportMetric((procCPU(b, adapter.cmd.Process.Pid)-acpu0).Seconds()/idle.Seconds()*100, "adapter-idle-cpu-%")
	msgs := float64(srv.outMsgs(b, amb)-msgs0) / idle.Seconds()
	rss := procRSS(b, m.caller.cmd.Process.Pid)

	switch {
	case sc.signed:
		s.crash("big", "real-crash") // as measureLatencies does
	case !s.legacy:
		measureLatencies(b, url, m.name, s, inBig+1).report(b)
	}

	// Calls through the ambassador: windows with the simulator running
	// and paused alternate, so the ratio compares like with like on a
	// machine whose load varies.
	rate, quiet, failed := callRates(m, s)
	if n := failed.failed(); n > 0 {
		b.Errorf("%d calls failed: %v", n, failed.failures)
	}
	if s.active() {
		b.ReportMetric(rate/quiet, "calls-x-quiet")
	}
	b.ReportMetric(cpu, "idle-cpu-%")
	b.ReportMetric(rss, "rss-MB")
	b.ReportMetric(msgs, "msgs-in/s")
	b.ReportMetric(float64(len(m.caller.services("big").GetServices()[0].GetInstances())), "known")
	b.ReportMetric(rate, "calls/s")
	if sc.signed {
		rejected := 0.0
		for _, reason := range []string{"unauthenticated", "unknown-key", "bad-signature", "wrong-service", "stale", "foreign"} {
			rejected += m.caller.metric(`busmesh_envelopes_rejected_total{component="discovery",reason="` + reason + `"}`)
		}
		b.ReportMetric(rejected, "discovery-rejected")
	}
	switch {
	case isEmpty:
		empty.cpu, empty.rss, empty.rate = cpu, rss, rate
	case sc.unheard:
		unheard = rate
	case sc.storm > 0 && unheard > 0:
		b.ReportMetric(rate/unheard, "calls-x-unheard")
	}
	if !isEmpty && empty.rss > 0 {
		b.ReportMetric(cpu-empty.cpu, "cpu-minus-empty-%")
		b.ReportMetric(rss/empty.rss, "rss-x-empty")
		b.ReportMetric(rate/empty.rate, "calls-x-empty")
	}
}

// callRates calls the service through the caller from 8 goroutines in
// six windows of 1.5s, the simulator paused in every other one (shorter
// than any lifetime, so nothing expires), and returns the calls per
// second with it running and paused, and the calls that failed.
func callRates(m *mesh, s *sim) (running, paused float64, failed result) {
	failed.failures = map[string]int{}
	const window = 1500 * time.Millisecond
	var on, off int
	for i := range 6 {
		s.paused.Store(i%2 == 1)
		ctx, cancel := context.WithTimeout(context.Background(), window)
		res := m.load(ctx, 8)
		cancel()
		for why, n := range res.failures {
			failed.failures[why] += n
		}
		if i%2 == 1 {
			off += res.ok
		} else {
			on += res.ok
		}
	}
	s.paused.Store(false)
	secs := 3 * window.Seconds()
	return float64(on) / secs, float64(off) / secs, failed
}

// latencies are what the in-process watcher measured.
type latencies struct {
	join, leave  []time.Duration
	crash        time.Duration
	restart      time.Duration
	restartAsked int64 // answers the restart caused
}

func (l latencies) report(b *testing.B) {
	b.ReportMetric(ms(slices.Max(l.join)), "join-max-ms")
	b.ReportMetric(ms(slices.Max(l.leave)), "leave-max-ms")
	b.ReportMetric(l.crash.Seconds(), "crash-drop-s")
	b.ReportMetric(ms(l.restart), "restart-ms")
	b.ReportMetric(float64(l.restartAsked), "restart-msgs")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measureLatencies watches "big" from this process: join and goodbye of
// five instances, a crash, then a restart with n instances known.
func measureLatencies(b *testing.B, url, mesh string, s *sim, n int) latencies {
	conn := s.open(b, url)
	watch := func() (*discovery.Registry, *discovery.Watcher) {
		reg := discovery.NewRegistryWith(discovery.Options{Interval: benchInterval})
		reg.Route([]string{"big"})
		w, err := discovery.Watch(b.Context(), conn, mesh, reg, nil, 0)
		if err != nil {
			b.Fatal(err)
		}
		return reg, w
	}
	has := func(reg *discovery.Registry, name string) bool {
		return slices.ContainsFunc(reg.Healthy("big"), func(in discovery.Instance) bool { return in.Name == name })
	}
	until := func(what string, limit time.Duration, cond func() bool) time.Duration {
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				b.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(200 * time.Microsecond)
		}
		return time.Since(start)
	}
	reg, w := watch()
	until("the watcher to know every instance", 10*time.Second, func() bool { return len(reg.Healthy("big")) >= n })
	var l latencies
	subject := broker.NewSubjects(mesh).Discovery("big")
	for i := range 5 {
		name := fmt.Sprintf("joiner%d", i)
		hello, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big",
			Instance: name, Sidecar: name, Healthy: true, IntervalMs: uint32(benchInterval.Milliseconds()), Seq: 1})
		bye, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_GOODBYE, Service: "big",
			Instance: name, Sidecar: name, Seq: 2})
		start := time.Now()
		s.publish(b, subject, hello)
		until("join", 5*time.Second, func() bool { return has(reg, name) })
		l.join = append(l.join, time.Since(start))
		start = time.Now()
		s.publish(b, subject, bye)
		until("goodbye", 5*time.Second, func() bool { return !has(reg, name) })
		l.leave = append(l.leave, time.Since(start))
	}
	s.crash("big", "real-crash")
	start := time.Now()
	until("crash", 20*time.Second, func() bool { return !has(reg, "real-crash") })
	l.crash = time.Since(start)
	w.Close()

	asked := s.answers.Load()
	start = time.Now()
	reg, w = watch()
	until("restart", 10*time.Second, func() bool { return len(reg.Healthy("big")) >= n-1 })
	l.restart = time.Since(start)
	time.Sleep(100 * time.Millisecond) // late answers count too
	l.restartAsked = s.answers.Load() - asked
	w.Close()
	return l
}

// sim simulates instances: heartbeats at benchInterval, spread evenly,
// and answers to pings, to the asker's inbox.
type sim struct {
	b        testing.TB
	conn     broker.Broker
	subjects broker.Subjects
	mesh     string
	legacy   bool // the protocol before per-service subjects
	answers  atomic.Int64
	paused   atomic.Bool // heartbeats and storm held back
	storming bool
	wg       sync.WaitGroup

	ca      *meshCA // set: the instances sign what they send
	sources map[string]*identity.Source

	mu       sync.Mutex
	services map[string][][]byte // service → its instances' hellos
	signed   map[string][]*signedInstance
	names    map[string][]string
	crashed  map[string]bool
}

func newSim(b testing.TB, url, mesh string) *sim {
	s := &sim{b: b, subjects: broker.NewSubjects(mesh), mesh: mesh, services: map[string][][]byte{},
		names: map[string][]string{}, crashed: map[string]bool{}, sources: map[string]*identity.Source{},
		signed: map[string][]*signedInstance{}}
	s.conn = s.open(b, url)
	return s
}

func (s *sim) open(b testing.TB, url string) broker.Broker {
	c, err := broker.Open(b.Context(), url, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// add simulates n instances of service, and one more in "big" that the
// benchmark crashes.
func (s *sim) add(service, prefix string, n int) {
	if service == "big" {
		n++
	}
	for i := range n {
		name := fmt.Sprintf("%s%05d", prefix, i)
		if service == "big" && i == n-1 {
			name = "real-crash"
		}
		a := &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: service,
			Instance: name, Sidecar: name, Incarnation: "sim", Healthy: true,
			IntervalMs: uint32(benchInterval.Milliseconds())}
		data, _ := proto.Marshal(a)
		s.services[service] = append(s.services[service], data)
		if s.ca != nil {
			src := s.sources[service]
			if src == nil {
				src = s.ca.source(s.b, service)
				s.sources[service] = src
			}
			s.signed[service] = append(s.signed[service], &signedInstance{a: a, signer: discovery.NewSigner(src)})
		}
		s.names[service] = append(s.names[service], name)
	}
}

// active reports whether the simulator sends anything but a heartbeat of
// the one instance it crashes.
func (s *sim) active() bool {
	n := 0
	for _, msgs := range s.services {
		n += len(msgs)
	}
	return s.storming || n > 1
}

// crash stops an instance's heartbeats, without a goodbye.
func (s *sim) crash(service, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crashed[name] = true
}

func (s *sim) publish(b testing.TB, subject string, data []byte) {
	if err := s.conn.Publish(b.Context(), subject, data); err != nil {
		b.Fatal(err)
	}
}

// start answers pings and heartbeats until ctx ends.
func (s *sim) start(ctx context.Context) {
	type hb struct {
		subject, name string
		data          []byte
		signed        *signedInstance // nil: send data
	}
	var all []hb
	if s.legacy {
		s.startLegacy(ctx)
	}
	for service, msgs := range s.services {
		subject := s.subjects.Discovery(service)
		if s.legacy {
			for i, data := range msgs {
				all = append(all, hb{subject: "busmesh." + s.mesh + ".discovery", name: s.names[service][i], data: data})
			}
			continue
		}
		signed := s.signed[service]
		for i, data := range msgs {
			h := hb{subject: subject, name: s.names[service][i], data: data}
			if signed != nil {
				h.signed = signed[i]
			}
			all = append(all, h)
		}
		_, err := s.conn.Subscribe(ctx, s.subjects.DiscoveryPing(service), func(_ context.Context, data []byte) {
			var p busmeshv1.Announcement
			if proto.Unmarshal(data, &p) != nil || p.ReplyTo == "" || strings.Contains(p.ReplyTo, ".storm") {
				return // the storm's pings are for the real adapter
			}
			for i, hello := range msgs {
				if p.Instance != "" && p.Instance != s.names[service][i] {
					continue
				}
				if signed != nil {
					hello = signed[i].next(s.b, true)
				}
				s.conn.Publish(ctx, p.ReplyTo, hello)
				s.answers.Add(1)
			}
		})
		if err != nil {
			s.b.Fatal(err)
		}
	}
	if len(all) == 0 {
		return
	}
	// Each instance heartbeats once per benchInterval, spread evenly; the
	// time paused does not count, so a pause delays every heartbeat by its
	// length and none is skipped.
	s.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		due := 0.0
		for next := 0; ; {
			var now time.Time
			select {
			case now = <-t.C:
			case <-ctx.Done():
				return
			}
			elapsed := now.Sub(last)
			last = now
			if s.paused.Load() {
				continue
			}
			due += float64(len(all)) * float64(elapsed) / float64(benchInterval)
			for ; due >= 1; due-- {
				h := all[next%len(all)]
				next++
				s.mu.Lock()
				crashed := s.crashed[h.name]
				s.mu.Unlock()
				if !crashed {
					data := h.data
					if h.signed != nil {
						data = h.signed.next(s.b, false)
					}
					s.conn.Publish(ctx, h.subject, data)
				}
			}
		}
	})
}

// signedInstance is a simulated instance that signs: every message has
// the next seq, the time and the chain token of that seq.
type signedInstance struct {
	mu     sync.Mutex
	a      *busmeshv1.Announcement
	signer *discovery.Signer
}

// next is the instance's next hello, signed; full (an answer to one
// asker) carries the certificate, as an adapter's does.
func (si *signedInstance) next(b testing.TB, full bool) []byte {
	si.mu.Lock()
	defer si.mu.Unlock()
	si.a.Seq++
	marshal := si.signer.Marshal
	if full {
		marshal = si.signer.MarshalFull
	}
	data, err := marshal(si.a)
	if err != nil {
		b.Error(err)
	}
	return data
}

// storm publishes perSecond discovery messages about "big" in mesh until
// ctx ends (see scenario.storm).
func (s *sim) storm(ctx context.Context, mesh string, perSecond int) {
	s.storming = true
	subjects := broker.NewSubjects(mesh)
	hello, ping := subjects.Discovery("big"), subjects.DiscoveryPing("big")
	if s.legacy {
		hello, ping = "busmesh."+mesh+".discovery", "busmesh."+mesh+".discovery.ping"
	}
	type msg struct {
		subject string
		data    []byte
	}
	msgs := make([]msg, 0, 30_000)
	for n := range 30_000 {
		var a *busmeshv1.Announcement
		subject := hello
		switch n % 3 {
		case 0:
			a = &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big", Instance: "real",
				Sidecar: "storm", Healthy: false, Seq: uint64(n) << 32, IntervalMs: 60_000}
		case 1:
			a = &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big",
				Instance: fmt.Sprintf("storm%d", n), Sidecar: "storm", Healthy: n%2 == 0, Seq: uint64(n)}
		default:
			subject = ping
			a = &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING, Service: "big",
				ReplyTo: subjects.DiscoveryInbox(fmt.Sprintf("storm%d", n))}
		}
		data, _ := proto.Marshal(a)
		msgs = append(msgs, msg{subject, data})
	}
	s.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for n := 0; ; {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			for range perSecond / 100 {
				if s.paused.Load() {
					break
				}
				m := msgs[n%len(msgs)]
				n++
				s.conn.Publish(ctx, m.subject, m.data)
			}
		}
	})
}

// startLegacy answers the pings of the protocol before per-service
// subjects: every instance of every service, broadcast.
func (s *sim) startLegacy(ctx context.Context) {
	subject := "busmesh." + s.mesh + ".discovery"
	_, err := s.conn.Subscribe(ctx, subject+".ping", func(context.Context, []byte) {
		for _, msgs := range s.services {
			for _, hello := range msgs {
				s.conn.Publish(ctx, subject, hello)
				s.answers.Add(1)
			}
		}
	})
	if err != nil {
		s.b.Fatal(err)
	}
}

// natsServer is a nats-server of the benchmark's own, with monitoring.
type natsServer struct {
	addr, monitor string
}

func startNATS(b testing.TB) *natsServer {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal("nats-server not found: install it (Debian: nats-server)")
		}
		b.Skip("nats-server not found")
	}
	s := &natsServer{addr: freePort(b), monitor: freePort(b)}
	host, port, _ := net.SplitHostPort(s.addr)
	_, mport, _ := net.SplitHostPort(s.monitor)
	cmd := exec.Command(bin, "-a", host, "-p", port, "-m", mport)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return s
		}
		if time.Since(start) > 10*time.Second {
			b.Fatal("nats-server did not start")
		}
	}
}

type connz struct {
	Connections []struct {
		CID     uint64 `json:"cid"`
		OutMsgs int64  `json:"out_msgs"`
	} `json:"connections"`
}

func (s *natsServer) connz(b testing.TB) connz {
	resp, err := http.Get("http://" + s.monitor + "/connz?limit=1000")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var c connz
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		b.Fatal(err)
	}
	return c
}

// clients returns the connections now.
func (s *natsServer) clients(b testing.TB) map[uint64]bool {
	ids := map[uint64]bool{}
	for _, c := range s.connz(b).Connections {
		ids[c.CID] = true
	}
	return ids
}

// newClient returns the one connection not in before.
func (s *natsServer) newClient(b testing.TB, before map[uint64]bool) uint64 {
	for _, c := range s.connz(b).Connections {
		if !before[c.CID] {
			return c.CID
		}
	}
	b.Fatal("no new connection")
	return 0
}

// outMsgs is how many messages the server delivered to connection cid.
func (s *natsServer) outMsgs(b testing.TB, cid uint64) int64 {
	for _, c := range s.connz(b).Connections {
		if c.CID == cid {
			return c.OutMsgs
		}
	}
	b.Fatalf("connection %d gone", cid)
	return 0
}

// procCPU is the CPU time process pid used so far.
func procCPU(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces): utime is the 14th
	// field of the line, stime the 15th, in clock ticks (100 per second).
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procRSS is the resident memory of process pid, in MB.
func procRSS(b testing.TB, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
