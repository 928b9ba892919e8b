package hostile

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// runFor is how long each case calls: seconds in CI, longer under make
// hostile.
func runFor() time.Duration {
	if long() {
		return 20 * time.Second
	}
	return 3 * time.Second
}

// publish sends announcements to the mesh's discovery subject of service.
func publish(ctx context.Context, t testing.TB, b broker.Broker, mesh, service string, msgs ...*busmeshv1.Announcement) {
	subject := broker.NewSubjects(mesh).Discovery(service)
	for _, a := range msgs {
		data, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, subject, data); err != nil && ctx.Err() == nil {
			t.Errorf("forge: %v", err)
			return
		}
	}
}

// TestForgedAnnouncements: while three instances serve, a neighbour says,
// about each of them, goodbye, unhealthy with a very high sequence number
// and a minute's interval, every 50ms, under its own sidecar id and under
// the real sidecar's id with another incarnation, starting before the
// caller does. Issue 19 saw that make every call fail for 181s; no call
// may fail.
func TestForgedAnnouncements(t *testing.T) {
	url := requireNATS(t)
	for _, lb := range []string{"queue", "direct"} {
		t.Run(lb, func(t *testing.T) {
			m := newMesh(t, url)
			ids := map[string]string{}
			for i := range 3 {
				inst := fmt.Sprintf("i%d", i)
				ids[inst] = unique("adapter")
				m.addInstance(ids[inst], inst)
			}
			// The forging starts before the caller does: what it hears
			// first is forged.
			f := forger(t, url)
			var wg sync.WaitGroup
			defer wg.Wait()
			forging, cancel := context.WithCancel(t.Context())
			defer cancel()
			wg.Go(func() {
				for forging.Err() == nil {
					for inst, id := range ids {
						for _, sidecar := range []string{"evil", id} {
							publish(forging, t, f, m.name, m.service,
								&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_GOODBYE, Service: m.service,
									Instance: inst, Sidecar: sidecar, Incarnation: "forged"},
								&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: m.service,
									Instance: inst, Sidecar: sidecar, Incarnation: "forged", Healthy: false,
									Seq: 1 << 62, IntervalMs: 60_000})
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
			})
			time.Sleep(200 * time.Millisecond)
			m.startCaller(lb)
			m.waitHealthy(3)
			ctx, stop := context.WithTimeout(forging, runFor())
			defer stop()
			res := m.load(ctx, 8)
			t.Logf("%d calls ok, failures: %v", res.ok, res.failures)
			if res.failed() > 0 || res.ok == 0 {
				t.Errorf("%d calls failed (%v), %d ok; want none failed", res.failed(), res.failures, res.ok)
			}
			if got := m.caller.metric(`busmesh_envelopes_rejected_total{component="discovery",reason="foreign"}`); got == 0 {
				t.Error("no forged announcement counted as foreign")
			}
		})
	}
}

// TestGhostInstances: a neighbour announces 500 instances nobody runs,
// healthy, every interval for half the run, then stops. In queue mode they
// change nothing; in direct mode a call sent to one comes back from the
// broker undelivered, the ambassador leaves it out and tries another: no
// call may fail. The registry keeps no more than its bound.
func TestGhostInstances(t *testing.T) {
	url := requireNATS(t)
	for _, lb := range []string{"queue", "direct"} {
		t.Run(lb, func(t *testing.T) {
			m := newMesh(t, url)
			for i := range 3 {
				m.addInstance(unique("adapter"), fmt.Sprintf("i%d", i))
			}
			m.startCaller(lb)
			m.waitHealthy(3)
			f := forger(t, url)
			ghosts := make([]*busmeshv1.Announcement, 500)
			for i := range ghosts {
				ghosts[i] = &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: m.service,
					Instance: fmt.Sprintf("ghost%03d", i), Sidecar: "ghost", Incarnation: "g", Healthy: true,
					IntervalMs: 60_000, Seq: 1}
			}
			d := runFor()
			ctx, cancel := context.WithTimeout(t.Context(), d)
			defer cancel()
			var wg sync.WaitGroup
			wg.Go(func() {
				for stop := time.Now().Add(d / 2); ctx.Err() == nil && time.Now().Before(stop); {
					publish(ctx, t, f, m.name, m.service, ghosts...)
					time.Sleep(m.interval)
				}
			})
			res := m.load(ctx, 8)
			wg.Wait()
			t.Logf("%d calls ok, failures: %v", res.ok, res.failures)
			if res.failed() > 0 || res.ok == 0 {
				t.Errorf("%d calls failed (%v), %d ok; want none failed", res.failed(), res.failures, res.ok)
			}
			known := 0
			for _, s := range m.caller.services(m.service).Services {
				known = len(s.Instances)
			}
			t.Logf("the caller knows %d instances", known)
			if known > 503 {
				t.Errorf("the caller knows %d instances, more than were announced", known)
			}
		})
	}
}

// TestDuplicateInstanceID: two adapters misconfigured with one instance
// id, beside a third instance. The conflict is logged by both and shown
// by the caller; no call fails, neither while both run nor when the first
// of them stops.
func TestDuplicateInstanceID(t *testing.T) {
	url := requireNATS(t)
	m := newMesh(t, url)
	first := m.addInstance(unique("first"), "twin")
	m.addInstance(unique("other"), "other")
	m.startCaller("direct")
	m.waitHealthy(2)
	second := m.addInstance(unique("second"), "twin")
	d := runFor()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		select {
		case <-time.After(d / 2):
			first.stop()
		case <-ctx.Done():
		}
	})
	var conflict string
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ctx.Err() == nil && conflict == "" {
			for _, s := range m.caller.services(m.service).Services {
				for _, in := range s.Instances {
					if in.Conflict != "" {
						conflict = in.Name + " also claimed by " + in.Conflict
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	res := m.load(ctx, 8)
	<-watched
	t.Logf("%d calls ok, failures: %v; caller saw: %q", res.ok, res.failures, conflict)
	if res.failed() > 0 || res.ok == 0 {
		t.Errorf("%d calls failed (%v), %d ok; want none failed", res.failed(), res.failures, res.ok)
	}
	if conflict == "" {
		t.Error("the caller never showed the conflict")
	}
	for _, s := range []*sidecar{first, second} {
		if !strings.Contains(s.log.String(), "also claimed by another live sidecar") {
			t.Errorf("%s did not log the conflict", s.name)
		}
	}
}
