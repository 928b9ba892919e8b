package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
)

// fromTheFuture appends to an envelope what a newer sidecar might send: a
// field this version does not know, and the reserved credential fields
// (key id, timestamp, MAC last).
func fromTheFuture(enc []byte) []byte {
	enc = protowire.AppendTag(enc, 42, protowire.BytesType)
	enc = protowire.AppendString(enc, "a field from a newer sidecar")
	enc = protowire.AppendTag(enc, 10, protowire.BytesType)
	enc = protowire.AppendBytes(enc, []byte("key-id"))
	enc = protowire.AppendTag(enc, 12, protowire.Fixed64Type)
	enc = protowire.AppendFixed64(enc, uint64(time.Now().UnixNano()))
	enc = protowire.AppendTag(enc, envelope.FieldMAC, protowire.BytesType)
	return protowire.AppendBytes(enc, make([]byte, 32))
}

// TestEnvelopesFromNewerSidecars: both sidecars accept envelopes with
// fields they do not know and with the credential fields: the adapter
// serves such a request, the ambassador takes such an answer.
func TestEnvelopesFromNewerSidecars(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	ctx := testCtx(t, 20*time.Second)
	conn, err := broker.Open(ctx, b.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	subjects := broker.NewSubjects("")

	t.Run("adapter", func(t *testing.T) {
		m := startHTTPMesh(t, b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "served") }))
		inbox := subjects.Inbox(unique("newer-caller"))
		answers := make(chan envelope.Response, 1)
		sub, err := conn.Subscribe(ctx, inbox, func(_ context.Context, data []byte) {
			e, err := envelope.Open(data)
			if err != nil || e.Kind != envelope.KindResponse {
				return
			}
			var r envelope.Response
			if r.Unmarshal(e.Msg) == nil {
				r.Body = append([]byte(nil), r.Body...)
				answers <- r
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		req := envelope.Request{ID: 7, Source: "newer-caller", Service: m.service, Protocol: envelope.ProtocolHTTP,
			Method: "GET", Path: "/", ReplyTo: inbox, Deadline: time.Now().Add(10 * time.Second).UnixNano()}
		if err := conn.Publish(ctx, subjects.Service(m.service), fromTheFuture(req.AppendEnvelope(nil))); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-answers:
			if r.Status != 200 || string(r.Body) != "served" {
				t.Errorf("answer %d %q, want 200 \"served\"", r.Status, r.Body)
			}
		case <-ctx.Done():
			t.Fatal("the adapter did not serve a request with unknown and credential fields")
		}
	})

	t.Run("ambassador", func(t *testing.T) {
		// The test is the service's adapter: it announces itself and
		// answers with fields the ambassador does not know.
		service := unique("newer")
		sub, err := conn.QueueSubscribe(ctx, subjects.Service(service), subjects.Service(service), func(ctx context.Context, data []byte) {
			e, err := envelope.Open(data)
			if err != nil {
				return
			}
			var req envelope.Request
			if req.Unmarshal(e.Msg) != nil {
				return
			}
			resp := envelope.Response{ID: req.ID, Status: 200, Instance: "newer-1", Body: []byte("from a newer adapter")}
			_ = conn.Publish(ctx, req.ReplyTo, fromTheFuture(resp.AppendEnvelope(nil)))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		ann := discovery.NewAnnouncer(conn, discovery.Self{Service: service, Instance: "newer-1", Sidecar: unique("newer")},
			time.Second, nil, nil)
		if err := ann.Start(ctx, true); err != nil {
			t.Fatal(err)
		}
		defer ann.Stop(context.Background())
		port := freePort(t)
		startSidecar(t, "caller", callerConfig, map[string]string{
			"id": unique("caller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
		})
		resp, err := http.Get("http://" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "from a newer adapter" {
			t.Errorf("GET through the ambassador = %d %q, want 200 \"from a newer adapter\"", resp.StatusCode, body)
		}
	})
}
