package discovery_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/internal/discovery"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func hello(service, instance string, healthy bool, seq uint64) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: service, Instance: instance,
		Sidecar: instance, Healthy: healthy, IntervalMs: 1000, Seq: seq}
}

func goodbye(service, instance string) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_GOODBYE, Service: service, Instance: instance, Sidecar: instance}
}

func names(insts []discovery.Instance) []string {
	var n []string
	for _, i := range insts {
		n = append(n, i.Name)
	}
	return n
}

func TestRegistry(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistry(c.now)
	steps := []struct {
		name        string
		apply       *busmeshv1.Announcement
		advance     time.Duration
		wantChanged bool
		wantHealthy []string
		wantAll     []string
	}{
		{"first hello", hello("orders", "b", true, 1), 0, true, []string{"b"}, []string{"b"}},
		{"second instance", hello("orders", "a", true, 1), 0, true, []string{"a", "b"}, []string{"a", "b"}},
		{"repeat hello", hello("orders", "a", true, 2), 0, false, []string{"a", "b"}, []string{"a", "b"}},
		{"turns unhealthy", hello("orders", "b", false, 2), 0, true, []string{"a"}, []string{"a", "b"}},
		{"stale hello ignored", hello("orders", "b", true, 1), 0, false, []string{"a"}, []string{"a", "b"}},
		{"goodbye", goodbye("orders", "a"), 0, true, nil, []string{"b"}},
		{"unknown goodbye", goodbye("orders", "zz"), 0, false, nil, []string{"b"}},
	}
	for _, s := range steps {
		c.advance(s.advance)
		if got := r.Apply(s.apply); got != s.wantChanged {
			t.Errorf("%s: Apply() = %v, want %v", s.name, got, s.wantChanged)
		}
		if diff := cmp.Diff(names(r.Healthy("orders")), s.wantHealthy); diff != "" {
			t.Errorf("%s: Healthy (-got +want):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(names(r.Instances("orders")), s.wantAll); diff != "" {
			t.Errorf("%s: Instances (-got +want):\n%s", s.name, diff)
		}
	}
}

func TestRegistryExpiry(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistry(c.now)
	r.Apply(hello("orders", "a", true, 1)) // interval 1s: TTL 3s
	c.advance(2 * time.Second)
	r.Apply(hello("orders", "b", true, 1))
	c.advance(1500 * time.Millisecond)
	gone := r.Expire()
	if diff := cmp.Diff(names(gone), []string{"a"}); diff != "" {
		t.Errorf("Expire after 3.5s (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(names(r.Healthy("orders")), []string{"b"}); diff != "" {
		t.Errorf("Healthy (-got +want):\n%s", diff)
	}
	c.advance(2 * time.Second)
	r.Expire()
	if got := r.Services(); len(got) != 0 {
		t.Errorf("Services() = %v after every instance expired, want none", got)
	}
}

// TestRegistryChurn has instances join and leave from many goroutines
// while readers read, under -race, then checks the registry agrees with
// the last word of each instance.
func TestRegistryChurn(t *testing.T) {
	r := discovery.NewRegistry(nil)
	const instances, rounds = 16, 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, inst := range r.Healthy("svc") {
					if !inst.Healthy {
						t.Error("Healthy returned an unhealthy instance")
						return
					}
				}
			}
		})
	}
	var writers sync.WaitGroup
	for i := range instances {
		writers.Go(func() {
			name := fmt.Sprintf("i%02d", i)
			for round := range rounds {
				if round%3 == 2 {
					r.Apply(goodbye("svc", name))
				} else {
					r.Apply(hello("svc", name, round%2 == 0, uint64(round+1)))
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	// rounds-1 = 299: 299%3 == 2, a goodbye: every instance left last.
	if got := r.Instances("svc"); len(got) != 0 {
		t.Errorf("after every instance said goodbye last, Instances = %v", names(got))
	}
}

// TestRegistrySnapshotFollowsCapacity: load readings do not rebuild the
// healthy snapshot, but what an instance can take does once it moves
// enough from what the snapshot shows: its concurrency, its first measured
// service time, and a drift of more than half, step by small step.
func TestRegistrySnapshotFollowsCapacity(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistry(c.now)
	seq := uint64(0)
	say := func(concurrency uint32, serviceTime time.Duration, inflight uint32) {
		seq++
		a := hello("orders", "a", true, seq)
		a.Concurrency, a.ServiceTimeMicros, a.Inflight = concurrency, proto.Uint64(uint64(serviceTime.Microseconds())), inflight
		r.Apply(a)
	}
	shown := func() (int, time.Duration) {
		h := r.Healthy("orders")
		if len(h) != 1 {
			t.Fatalf("healthy %v", names(h))
		}
		return h[0].Concurrency, h[0].ServiceTime
	}
	ms := time.Millisecond
	say(4, 0, 0)
	say(4, 0, 3) // a load reading only
	if n, st := shown(); n != 4 || st != 0 {
		t.Fatalf("snapshot shows %d, %v; want 4, 0", n, st)
	}
	say(4, 50*ms, 1)
	if _, st := shown(); st != 50*ms {
		t.Errorf("first measured service time: snapshot shows %v, want 50ms", st)
	}
	for _, st := range []time.Duration{45 * ms, 40 * ms, 36 * ms} { // each step under a third
		say(4, st, 0)
	}
	if _, st := shown(); st != 50*ms {
		t.Errorf("a drift within a third: snapshot shows %v, want 50ms still", st)
	}
	say(4, 32*ms, 0) // under two thirds of 50 ms
	if _, st := shown(); st != 32*ms {
		t.Errorf("a drift past a third: snapshot shows %v, want 32ms", st)
	}
	say(8, 32*ms, 0)
	if n, _ := shown(); n != 8 {
		t.Errorf("concurrency 4 → 8: snapshot shows %d", n)
	}
}
