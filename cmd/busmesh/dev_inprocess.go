//go:build !nodev

package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"

	bnats "github.com/busmesh/busmesh/broker/nats"
)

// devKafkaConfigs bound the memory of busmesh dev's Kafka cluster, which
// keeps every record in memory: every 5s it drops what is past 16 MiB in a
// partition (besides the topics' own retention.ms, an hour by default;
// kfake applies retention only while some topic sets its own, as every
// topic busmesh creates does). A consumer more than that behind skips to
// the end. kfake frees memory by whole segments only, so a segment is
// 1 MiB rather than Kafka's 100 MiB; a segment is an in-memory file that
// grows by doubling, so small ones also keep kfake from copying large
// ones under load.
var devKafkaConfigs = map[string]string{
	"log.cleaner.backoff.ms": "5000",
	"log.retention.bytes":    strconv.Itoa(16 << 20),
	"log.segment.bytes":      strconv.Itoa(1 << 20),
}

// inProcessBroker starts busmesh dev's broker in this process: a NATS
// server, or a Kafka cluster (kfake).
func inProcessBroker(kind string) (url, name string, stop func(), err error) {
	if kind == "kafka" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(devKafkaConfigs))
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
