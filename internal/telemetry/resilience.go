package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Resilience are the metrics of fault tolerance: retries and their
// budgets, circuit breakers, outlier ejection (ambassador side) and
// duplicate suppression (adapter side).
type Resilience struct {
	// Retries counts attempts after the first, by service and the failure
	// class retried.
	Retries *prometheus.CounterVec // service, on
	// RetriesRefused counts retries not made, by service and why: budget
	// (the retry budget was spent), body (a streamed body was over the
	// replay buffer), deadline (no time left for another attempt).
	RetriesRefused *prometheus.CounterVec // service, why
	// BudgetRemaining is how many retries the service's budget allows now.
	BudgetRemaining *prometheus.GaugeVec // service
	// BreakerState is a breaker's state: 0 closed, 1 open, 2 half-open;
	// instance is "" for the service's own breaker.
	BreakerState *prometheus.GaugeVec // service, instance
	// BreakerRefused counts calls a breaker answered at once, by service
	// and reason (circuit-open, overloaded).
	BreakerRefused *prometheus.CounterVec // service, reason
	// Shed counts calls an ambassador answered overloaded without sending
	// them: it alone had more in flight than the service's healthy
	// instances announce they can take before the call's deadline.
	Shed *prometheus.CounterVec // service
	// Ejections counts instances ejected by outlier detection; Ejected is
	// how many are out now.
	Ejections *prometheus.CounterVec // service
	Ejected   *prometheus.GaugeVec   // service
	// Duplicates counts retried requests an adapter answered from its
	// record of an earlier attempt, without calling the application.
	Duplicates *prometheus.CounterVec // service
	// SelfEjections counts an adapter's decisions to take itself out of
	// its service (its application's answers kept failing), by outcome:
	// ejected, or kept (its service had its share of instances out, or no
	// other healthy one). SelfEjected is 1 while the adapter is out.
	SelfEjections *prometheus.CounterVec // service, outcome
	SelfEjected   *prometheus.GaugeVec   // service
}

func newResilience(register func(prometheus.Collector)) *Resilience {
	r := &Resilience{
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_retries_total",
			Help: "Attempts after a call's first, by target service and the failure class retried.",
		}, []string{"service", "on"}),
		RetriesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_retries_refused_total",
			Help: "Retries not made, by target service and why (budget, body, deadline).",
		}, []string{"service", "why"}),
		BudgetRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "busmesh_retry_budget_remaining",
			Help: "Retries the service's retry budget allows now (updated as calls are made).",
		}, []string{"service"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "busmesh_circuit_breaker_state",
			Help: "Circuit breaker state: 0 closed, 1 open, 2 half-open; instance empty for the service's breaker.",
		}, []string{"service", "instance"}),
		BreakerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_circuit_breaker_refused_total",
			Help: "Calls a circuit breaker answered at once, by target service and reason (circuit-open, overloaded).",
		}, []string{"service", "reason"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_shed_total",
			Help: "Calls answered overloaded without being sent: the ambassador alone had more in flight than the service's healthy instances announce they can take before the call's deadline.",
		}, []string{"service"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_outlier_ejections_total",
			Help: "Instances ejected by outlier detection, by service.",
		}, []string{"service"}),
		Ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "busmesh_outlier_ejected_instances",
			Help: "Instances out of the picks now by outlier detection, by service.",
		}, []string{"service"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_adapter_duplicates_total",
			Help: "Retried requests answered from the record of an earlier attempt, without calling the application again.",
		}, []string{"service"}),
		SelfEjections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_adapter_self_ejections_total",
			Help: "An adapter's decisions to leave its service because its application's answers kept failing, by outcome (ejected, kept).",
		}, []string{"service", "outcome"}),
		SelfEjected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "busmesh_adapter_self_ejected",
			Help: "1 while the adapter has taken itself out of its service (outlier self-ejection), else 0.",
		}, []string{"service"}),
	}
	register(r.Retries)
	register(r.RetriesRefused)
	register(r.BudgetRemaining)
	register(r.BreakerState)
	register(r.BreakerRefused)
	register(r.Shed)
	register(r.Ejections)
	register(r.Ejected)
	register(r.Duplicates)
	register(r.SelfEjections)
	register(r.SelfEjected)
	return r
}
