package admin

import (
	"encoding/json"
	"net/http"
	"runtime"
	"time"
)

// Info is what GET /info answers: who the sidecar is and how its broker
// connection stands, in plain JSON (numbers as numbers) for the dashboard
// and `busmesh version --admin`.
type Info struct {
	Sidecar string `json:"sidecar"`
	Mesh    string `json:"mesh,omitempty"`
	// Caller is the identity of the application calling through the
	// ambassador: the source of the edges the dashboard draws.
	Caller    string    `json:"caller,omitempty"`
	Version   string    `json:"version"`
	Go        string    `json:"go"`
	Ready     bool      `json:"ready"`
	StartedAt time.Time `json:"started_at"`
	UptimeS   float64   `json:"uptime_s"`
	// Broker is the broker URL, password hidden.
	Broker string `json:"broker"`
	// BrokerState is "connecting" until the sidecar's broker connection
	// opened, then "connected", or "disconnected" while a backend that can
	// tell (broker.Connectivity) is reconnecting.
	BrokerState string `json:"broker_state"`
	// BrokerSince is when the connection opened.
	BrokerSince *time.Time `json:"broker_since,omitempty"`
	// Brokers are the ambassador's further connections (ambassador.brokers),
	// which traffic splits and mirrors use, by name.
	Brokers    []BrokerInfo      `json:"brokers,omitempty"`
	Components map[string]string `json:"components"`
}

// BrokerInfo is one of the ambassador's further broker connections.
type BrokerInfo struct {
	// Name is its key in ambassador.brokers, as weights and metrics name it.
	Name string `json:"name"`
	// Broker is its URL, password hidden.
	Broker string `json:"broker"`
	// State is "connected", or "disconnected" while a backend that can
	// tell is reconnecting.
	State string `json:"state"`
}

func (s *Server) info() Info {
	parts := s.parts()
	in := Info{
		Sidecar:     s.opts.Sidecar,
		Mesh:        s.opts.Mesh,
		Caller:      s.opts.Caller,
		Version:     s.opts.Version,
		Go:          runtime.Version(),
		Ready:       s.ready.Load(),
		StartedAt:   s.started.UTC(),
		UptimeS:     time.Since(s.started).Seconds(),
		Broker:      s.opts.Broker,
		BrokerState: "connecting",
		Components:  map[string]string{},
	}
	if !parts.BrokerSince.IsZero() {
		since := parts.BrokerSince.UTC()
		in.BrokerState, in.BrokerSince = "connected", &since
		if parts.BrokerConnected != nil && !parts.BrokerConnected() {
			in.BrokerState = "disconnected"
		}
	}
	if parts.Brokers != nil {
		in.Brokers = parts.Brokers()
	}
	if parts.Components != nil {
		in.Components = parts.Components()
	}
	return in
}

func (s *Server) serveInfo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(s.info()) // a failed write is the client's going away
}
