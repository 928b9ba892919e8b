package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
)

func TestResilienceConfig(t *testing.T) {
	good := `
ambassador:
  http: 127.0.0.1:9001
  services:
    orders:
      lb: direct
      retry:
        attempts: 4
        per_try_timeout: 300ms
        on: [no-responders, 503, timeout]
        methods: [GET, POST]
        grpc_methods: [/shop.Orders/Get]
        budget: {percent: 30, min_per_second: 5}
      breaker: {consecutive_failures: 5, max_concurrent: 100, max_pending: 10}
      outlier: {consecutive: 3, base_ejection: 10s}
`
	c, err := config.Parse("good", []byte(good), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Ambassador.Policy("orders")
	if p.Retry.Attempts != 4 || p.Retry.PerTryTimeout.D() != 300*time.Millisecond || strings.Join(p.Retry.On, ",") != "no-responders,503,timeout" ||
		p.Retry.Budget.Percent != 30 || p.Retry.Budget.MinPerSecond != 5 || p.Retry.ReplayBytes != config.DefaultReplayBytes ||
		p.Retry.Backoff.Base.D() != config.DefaultBackoffBase {
		t.Errorf("retry = %+v", p.Retry)
	}
	if p.Breaker.ConsecutiveFailures != 5 || p.Breaker.OpenFor.D() != config.DefaultBreakerOpenFor || p.Breaker.MaxPending != 10 {
		t.Errorf("breaker = %+v", p.Breaker)
	}
	if p.Outlier.Consecutive != 3 || p.Outlier.BaseEjection.D() != 10*time.Second || p.Outlier.MaxEjectedPercent != config.DefaultMaxEjectedPercent {
		t.Errorf("outlier = %+v", p.Outlier)
	}
	// A service the file leaves alone gets every default.
	d := c.Ambassador.Policy("payments")
	if d.Retry.Attempts != config.DefaultRetryAttempts || d.InstanceBreaker.ConsecutiveFailures != config.DefaultInstanceFailures ||
		d.Outlier.Consecutive != config.DefaultOutlierConsecutive || d.Breaker.ConsecutiveFailures != 0 {
		t.Errorf("defaults: retry %+v instance breaker %+v outlier %+v breaker %+v", d.Retry, d.InstanceBreaker, d.Outlier, d.Breaker)
	}

	bad := `
ambassador:
  http: 127.0.0.1:9001
  services:
    orders:
      retry:
        attempts: 0
        on: [503, teapot]
        methods: [get]
        grpc_methods: [shop.Orders/Get]
        budget: {percent: 120}
      breaker: {failure_percent: -1, open_for: 0s}
      outlier: {consecutive: 3}
`
	_, err = config.Parse("bad", []byte(bad), noEnv)
	if err == nil {
		t.Fatal("bad resilience config accepted")
	}
	for _, want := range []string{
		`ambassador.services.orders.retry.attempts: 0 is not allowed (1 to 10`,
		`retry.on: "teapot" is not a failure class (allowed: no-responders, broker-unavailable, app-unreachable, 503, 5xx, unavailable, timeout)`,
		`retry.methods: "get" is not an HTTP method`,
		`retry.grpc_methods: "shop.Orders/Get" is not a gRPC method or prefix`,
		`retry.budget.percent: 120 is not a percentage`,
		`breaker.failure_percent: -1 is not a percentage`,
		`breaker.open_for: "0s" must be positive`,
		`outlier: needs lb: direct`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := config.Parse("list", []byte("ambassador:\n  http: 127.0.0.1:1\n  services:\n    o:\n      retry:\n        on: 503\n"), noEnv); err == nil ||
		!strings.Contains(err.Error(), "want a list") {
		t.Errorf("a single value for a list: %v", err)
	}
}

// TestAdapterOutlier: self-ejection is on by default, a partial section
// keeps the other defaults, consecutive 0 turns it off, and a bad value
// names its key.
func TestAdapterOutlier(t *testing.T) {
	parse := func(extra string) (*config.Config, error) {
		return config.Parse("a", []byte("adapter:\n  service: orders\n  target: http://127.0.0.1:8080\n"+extra), noEnv)
	}
	c, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Adapter.Outlier; o == nil || *o != *config.NewOutlier() {
		t.Errorf("default adapter.outlier = %+v, want %+v", o, config.NewOutlier())
	}
	c, err = parse("  outlier: {consecutive: 3}\n")
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Adapter.Outlier; o.Consecutive != 3 || o.BaseEjection.D() != config.DefaultBaseEjection || o.MaxEjectedPercent != config.DefaultMaxEjectedPercent {
		t.Errorf("partial adapter.outlier = %+v", o)
	}
	if c, err = parse("  outlier: {consecutive: 0}\n"); err != nil || c.Adapter.Outlier.Consecutive != 0 {
		t.Errorf("consecutive 0: %v, %+v", err, c)
	}
	_, err = parse("  outlier: {max_ejected_percent: 101, base_ejection: 0s}\n")
	for _, want := range []string{"adapter.outlier.max_ejected_percent: 101 is not a percentage", `adapter.outlier.base_ejection: "0s"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
