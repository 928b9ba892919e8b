// Package policy is the adapter's authorization: allow rules from calling
// services to HTTP methods and paths and gRPC methods (config.AllowRule),
// compiled once, checked for every call before a worker takes it.
package policy

import (
	"path"
	"slices"
	"strings"

	"github.com/busmesh/busmesh/internal/config"
)

// Policy decides which calls a service takes. A nil Policy (no rules)
// allows every call; otherwise a call no rule allows is denied. It is
// immutable and safe for concurrent use.
type Policy struct {
	rules []config.AllowRule
}

// Compile returns the Policy of rules, nil when there are none. The rules
// must be valid (config.Validate checks them).
func Compile(rules []config.AllowRule) *Policy {
	if len(rules) == 0 {
		return nil
	}
	return &Policy{rules: slices.Clone(rules)}
}

// Call is what a decision looks at.
type Call struct {
	Caller string // the service the caller's certificate names ("" unknown)
	GRPC   bool
	Method string // HTTP method
	Path   string // HTTP path (a query is ignored) or gRPC full method
}

// Allow reports whether c may be made.
func (p *Policy) Allow(c Call) bool {
	if p == nil {
		return true
	}
	target, _, _ := strings.Cut(c.Path, "?")
	for i := range p.rules {
		if allows(&p.rules[i], c, target) {
			return true
		}
	}
	return false
}

func allows(r *config.AllowRule, c Call, target string) bool {
	if r.From != "*" && r.From != c.Caller {
		return false
	}
	if len(r.Methods) == 0 && len(r.Paths) == 0 && len(r.GRPC) == 0 {
		return true
	}
	if c.GRPC {
		return matchAny(r.GRPC, target)
	}
	if len(r.Methods) == 0 && len(r.Paths) == 0 {
		return false // a gRPC-only rule
	}
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, c.Method) {
		return false
	}
	return len(r.Paths) == 0 || matchAny(r.Paths, target)
}

// matchAny reports whether target matches one of globs: path.Match, or a
// prefix for a glob ending in "**".
func matchAny(globs []string, target string) bool {
	for _, g := range globs {
		if prefix, ok := strings.CutSuffix(g, "**"); ok {
			if strings.HasPrefix(target, prefix) {
				return true
			}
			continue
		}
		if ok, _ := path.Match(g, target); ok {
			return true
		}
	}
	return false
}
