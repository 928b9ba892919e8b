package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Traffic is the part of a ServicePolicy that chooses among a service's
// versions: routes, split, sticky, fallback and mirror. It is what the
// admin API shows and changes on a running sidecar.
type Traffic struct {
	Routes   []TrafficRoute
	Split    map[string]int
	Sticky   string
	Fallback string
	Mirror   *Mirror
	Brokers  map[string]int
}

// ServiceRouting is one service's entry in a running sidecar's routing
// table, as the admin API shows it.
type ServiceRouting struct {
	// Policy is the service's policy as configured (before defaults); its
	// traffic keys are what calls are routed by.
	Policy ServicePolicy
	// LB is the balancing in force: queue or direct.
	LB string
	// Admin is set when an admin change set the traffic rules, over the
	// config file's.
	Admin bool
}

// Traffic returns a copy of p's traffic rules, sharing nothing with p.
func (p *ServicePolicy) Traffic() Traffic {
	t := Traffic{Split: maps.Clone(p.Split), Sticky: p.Sticky, Fallback: p.Fallback, Brokers: maps.Clone(p.Brokers)}
	for _, r := range p.Routes {
		r.Match.Headers = maps.Clone(r.Match.Headers)
		t.Routes = append(t.Routes, r)
	}
	if p.Mirror != nil {
		m := *p.Mirror
		t.Mirror = &m
	}
	return t
}

// SetTraffic replaces p's traffic rules with t's; its other keys stay.
func (p *ServicePolicy) SetTraffic(t Traffic) {
	p.Routes, p.Split, p.Sticky, p.Fallback, p.Mirror, p.Brokers = t.Routes, t.Split, t.Sticky, t.Fallback, t.Mirror, t.Brokers
}

// Equal reports whether t and u route alike: an empty list or map equals
// a missing one.
func (t Traffic) Equal(u Traffic) bool {
	norm := func(t Traffic) Traffic {
		if len(t.Routes) == 0 {
			t.Routes = nil
		}
		if len(t.Split) == 0 {
			t.Split = nil
		}
		if len(t.Brokers) == 0 {
			t.Brokers = nil
		}
		for i := range t.Routes {
			if len(t.Routes[i].Match.Headers) == 0 {
				t.Routes[i].Match.Headers = nil
			}
		}
		return t
	}
	return reflect.DeepEqual(norm(t.copy()), norm(u.copy()))
}

func (t Traffic) copy() Traffic {
	p := ServicePolicy{}
	p.SetTraffic(t)
	return p.Traffic()
}

// Shift sets split weights as percentages of the calls: each version in
// weights gets its weight, and what the weights leave of 100 goes to the
// split's other versions in proportion to their weights now. So from
// {v1: 100}, {v2: 10} gives {v1: 90, v2: 10} (a canary) and {v2: 100}
// gives {v1: 0, v2: 100} (blue-green). Versions keep their place in the
// split with weight 0, so a later shift can bring them back. key names
// the split in errors (ambassador.services.orders.split).
func Shift(key string, split, weights map[string]int) (map[string]int, error) {
	return shift(key, split, weights, shiftTerms{what: "version", other: "v1="})
}

// shiftTerms are the words of Shift's errors: what is weighted, and how
// one is named on the command line.
type shiftTerms struct {
	what  string // version, broker
	other string // the prefix of a weight: "v1=", "broker:primary="
}

func shift(key string, split, weights map[string]int, terms shiftTerms) (map[string]int, error) {
	errs := &Error{File: "shift", lines: map[string]int{}}
	given := 0
	for _, v := range slices.Sorted(maps.Keys(weights)) {
		if w := weights[v]; w < 0 || w > 100 {
			errs.add(key+"."+v, 0, "%d is not a percentage (allowed: 0 to 100)", w)
		} else {
			given += w
		}
	}
	if len(weights) == 0 {
		errs.add(key, 0, "no weights given (example: %s100)", terms.other)
	}
	if len(errs.Problems) > 0 {
		return nil, errs
	}
	if given > 100 {
		errs.add(key, 0, "the weights given add up to %d (%s), over 100", given, weightList(weights))
		return nil, errs
	}
	out := maps.Clone(weights)
	others, othersTotal := []string{}, 0
	for _, v := range slices.Sorted(maps.Keys(split)) {
		if _, named := weights[v]; !named {
			others = append(others, v)
			othersTotal += max(split[v], 0)
		}
	}
	rest := 100 - given
	if rest > 0 && othersTotal == 0 {
		if len(others) == 0 {
			errs.add(key, 0, "the weights given add up to %d (%s) and no other %s is in the split to take the other %d (name it, example: %s%d)",
				given, weightList(weights), terms.what, rest, terms.other, rest)
		} else {
			errs.add(key, 0, "the weights given add up to %d (%s) and the other %ss (%s) have weight 0 (name the one to take the other %d, example: %s%d)",
				given, weightList(weights), terms.what, strings.Join(others, ", "), rest, terms.other, rest)
		}
		return nil, errs
	}
	// The rest is shared in proportion, by largest remainder, so the
	// weights add up to exactly 100.
	type share struct {
		v    string
		frac int
	}
	var shares []share
	left := rest
	for _, v := range others {
		w := max(split[v], 0)
		n := rest * w / max(othersTotal, 1)
		out[v] = n
		left -= n
		shares = append(shares, share{v, rest * w % max(othersTotal, 1)})
	}
	slices.SortStableFunc(shares, func(a, b share) int { return b.frac - a.frac })
	for i := 0; left > 0 && i < len(shares); i++ {
		out[shares[i].v]++
		left--
	}
	return out, nil
}

func weightList(w map[string]int) string {
	parts := make([]string, 0, len(w))
	for _, v := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, w[v]))
	}
	return strings.Join(parts, " ")
}

// ShiftBrokers sets a service's brokers weights as Shift sets a split's:
// the brokers named get theirs, the others share the rest in proportion.
// With no brokers weights yet, every call is on the primary broker, so
// {kafka: 10} gives {primary: 90, kafka: 10}. key names the weights in
// errors (ambassador.services.orders.brokers).
func ShiftBrokers(key string, brokers, weights map[string]int) (map[string]int, error) {
	if len(brokers) == 0 {
		brokers = map[string]int{PrimaryBroker: 100}
	}
	return shift(key, brokers, weights, shiftTerms{what: "broker", other: "broker:" + PrimaryBroker + "="})
}
