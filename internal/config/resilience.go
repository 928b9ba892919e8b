package config

import (
	"slices"
	"strings"
	"time"
)

// Retry is how an ambassador retries failed calls to a service
// (ambassador.services.<name>.retry).
type Retry struct {
	// Attempts is how many times a call is tried in all, the first
	// included: 1 turns retries off.
	Attempts int `yaml:"attempts"`
	// PerTryTimeout bounds each attempt inside the call's deadline, for
	// calls that may be retried after a timeout (On names timeout, and
	// the method is retryable); 0, or another call, gives every attempt
	// what is left of the deadline.
	PerTryTimeout Duration `yaml:"per_try_timeout"`
	// On lists the failures retried (see RetryOn).
	On []string `yaml:"on"`
	// Methods lists the HTTP methods retried after the request may have
	// reached the application; "*" is every method.
	Methods []string `yaml:"methods"`
	// GRPCMethods lists the gRPC methods so retried: full names
	// ("/pkg.Svc/Get"), prefixes ("/pkg.Svc/"), or "*" for every method.
	GRPCMethods []string `yaml:"grpc_methods"`
	// Backoff spaces the attempts.
	Backoff Backoff `yaml:"backoff"`
	// Budget bounds the retries of every caller of this ambassador to the
	// service, so retries cannot multiply an outage.
	Budget Budget `yaml:"budget"`
	// ReplayBytes bounds what an ambassador keeps of a streamed request
	// body to send it again: a call whose body is larger is not retried
	// once its body has started to stream.
	ReplayBytes ByteSize `yaml:"replay_bytes"`
}

// Backoff is a jittered exponential backoff: the nth retry waits a random
// time up to min(Base × 2ⁿ⁻¹, Max).
type Backoff struct {
	Base Duration `yaml:"base"`
	Max  Duration `yaml:"max"`
}

// Budget allows retries while they are under Percent of the calls of the
// last 10 seconds plus MinPerSecond a second.
type Budget struct {
	Percent      int `yaml:"percent"`
	MinPerSecond int `yaml:"min_per_second"`
}

// The failure classes a Retry may name in On.
const (
	// RetryNoResponders: no adapter took the request off the broker.
	RetryNoResponders = "no-responders"
	// RetryBrokerUnavailable: the request could not be published.
	RetryBrokerUnavailable = "broker-unavailable"
	// RetryAppUnreachable: the adapter could not reach its application.
	RetryAppUnreachable = "app-unreachable"
	// Retry503: the application answered 503 (an adapter's overloaded,
	// which carries a Retry-After, is not retried).
	Retry503 = "503"
	// Retry5xx: any 5xx answer, 503 included.
	Retry5xx = "5xx"
	// RetryUnavailable: a gRPC answer with status UNAVAILABLE.
	RetryUnavailable = "unavailable"
	// RetryTimeout: the attempt ran out of its per_try_timeout.
	RetryTimeout = "timeout"
)

// RetryOn lists the failure classes a retry may name.
var RetryOn = []string{RetryNoResponders, RetryBrokerUnavailable, RetryAppUnreachable, Retry503, Retry5xx, RetryUnavailable, RetryTimeout}

// Breaker is a circuit breaker: consecutive failures, or a share of
// failures among the calls of a window, open it; while open, calls are
// answered at once with 503 circuit-open; after OpenFor (doubled at each
// opening in a row, at most 64×) it lets HalfOpenProbes calls through,
// and closes when they all succeed. MaxConcurrent and MaxPending bound
// the calls in flight and waiting; more are answered at once with 503
// overloaded. Zero turns a trip or a bound off.
type Breaker struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	FailurePercent      int      `yaml:"failure_percent"`
	MinCalls            int      `yaml:"min_calls"`
	Window              Duration `yaml:"window"`
	OpenFor             Duration `yaml:"open_for"`
	HalfOpenProbes      int      `yaml:"half_open_probes"`
	MaxConcurrent       int      `yaml:"max_concurrent"`
	MaxPending          int      `yaml:"max_pending"`
}

