package ambassador

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
)

// attempt is the state of a call's current attempt, kept in the pooled
// Call.
type attempt struct {
	// keyed says the request may reach an application more than once: it
	// carries AttemptOf, so an adapter that served an earlier attempt
	// answers from its record.
	keyed bool
	// replayable says the Body is the call's replayBody.
	replayable bool
	// avoid is the instance the last attempt went to (direct mode).
	avoid *instanceStats
	// deadline is the attempt's own (per_try_timeout); zero when it is
	// the call's.
	deadline time.Time
	// stopPump stops the attempt's sending of the rest of the body.
	stopPump context.CancelFunc
}

// minAttempt is the least time an attempt needs: a retry is not started
// with less left before the deadline.
const minAttempt = 5 * time.Millisecond

// retrying retries a failed attempt (config.Retry): the failure's class
// must be one the service's policy retries on; a request that may have
// reached the application is retried only for methods marked retryable;
// each retry waits a jittered, growing backoff, takes one from the
// service's retry budget, goes (in direct mode) to another instance, and
// registers anew in the inbox. It is the one place the ambassador sends
// a request again.
func (a *Ambassador) retrying(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		pol := c.Route.Policy.Retry
		if pol == nil || pol.Attempts <= 1 {
			return next(ctx, c)
		}
		s := a.serviceOf(c)
		s.budget.deposit(time.Now().UnixNano())
		c.try.keyed = retryableMethod(pol, &c.Req)
		c.try.replayable = true
		c.replay.wrap(c.Body, int(pol.ReplayBytes), a.chunk)
		c.Body = &c.replay
		// An attempt is cut short only when a timeout is retried: a call
		// that may not run again keeps the whole deadline.
		perTry := pol.PerTryTimeout.D()
		if !c.try.keyed || !retriesOn(pol, config.RetryTimeout) {
			perTry = 0
		}
		for n := 1; ; n++ {
			c.try.deadline = time.Time{}
			if d := perTry; d > 0 {
				if t := time.Now().Add(d); c.Deadline.IsZero() || t.Before(c.Deadline) {
					c.try.deadline = t
				}
			}
			err := next(ctx, c)
			class, delivered := retryClass(err, c)
			if class == "" || n >= pol.Attempts || !retriesOn(pol, class) || delivered && !c.try.keyed {
				return err
			}
			a.stopPump(c)
			if !c.replay.replayable() {
				a.retryRefused(c, s, "body")
				return err
			}
			wait := backoff(pol.Backoff, n)
			if !c.Deadline.IsZero() && time.Until(c.Deadline) < wait+minAttempt {
				a.retryRefused(c, s, "deadline")
				return err
			}
			if ctx.Err() != nil {
				return err // the call ended (its head's wait, the caller gone): no attempt follows, no token spent
			}
			if !s.budget.withdraw(time.Now().UnixNano()) {
				a.retryRefused(c, s, "budget")
				return err
			}
			if !sleep(ctx, wait) {
				return err
			}
			a.metrics.Resilience.Retries.WithLabelValues(c.Route.Service, class).Inc()
			a.metrics.Resilience.BudgetRemaining.WithLabelValues(c.Route.Service).Set(max(s.budget.remaining(time.Now().UnixNano()), 0))
			// A fresh registration: what still comes for the last attempt
			// is unmatched, and the next has an id of its own.
			c.try.avoid = c.pick.stats
			a.inbox.release(&c.p)
			c.pick = pickResult{}
		}
	}
}

// stopPump stops the attempt's body pump and waits for it.
func (a *Ambassador) stopPump(c *Call) {
	if c.pump == nil {
		return
	}
	if c.try.stopPump != nil {
		c.try.stopPump()
	}
	<-c.pump
	c.pump, c.try.stopPump = nil, nil
}

func (a *Ambassador) retryRefused(c *Call, s *serviceState, why string) {
	a.metrics.Resilience.RetriesRefused.WithLabelValues(c.Route.Service, why).Inc()
	a.metrics.Resilience.BudgetRemaining.WithLabelValues(c.Route.Service).Set(max(s.budget.remaining(time.Now().UnixNano()), 0))
}

// retryClass names the failure class of an attempt (config.RetryOn), ""
// when it is not retried whatever the policy says; delivered says the
// request may have reached the application.
func retryClass(err error, c *Call) (class string, delivered bool) {
	if err != nil {
		switch reason.Of(err) {
		case reason.NoResponders:
			return config.RetryNoResponders, false
		case reason.BrokerUnavailable:
			return config.RetryBrokerUnavailable, false
		case reason.Timeout:
			if !c.try.deadline.IsZero() && (c.Deadline.IsZero() || time.Now().Before(c.Deadline)) {
				return config.RetryTimeout, true // the attempt's, not the call's
			}
		}
		return "", false
	}
	resp := c.Answer()
	if resp.More {
		return "", false // its body is on its way: the answer stands
	}
	switch reason.Parse(resp.Error) {
	case reason.None:
	case reason.AppUnreachable:
		return config.RetryAppUnreachable, true
	case reason.Overloaded:
		// Shed by the adapter, with a Retry-After: the pushback is
		// honoured, the caller is told at once.
		return "", false
	default:
		return "", false
	}
	if c.Req.Protocol == envelope.ProtocolGRPC {
		if code, ok := grpcStatus(resp.Trailers); ok && code == codes.Unavailable {
			return config.RetryUnavailable, true
		}
		return "", false
	}
	switch {
	case resp.Status == 503:
		return config.Retry503, true
	case resp.Status >= 500:
		return config.Retry5xx, true
	}
	return "", false
}

// retriesOn reports whether the policy retries class (5xx takes in 503).
func retriesOn(p *config.Retry, class string) bool {
	return slices.Contains(p.On, class) || class == config.Retry503 && slices.Contains(p.On, config.Retry5xx)
}

// retryableMethod reports whether the policy retries the request's method
// once it may have reached the application.
func retryableMethod(p *config.Retry, req *envelope.Request) bool {
	if req.Protocol == envelope.ProtocolGRPC {
		for _, m := range p.GRPCMethods {
			if m == "*" || m == req.Method || strings.HasSuffix(m, "/") && strings.HasPrefix(req.Method, m) {
				return true
			}
		}
		return false
	}
	return slices.Contains(p.Methods, req.Method) || slices.Contains(p.Methods, "*")
}

// backoff is the wait before retry n (1 is the first): half of
// min(base × 2ⁿ⁻¹, max), plus a random part up to the other half.
func backoff(b config.Backoff, n int) time.Duration {
	d := b.Base.D() << min(n-1, 16)
	if d > b.Max.D() || d <= 0 {
		d = b.Max.D()
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// failedAnswer reports whether an answer's head says the instance failed:
// a 5xx status (the mesh's errors included), or a gRPC status that counts
// as a server failure.
func failedAnswer(resp *envelope.Response) bool {
	if resp.Status >= 500 {
		return true
	}
	if code, ok := grpcStatus(resp.Trailers); ok {
		return grpcFailure(code)
	}
	return false
}

// grpcStatus finds grpc-status in a flat trailer list.
func grpcStatus(trailers []string) (codes.Code, bool) {
	for i := 0; i+1 < len(trailers); i += 2 {
		if strings.EqualFold(trailers[i], "grpc-status") {
			n, err := strconv.Atoi(trailers[i+1])
			if err != nil {
				return codes.Unknown, true
			}
			return codes.Code(n), true
		}
	}
	return codes.OK, false
}
