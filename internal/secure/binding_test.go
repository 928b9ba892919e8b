package secure_test

import (
	"context"
	"errors"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/testutil"
)

// TestBindingsByService: two services name one subject to answer on. What
// is sealed for one of them (ForPeer) opens for it alone; with no service
// named the subject is ambiguous and nothing is sealed; a service's later
// binding replaces its own, not the other's.
func TestBindingsByService(t *testing.T) {
	ca := testutil.NewMeshCA(t, broker.DefaultMesh)
	srcs := map[string]*identity.Source{}
	guards := map[string]*secure.Guard{}
	for _, s := range []string{"orders", "web", "evil"} {
		srcs[s] = ca.Source(t, s)
		guards[s] = secure.New(secure.Options{Source: srcs[s]})
	}
	orders := srcs["orders"].Current()
	for _, s := range []string{"web", "evil"} {
		peer, err := orders.VerifyPeer(srcs[s].Current().Cert().Raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srcs[s].Current().VerifyPeer(orders.Cert().Raw); err != nil {
			t.Fatal(err)
		}
		guards["orders"].Bind("inbox", secure.Sender{Peer: peer, Local: orders})
	}
	msg := (&envelope.Response{ID: 1, Status: 200}).AppendEnvelope(nil)
	for _, s := range []string{"web", "evil"} {
		b, err := guards["orders"].Seal(secure.ForPeer(context.Background(), &s), "inbox", msg)
		if err != nil {
			t.Fatalf("seal for %s: %v", s, err)
		}
		other := map[string]string{"web": "evil", "evil": "web"}[s]
		if _, _, err := guards[s].Open(b); err != nil {
			t.Errorf("%s cannot open what was sealed for it: %v", s, err)
		}
		if _, _, err := guards[other].Open(b); err == nil {
			t.Errorf("%s opened what was sealed for %s", other, s)
		}
	}
	if _, err := guards["orders"].Seal(context.Background(), "inbox", msg); !errors.Is(err, secure.ErrNoReceiver) {
		t.Errorf("seal naming no service for a subject two services bound: %v, want ErrNoReceiver", err)
	}
	billing := "billing"
	if _, err := guards["orders"].Seal(secure.ForPeer(context.Background(), &billing), "inbox", msg); !errors.Is(err, secure.ErrNoReceiver) {
		t.Errorf("seal for a service that never named the subject: %v, want ErrNoReceiver", err)
	}
}