// Outlier is outlier ejection in direct mode: an instance whose calls
// fail Consecutive times in a row (5xx answers, gateway errors,
// timeouts) is not picked for BaseEjection × the number of times it was
// ejected, at most MaxEjection; never more than MaxEjectedPercent of a
// service's instances are out at once (at least one, of two or more).
// Consecutive 0 turns it off.
type Outlier struct {
	Consecutive       int      `yaml:"consecutive"`
	BaseEjection      Duration `yaml:"base_ejection"`
	MaxEjection       Duration `yaml:"max_ejection"`
	MaxEjectedPercent int      `yaml:"max_ejected_percent"`
}

// Resilience defaults, chosen beside Linkerd's, Envoy's and Dapr's (see
// the README).
const (
	DefaultRetryAttempts      = 3
	DefaultBackoffBase        = 25 * time.Millisecond
	DefaultBackoffMax         = 250 * time.Millisecond
	DefaultBudgetPercent      = 20
	DefaultBudgetMinPerSecond = 10
	DefaultReplayBytes        = 64 << 10
	DefaultInstanceFailures   = 7
	DefaultBreakerWindow      = 10 * time.Second
	DefaultBreakerOpenFor     = time.Second
	DefaultBreakerMinCalls    = 20
	DefaultHalfOpenProbes     = 1
	DefaultOutlierConsecutive = 5
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjection        = 300 * time.Second
	DefaultMaxEjectedPercent  = 10
)

// DefaultRetryOn is what is retried by default: failures where the
// request reached no application, and 503 / UNAVAILABLE answers.
var DefaultRetryOn = []string{RetryNoResponders, RetryBrokerUnavailable, RetryAppUnreachable, Retry503, RetryUnavailable}

// DefaultRetryMethods are the idempotent HTTP methods (RFC 9110, 9.2.2).
var DefaultRetryMethods = []string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}

func (r *Retry) setDefaults() {
	r.Attempts = DefaultRetryAttempts
	r.On = slices.Clone(DefaultRetryOn)
	r.Methods = slices.Clone(DefaultRetryMethods)
	r.Backoff = Backoff{Base: Duration(DefaultBackoffBase), Max: Duration(DefaultBackoffMax)}
	r.Budget = Budget{Percent: DefaultBudgetPercent, MinPerSecond: DefaultBudgetMinPerSecond}
	r.ReplayBytes = DefaultReplayBytes
}

func (b *Breaker) setDefaults() {
	b.Window = Duration(DefaultBreakerWindow)
	b.OpenFor = Duration(DefaultBreakerOpenFor)
	b.MinCalls = DefaultBreakerMinCalls
	b.HalfOpenProbes = DefaultHalfOpenProbes
}

func (o *Outlier) setDefaults() {
	o.Consecutive = DefaultOutlierConsecutive
	o.BaseEjection = Duration(DefaultBaseEjection)
	o.MaxEjection = Duration(DefaultMaxEjection)
	o.MaxEjectedPercent = DefaultMaxEjectedPercent
}

// NewRetry returns the default retry policy.
func NewRetry() *Retry { r := &Retry{}; r.setDefaults(); return r }

// NewServiceBreaker returns the default breaker of a service: only its
// timings set, no trip and no bound (turn them on per service).
func NewServiceBreaker() *Breaker { b := &Breaker{}; b.setDefaults(); return b }

// NewInstanceBreaker returns the default breaker of an instance in
// direct mode: open after 7 consecutive failures, as Linkerd's failure
// accrual.
func NewInstanceBreaker() *Breaker {
	b := NewServiceBreaker()
	b.ConsecutiveFailures = DefaultInstanceFailures
	return b
}

// NewOutlier returns the default outlier ejection.
func NewOutlier() *Outlier { o := &Outlier{}; o.setDefaults(); return o }

// withResilienceDefaults fills the sections a policy leaves out.
func (p *ServicePolicy) withResilienceDefaults() {
	if p.Retry == nil {
		p.Retry = NewRetry()
	}
	if p.Breaker == nil {
		p.Breaker = NewServiceBreaker()
	}
	if p.InstanceBreaker == nil {
		p.InstanceBreaker = NewInstanceBreaker()
	}
	if p.Outlier == nil {
		p.Outlier = NewOutlier()
	}
}

