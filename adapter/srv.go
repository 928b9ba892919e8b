package adapter

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// natsServices answers the NATS services protocol ($SRV.PING, $SRV.INFO and
// $SRV.STATS, each also .<service> and .<service>.<instance>) with the
// schemas of nats.go's micro package, so that `nats micro ls`, `info` and
// `stats` list busmesh services next to NATS micro services: each instance
// one service instance, its subject one endpoint, with the calls it
// served. Only on NATS: the protocol is request/reply on NATS subjects.
type natsServices struct {
	started time.Time

	requests, errors atomic.Int64
	busy             atomic.Int64 // nanoseconds spent serving, to the answer's head
	lastError        atomic.Pointer[string]

	mu   sync.Mutex
	subs []*nats.Subscription
}

// natsConn returns b's NATS connection, nil when b is not NATS.
func natsConn(b broker.Broker) *nats.Conn {
	for {
		switch x := b.(type) {
		case interface{ NATS() *nats.Conn }:
			return x.NATS()
		case interface{ Unwrap() broker.Broker }:
			b = x.Unwrap()
		default:
			return nil
		}
	}
}

// count records a call for the STATS answer: from record, the one place
// calls are counted.
func (s *natsServices) count(failed bool, took time.Duration, why string) {
	s.requests.Add(1)
	s.busy.Add(int64(took))
	if failed {
		s.errors.Add(1)
		last := why // on the heap only for failures
		s.lastError.Store(&last)
	}
}

// startServices subscribes the $SRV subjects, when the broker is NATS.
func (a *Adapter) startServices() error {
	nc := natsConn(a.broker)
	if nc == nil {
		return nil
	}
	s := &a.services
	s.started = time.Now().UTC()
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		for _, ids := range [][2]string{{"", ""}, {a.cfg.Service, ""}, {a.cfg.Service, a.cfg.Instance}} {
			subject, err := micro.ControlSubject(verb, ids[0], ids[1])
			if err != nil {
				return fmt.Errorf("nats services: %w", err)
			}
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) { a.answerServices(verb, m) })
			if err != nil {
				a.stopServices()
				return fmt.Errorf("nats services subscribe %s: %w", subject, err)
			}
			s.mu.Lock()
			s.subs = append(s.subs, sub)
			s.mu.Unlock()
		}
	}
	return nil
}

// stopServices ends the $SRV subscriptions.
func (a *Adapter) stopServices() {
	s := &a.services
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
}

// answerServices answers one $SRV request.
func (a *Adapter) answerServices(verb micro.Verb, m *nats.Msg) {
	var v any
	switch verb {
	case micro.PingVerb:
		v = micro.Ping{ServiceIdentity: a.serviceIdentity(), Type: micro.PingResponseType}
	case micro.InfoVerb:
		v = micro.Info{ServiceIdentity: a.serviceIdentity(), Type: micro.InfoResponseType,
			Description: "busmesh service " + a.cfg.Service + " (target " + a.cfg.Target + ")",
			Endpoints:   []micro.EndpointInfo{a.endpointInfo()}}
	case micro.StatsVerb:
		s := &a.services
		e := a.endpointInfo()
		st := &micro.EndpointStats{Name: e.Name, Subject: e.Subject, QueueGroup: e.QueueGroup,
			NumRequests: int(s.requests.Load()), NumErrors: int(s.errors.Load()), ProcessingTime: time.Duration(s.busy.Load())}
		if st.NumRequests > 0 {
			st.AverageProcessingTime = st.ProcessingTime / time.Duration(st.NumRequests)
		}
		if last := s.lastError.Load(); last != nil {
			st.LastError = *last
		}
		v = micro.Stats{ServiceIdentity: a.serviceIdentity(), Type: micro.StatsResponseType, Started: s.started,
			Endpoints: []*micro.EndpointStats{st}}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	if err := m.Respond(data); err != nil {
		a.logger.Debug("nats services answer not sent", telemetry.KeySubject, m.Subject, telemetry.KeyErr, err)
	}
}

func (a *Adapter) serviceIdentity() micro.ServiceIdentity {
	md := map[string]string{"busmesh.instance": a.cfg.Instance, "busmesh.sidecar": a.sidecar, "busmesh.target": a.cfg.Target}
	if a.cfg.Version != "" {
		md["busmesh.version"] = a.cfg.Version
	}
	if a.cfg.Zone != "" {
		md["busmesh.zone"] = a.cfg.Zone
	}
	return micro.ServiceIdentity{Name: a.cfg.Service, ID: a.cfg.Instance, Version: semverOf(a.cfg.Version), Metadata: md}
}

// endpointInfo is the service's one endpoint: its queue-group subject.
func (a *Adapter) endpointInfo() micro.EndpointInfo {
	subject := a.subjects.Service(a.cfg.Service)
	return micro.EndpointInfo{Name: a.cfg.Service, Subject: subject, QueueGroup: subject,
		Metadata: map[string]string{"protocol": a.protocol()}}
}

func (a *Adapter) protocol() string {
	if a.app.grpc() {
		return telemetry.ProtocolGRPC
	}
	return telemetry.ProtocolHTTP
}

var (
	semverRe = regexp.MustCompile(`^\d+\.\d+\.\d+([-+].*)?$`)
	majorRe  = regexp.MustCompile(`^\d+$`)
)

// semverOf is the version as NATS services want it, SemVer: "v2" (a
// busmesh version names a subject, so has no dots) is 2.0.0, "1.2.3" is
// itself; another version ("blue", "") is 0.0.0. The version itself is
// in the metadata.
func semverOf(v string) string {
	s := strings.TrimPrefix(v, "v")
	switch {
	case semverRe.MatchString(s):
		return s
	case majorRe.MatchString(s):
		return s + ".0.0"
	}
	return "0.0.0"
}
