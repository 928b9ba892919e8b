package ambassador

import (
	"errors"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
)

func loadAmbassador(t *testing.T, yaml string) *config.Ambassador {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte("broker: nats://127.0.0.1:4222\nambassador:\n  http: 127.0.0.1:15001\n"+yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Ambassador
}

func split(a *Ambassador, service string) (map[string]int, bool) {
	_, svcs := a.Routing()
	s := svcs[service]
	return s.Policy.Split, s.Admin
}

// TestAdminChangeAndReload: an admin change is validated as the file is,
// swaps the table and bumps its version; it stays over a reload of a file
// that leaves the service's rules alone, and gives way to one that
// changes them.
func TestAdminChangeAndReload(t *testing.T) {
	a := &Ambassador{subjects: broker.NewSubjects(""), logger: slog.New(slog.DiscardHandler)}
	file := "  services:\n    orders:\n      split: {v1: 100}\n"
	if err := a.Reload(loadAmbassador(t, file)); err != nil {
		t.Fatal(err)
	}
	shift := func(w map[string]int) func(uint64, config.Traffic, config.Traffic) (config.Traffic, error) {
		return func(_ uint64, r, _ config.Traffic) (config.Traffic, error) {
			s, err := config.Shift("split", r.Split, w)
			r.Split = s
			return r, err
		}
	}
	v, err := a.ChangeTraffic("orders", shift(map[string]int{"v2": 100}))
	if err != nil || v != 2 || a.RoutesVersion() != 2 {
		t.Fatalf("ChangeTraffic = %d, %v; want version 2", v, err)
	}
	if s, admin := split(a, "orders"); !maps.Equal(s, map[string]int{"v1": 0, "v2": 100}) || !admin {
		t.Errorf("after the shift: split %v, admin %v", s, admin)
	}
	if v, err := a.ChangeTraffic("orders", shift(map[string]int{"v2": 100})); err != nil || v != 2 {
		t.Errorf("the same shift again = %d, %v; want version 2 kept (no change)", v, err)
	}
	if got := a.table.Load().route("orders").traffic.split; len(got) != 1 || got[0].version != "v2" {
		t.Errorf("compiled split after the shift = %+v, want v2 alone", got)
	}

	// A bad change is refused with the file's messages; the table stays.
	_, err = a.ChangeTraffic("orders", func(_ uint64, r, _ config.Traffic) (config.Traffic, error) {
		r.Split = map[string]int{"v2": -5}
		return r, nil
	})
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "ambassador.services.orders.split.v2: -5 must be 0 or more") || a.RoutesVersion() != 2 {
		t.Errorf("bad change: %v, version %d; want a config error naming the key, version 2", err, a.RoutesVersion())
	}

	// The file rewritten with the service's rules unchanged: the change stays.
	if err := a.Reload(loadAmbassador(t, file+"    payments:\n      split: {v1: 1}\n")); err != nil {
		t.Fatal(err)
	}
	if s, admin := split(a, "orders"); s["v2"] != 100 || !admin {
		t.Errorf("after an unrelated file change: split %v, admin %v; want the admin change kept", s, admin)
	}
	// The file changes the service's rules: the file wins.
	if err := a.Reload(loadAmbassador(t, "  services:\n    orders:\n      split: {v1: 50, v2: 50}\n")); err != nil {
		t.Fatal(err)
	}
	if s, admin := split(a, "orders"); s["v1"] != 50 || admin {
		t.Errorf("after the file changed the service: split %v, admin %v; want the file's", s, admin)
	}
	// Shifting back to what the file says is no override.
	if _, err := a.ChangeTraffic("orders", shift(map[string]int{"v1": 50, "v2": 50})); err != nil {
		t.Fatal(err)
	}
	if _, admin := split(a, "orders"); admin {
		t.Error("rules equal to the file's still count as an admin change")
	}
	// Back to the file's rules.
	if _, err := a.ChangeTraffic("orders", shift(map[string]int{"v2": 100})); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ChangeTraffic("orders", func(_ uint64, _, file config.Traffic) (config.Traffic, error) { return file, nil }); err != nil {
		t.Fatal(err)
	}
	if s, admin := split(a, "orders"); s["v1"] != 50 || admin {
		t.Errorf("after a reset: split %v, admin %v; want the file's", s, admin)
	}
	// A service the file does not name can take rules.
	if _, err := a.ChangeTraffic("search", shift(map[string]int{"v3": 100})); err != nil {
		t.Fatal(err)
	}
	if s, admin := split(a, "search"); s["v3"] != 100 || !admin {
		t.Errorf("new service: split %v, admin %v", s, admin)
	}
}