func checkResilience(errs *Error, key string, p *ServicePolicy, direct bool) {
	if r := p.Retry; r != nil {
		k := key + ".retry"
		if r.Attempts < 1 || r.Attempts > 10 {
			errs.add(k+".attempts", 0, "%d is not allowed (1 to 10; 1 turns retries off)", r.Attempts)
		}
		if r.PerTryTimeout < 0 {
			errs.add(k+".per_try_timeout", 0, "%q must be 0 (the call's deadline) or positive", r.PerTryTimeout.D().String())
		}
		for _, on := range r.On {
			if !slices.Contains(RetryOn, on) {
				errs.add(k+".on", 0, "%q is not a failure class (allowed: %s)", on, strings.Join(RetryOn, ", "))
			}
		}
		for _, m := range r.Methods {
			if m != "*" && (m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/")) {
				errs.add(k+".methods", 0, "%q is not an HTTP method (allowed: upper-case names such as GET, POST, or *)", m)
			}
		}
		for _, m := range r.GRPCMethods {
			if m != "*" && !strings.HasPrefix(m, "/") {
				errs.add(k+".grpc_methods", 0, "%q is not a gRPC method or prefix (allowed: /pkg.Svc/Method, /pkg.Svc/, or *)", m)
			}
		}
		if r.Backoff.Base <= 0 || r.Backoff.Max < r.Backoff.Base {
			errs.add(k+".backoff", 0, "base %q and max %q: base must be positive and max at least base (default 25ms, 250ms)",
				r.Backoff.Base.D().String(), r.Backoff.Max.D().String())
		}
		if r.Budget.Percent < 0 || r.Budget.Percent > 100 {
			errs.add(k+".budget.percent", 0, "%d is not a percentage (0 to 100)", r.Budget.Percent)
		}
		if r.Budget.MinPerSecond < 0 {
			errs.add(k+".budget.min_per_second", 0, "%d must be 0 or more", r.Budget.MinPerSecond)
		}
		if r.ReplayBytes < 0 || r.ReplayBytes > 16<<20 {
			errs.add(k+".replay_bytes", 0, "%d is not allowed (0 to 16MiB; default 64KiB)", r.ReplayBytes)
		}
	}
	checkBreaker(errs, key+".breaker", p.Breaker)
	checkBreaker(errs, key+".instance_breaker", p.InstanceBreaker)
	if o := p.Outlier; o != nil {
		checkOutlier(errs, key+".outlier", o)
		if !direct {
			errs.add(key+".outlier", 0, "needs lb: direct (in queue mode the broker picks the instance)")
		}
	}
}

// checkOutlier checks an outlier section: the ambassador's (direct mode)
// or the adapter's self-ejection.
func checkOutlier(errs *Error, k string, o *Outlier) {
	if o.Consecutive < 0 {
		errs.add(k+".consecutive", 0, "%d must be 0 (off) or more", o.Consecutive)
	}
	if o.BaseEjection <= 0 || o.MaxEjection < o.BaseEjection {
		errs.add(k+".base_ejection", 0, "%q (max_ejection %q): must be positive and at most max_ejection",
			o.BaseEjection.D().String(), o.MaxEjection.D().String())
	}
	if o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
		errs.add(k+".max_ejected_percent", 0, "%d is not a percentage (0 to 100)", o.MaxEjectedPercent)
	}
}

func checkBreaker(errs *Error, k string, b *Breaker) {
	if b == nil {
		return
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"consecutive_failures", b.ConsecutiveFailures}, {"min_calls", b.MinCalls}, {"max_concurrent", b.MaxConcurrent}, {"max_pending", b.MaxPending}} {
		if f.v < 0 {
			errs.add(k+"."+f.name, 0, "%d must be 0 (off) or more", f.v)
		}
	}
	if b.FailurePercent < 0 || b.FailurePercent > 100 {
		errs.add(k+".failure_percent", 0, "%d is not a percentage (0 to 100; 0 is off)", b.FailurePercent)
	}
	if b.Window < Duration(100*time.Millisecond) {
		errs.add(k+".window", 0, "%q is too short (at least 100ms; default 10s)", b.Window.D().String())
	}
	if b.OpenFor <= 0 {
		errs.add(k+".open_for", 0, "%q must be positive (default 1s)", b.OpenFor.D().String())
	}
	if b.HalfOpenProbes < 1 {
		errs.add(k+".half_open_probes", 0, "%d must be at least 1", b.HalfOpenProbes)
	}
}
