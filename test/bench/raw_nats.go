package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
)

// natsRequester is nats.go's own request/reply: Conn.RequestWithContext on
// one connection, which matches replies on one wildcard inbox
// subscription, as the busmesh ambassador does.
type natsRequester struct {
	nc      *nats.Conn
	subject string
}

func dialNATS(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

func newNATSRequester(url, subject string) (*natsRequester, string, error) {
	nc, err := dialNATS(url, "bench-requester")
	if err != nil {
		return nil, "", err
	}
	return &natsRequester{nc: nc, subject: subject}, "nats-server " + nc.ConnectedServerVersion(), nil
}

func (r *natsRequester) request(ctx context.Context, payload []byte) ([]byte, error) {
	m, err := r.nc.RequestWithContext(ctx, r.subject, payload)
	if err != nil {
		return nil, fmt.Errorf("nats request: %w", err)
	}
	return m.Data, nil
}

func (r *natsRequester) close() error {
	r.nc.Close()
	return nil
}

// respondNATS answers every message on subject (in a queue group, as an
// adapter subscribes) with its own data.
func respondNATS(ctx context.Context, url, subject string, ready func(string)) error {
	nc, err := dialNATS(url, "bench-responder")
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := nc.QueueSubscribe(subject, "bench", func(m *nats.Msg) {
		_ = m.Respond(m.Data)
	}); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	ready(subject)
	<-ctx.Done()
	return nil
}
