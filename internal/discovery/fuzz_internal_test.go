package discovery

import (
	"testing"

	"google.golang.org/protobuf/proto"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// FuzzCheckAnnouncement feeds the announcement checker what a broker
// client could send: it must never panic, and accepts nothing unsigned.
// The checker has accepted one signed hello first, so the hash-chain path
// is reached too.
func FuzzCheckAnnouncement(f *testing.F) {
	mesh := newTestCA(f, "fuzz")
	local, _ := mesh.issue(f, "web", "")
	orders, _ := mesh.issue(f, "orders", "")
	s := NewSigner(orders)
	ch := newChecker(local, newRejections(nil), nil)
	for seq := uint64(1); seq <= 3; seq++ {
		data, err := s.Marshal(heartbeat(seq, true))
		if err != nil {
			f.Fatal(err)
		}
		if seq == 1 {
			var a busmeshv1.Announcement
			if err := proto.Unmarshal(data, &a); err != nil || !ch.check(data, &a) {
				f.Fatalf("the first signed hello was rejected (%v)", err)
			}
		}
		f.Add(data)
	}
	unsigned, _ := proto.Marshal(heartbeat(4, true))
	f.Add(unsigned)
	f.Fuzz(func(t *testing.T, data []byte) {
		var a busmeshv1.Announcement
		if proto.Unmarshal(data, &a) != nil {
			return
		}
		if ch.check(data, &a) && (len(a.Certificate) == 0 && len(a.KeyId) == 0 || len(a.Signature) == 0) {
			t.Errorf("accepted an announcement without credentials: %v", &a)
		}
	})
}
