package hostile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/discovery"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestForgedSignedAnnouncements: in a mesh with identities, three
// instances serve in direct mode while a careful forger, which reads the
// real announcements off the bus and holds a valid certificate of another
// service of the mesh, says every 50ms about each instance: goodbye and
// unhealthy with a very high sequence under the real sidecar id and
// incarnation, unsigned; the same and a healthy claim of the instance
// from another sidecar (another inbox), signed with its own certificate;
// and the real signed heartbeat altered (unhealthy, another sidecar),
// with its original signature. The forging starts before the caller.
// Each is rejected before the registry and counted by reason; the caller
// keeps the three real instances; no call fails.
func TestForgedSignedAnnouncements(t *testing.T) {
	url := requireNATS(t)
	m := newMesh(t, url)
	m.secure()
	for i := range 3 {
		m.addInstance(unique("adapter"), fmt.Sprintf("i%d", i))
	}
	f := forger(t, url)
	intruder := discovery.NewSigner(m.ca.source(t, "intruder"))
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	forging, cancel := context.WithCancel(t.Context())
	defer cancel()

	// What the real instances say, as heard on the bus.
	var mu sync.Mutex
	heard := map[string][]byte{}
	subject := broker.NewSubjects(m.name).Discovery(m.service)
	sub, err := f.Subscribe(forging, subject, func(_ context.Context, data []byte) {
		var a busmeshv1.Announcement
		if proto.Unmarshal(data, &a) != nil || a.Kind != busmeshv1.Announcement_KIND_HELLO || a.Sidecar == "evil" ||
			len(a.Signature) == 0 {
			return
		}
		mu.Lock()
		heard[a.Instance] = append([]byte(nil), data...)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	forge := func(real []byte) [][]byte {
		var r busmeshv1.Announcement
		if err := proto.Unmarshal(real, &r); err != nil {
			t.Error(err)
			return nil
		}
		copied := func(kind busmeshv1.Announcement_Kind, sidecar, incarnation string, healthy bool) *busmeshv1.Announcement {
			return &busmeshv1.Announcement{Kind: kind, Service: r.Service, Instance: r.Instance, Sidecar: sidecar,
				Incarnation: incarnation, Healthy: healthy, Seq: 1 << 62, IntervalMs: 60_000}
		}
		var out [][]byte
		add := func(b []byte, err error) {
			if err != nil {
				t.Error(err)
				return
			}
			out = append(out, b)
		}
		for _, kind := range []busmeshv1.Announcement_Kind{busmeshv1.Announcement_KIND_GOODBYE, busmeshv1.Announcement_KIND_HELLO} {
			add(proto.Marshal(copied(kind, r.Sidecar, r.Incarnation, false)))    // unauthenticated
			add(intruder.Marshal(copied(kind, r.Sidecar, r.Incarnation, false))) // wrong-service
		}
		add(intruder.Marshal(copied(busmeshv1.Announcement_KIND_HELLO, "evil", "x", true))) // another inbox
		// The real message, altered, with its own signature: bad-signature.
		const sigLen = 67
		msg, sig := real[:len(real)-sigLen], real[len(real)-sigLen:]
		var alt busmeshv1.Announcement
		if err := proto.Unmarshal(msg, &alt); err != nil {
			t.Error(err)
			return out
		}
		alt.Healthy, alt.Seq, alt.Sidecar = false, 1<<62, "evil"
		b, err := proto.Marshal(&alt)
		add(append(b, sig...), err)
		return out
	}

	wg.Go(func() {
		for forging.Err() == nil {
			mu.Lock()
			var msgs [][]byte
			for _, real := range heard {
				msgs = append(msgs, forge(real)...)
			}
			mu.Unlock()
			for _, b := range msgs {
				if err := f.Publish(forging, subject, b); err != nil && forging.Err() == nil {
					t.Errorf("forge: %v", err)
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(heard)
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forger heard %d instances in 5s, want 3", n)
		}
	}
	time.Sleep(200 * time.Millisecond) // what the caller hears first is forged too
	m.startCaller("direct")
	m.waitHealthy(3)
	ctx, stop := context.WithTimeout(forging, runFor())
	defer stop()
	res := m.load(ctx, 8)
	t.Logf("%d calls ok, failures: %v", res.ok, res.failures)
	if res.failed() > 0 || res.ok == 0 {
		t.Errorf("%d calls failed (%v), %d ok; want none failed", res.failed(), res.failures, res.ok)
	}
	for _, reason := range []string{"unauthenticated", "wrong-service", "bad-signature"} {
		got := m.caller.metric(`busmesh_envelopes_rejected_total{component="discovery",reason="` + reason + `"}`)
		t.Logf("rejected %s: %v", reason, got)
		if got == 0 {
			t.Errorf("no forged announcement counted as %s", reason)
		}
	}
	if got := m.caller.metric(`busmesh_envelopes_rejected_total{component="discovery",reason="foreign"}`); got != 0 {
		t.Errorf("%v forged announcements reached the registry (foreign)", got)
	}
	for _, s := range m.caller.services(m.service).Services {
		if s.Healthy != 3 || len(s.Instances) != 3 {
			t.Errorf("the caller knows %d instances, %d healthy; want the 3 real ones", len(s.Instances), s.Healthy)
		}
		for _, in := range s.Instances {
			if in.Sidecar == "evil" || in.Conflict != "" {
				t.Errorf("instance %s: sidecar %q, conflict %q: a forgery was believed", in.Name, in.Sidecar, in.Conflict)
			}
		}
	}
}
