package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestPrintStatsRejected: the sidecar sends discovery's rejection counters
// from the start, zeros included; busmesh stats names only the reasons that
// happened, and prints no rejection line when none did.
func TestPrintStatsRejected(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rejected map[string]uint64
		want     string // the rejection line, "" for none
	}{
		{"none", map[string]uint64{"discovery/malformed": 0, "adapter/bad-mac": 0}, ""},
		{"some", map[string]uint64{"discovery/malformed": 0, "adapter/bad-mac": 3, "adapter/expired": 1},
			"rejected envelopes: adapter/bad-mac=3 adapter/expired=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			resp := &busmeshv1.GetStatsResponse{Sidecar: "s", Uptime: durationpb.New(0), Rejected: tc.rejected}
			if err := printStats(&out, resp, &busmeshv1.GetTrafficResponse{}); err != nil {
				t.Fatal(err)
			}
			var got string
			for line := range strings.Lines(out.String()) {
				if strings.HasPrefix(line, "rejected envelopes") {
					got = strings.TrimSpace(line)
				}
			}
			if got != tc.want {
				t.Errorf("rejection line %q, want %q; all:\n%s", got, tc.want, out.String())
			}
		})
	}
}
