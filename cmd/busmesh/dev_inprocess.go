//go:build !nodev

package main

import (
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"

	bnats "github.com/busmesh/busmesh/broker/nats"
)

// inProcessBroker starts busmesh dev's broker in this process: a NATS
// server, or a Kafka cluster (kfake).
func inProcessBroker(kind string) (url, name string, stop func(), err error) {
	if kind == "kafka" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return "", "", nil, fmt.Errorf("in-process Kafka cluster: %w", err)
		}
		return "kafka://" + strings.Join(c.ListenAddrs(), ","), "an in-process Kafka cluster (kfake)", c.Close, nil
	}
	srv, err := bnats.StartServer("127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	return srv.URL(), "the embedded NATS broker", srv.Shutdown, nil
}
