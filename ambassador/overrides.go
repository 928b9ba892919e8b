package ambassador

import (
	"maps"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// override is a service's traffic rules set by an admin change, over the
// config file's. base is what the file said for the service when the
// change was made: the override stays while the file says the same, and
// gives way once the file changes that service's rules, so the newer
// intent wins. An edit elsewhere in the file, a rewrite with the same
// content or a SIGHUP keep it. Overrides live in memory: a restart starts
// from the file alone.
type override struct {
	rules config.Traffic
	base  config.Traffic
}

// fileTraffic is what the config file cfg says of service's traffic.
func fileTraffic(cfg *config.Ambassador, service string) config.Traffic {
	if p := cfg.Services[service]; p != nil {
		return p.Traffic()
	}
	return config.Traffic{}
}

// rebase sorts the overrides for a new config file: those whose service's
// rules the file left alone are kept, the others dropped. Called with ctl
// held.
func (a *Ambassador) rebase(cfg *config.Ambassador) (kept map[string]override, dropped []string) {
	kept = map[string]override{}
	for svc, o := range a.overrides {
		if fileTraffic(cfg, svc).Equal(o.base) {
			kept[svc] = o
		} else {
			dropped = append(dropped, svc)
		}
	}
	return kept, dropped
}

// effective is the config file's section with the overrides over it. The
// file's section is not changed: its services map and the overridden
// policies are copied.
func (a *Ambassador) effective(file *config.Ambassador, overrides map[string]override) *config.Ambassador {
	if len(overrides) == 0 {
		return file
	}
	eff := *file
	eff.Services = maps.Clone(file.Services)
	if eff.Services == nil {
		eff.Services = map[string]*config.ServicePolicy{}
	}
	for svc, o := range overrides {
		var p config.ServicePolicy
		if fp := file.Services[svc]; fp != nil {
			p = *fp
		}
		p.SetTraffic(o.rules)
		eff.Services[svc] = &p
	}
	return &eff
}

// Routing returns the version of the routing table in force and the
// services it names, each with its policy.
func (a *Ambassador) Routing() (uint64, map[string]config.ServiceRouting) {
	a.ctl.Lock() // the table and the overrides together
	defer a.ctl.Unlock()
	t := a.table.Load()
	out := map[string]config.ServiceRouting{}
	for _, svc := range t.serviceNames() {
		var p config.ServicePolicy
		if sp := t.cfg.Services[svc]; sp != nil {
			p = *sp
			p.SetTraffic(sp.Traffic())
		}
		_, admin := a.overrides[svc]
		out[svc] = config.ServiceRouting{Policy: p, LB: t.cfg.Policy(svc).LB, Admin: admin}
	}
	return t.version, out
}

// ChangeTraffic changes a service's traffic rules on the running sidecar:
// change gets the table's version, the rules in force and the config
// file's, and returns the new rules (or an error, which is returned as
// is); the file's rules make the service follow the file again. The new rules are
// validated as the config file's are, then a new table is swapped in:
// calls in flight keep theirs, new calls take the new one at once. It
// returns the new table's version (the one in force when the rules are
// those in force already). Changes and reloads are serialized, so change
// sees the table it replaces.
func (a *Ambassador) ChangeTraffic(service string, change func(version uint64, now, file config.Traffic) (config.Traffic, error)) (uint64, error) {
	a.ctl.Lock()
	defer a.ctl.Unlock()
	t := a.table.Load()
	var now config.Traffic
	if p := t.cfg.Services[service]; p != nil {
		now = p.Traffic()
	}
	base := fileTraffic(a.file, service)
	rules, err := change(t.version, now, base)
	if err != nil {
		return 0, err
	}
	if rules.Equal(now) {
		return t.version, nil // nothing to change: the same table, the same version
	}
	overrides := maps.Clone(a.overrides)
	if overrides == nil {
		overrides = map[string]override{}
	}
	if rules.Equal(base) {
		delete(overrides, service) // back to what the file says
	} else {
		overrides[service] = override{rules: rules, base: base}
	}
	eff := a.effective(a.file, overrides)
	if err := eff.ValidateService("(admin change)", service); err != nil {
		return 0, err
	}
	if err := a.swap(eff); err != nil {
		return 0, err
	}
	a.overrides = overrides
	v := a.table.Load().version
	a.logger.Info("routes changed by the admin API", telemetry.KeyService, service, "routes_version", v)
	return v, nil
}
