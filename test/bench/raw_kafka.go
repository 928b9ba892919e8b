package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka request/reply settings, the lowest-latency ones franz-go's kgo
// allows and the busmesh backend uses: no linger (a lone message goes out at
// once; a busy producer batches instead), no compression, long-poll fetches
// that the broker answers as soon as a message is there, no fetch session.
const kafkaMaxWait = 250 * time.Millisecond // longest idle long-poll

// runKfake runs an in-memory Kafka cluster of one broker (franz-go's
// kfake), reachable over TCP by the sidecars and the raw clients.
func runKfake(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	port := fs.Int("port", 0, "listen port on 127.0.0.1 (0: any)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// kfake keeps every record in memory: a run writes gigabytes, and the
	// cluster's garbage collection then takes CPU from the rows measured
	// late. Twice a second it drops what is past 4 MiB per partition (no row
	// reads that far back; kfake applies retention while some topic sets its
	// own, as the mesh rows' topics do). It frees memory by whole segments
	// only, and a segment is one in-memory file grown by doubling: at
	// Kafka's 100 MiB segments nothing was freed before a partition held
	// 100 MiB, and copying the growing file was half of kfake's CPU under
	// 16 KiB calls. 1 MiB segments keep both small, as a real broker's
	// appends to its page cache are.
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{
		"log.cleaner.backoff.ms": "500",
		"log.retention.bytes":    strconv.Itoa(4 << 20),
		"log.segment.bytes":      strconv.Itoa(1 << 20),
	})}
	if *port != 0 {
		opts = append(opts, kfake.Ports(*port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer c.Close()
	ready(c.ListenAddrs()[0])
	<-ctx.Done()
	return nil
}

// kafkaTopics names the request and reply topics of a raw row.
func kafkaTopics(prefix string) (req, rep string) { return prefix + "-req", prefix + "-rep" }

// kafkaClient is a kgo client that produces to partition 0 with acks=1 and,
// if consume is set, reads partition 0 of that topic from its end as
// of this call: what is published after it returns is read.
func kafkaClient(ctx context.Context, addr, consume string) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.FetchMaxWait(kafkaMaxWait),
		kgo.DisableFetchSessions(),
	}
	if consume != "" {
		adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			return nil, err
		}
		ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, consume)
		adm.Close()
		if err == nil {
			err = ends.Error()
		}
		end, ok := ends.Lookup(consume, 0)
		if err != nil || !ok {
			return nil, fmt.Errorf("end of %s: %w (partition 0 listed: %v)", consume, err, ok)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{consume: {0: kgo.NewOffset().At(end.Offset)}}))
	}
	return kgo.NewClient(opts...)
}

// createKafkaTopics creates single-partition topics on the cluster at addr.
func createKafkaTopics(ctx context.Context, addr string, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, nil, topics...)
	if err == nil {
		for _, r := range res {
			if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
				err = errors.Join(err, r.Err)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	return nil
}

// readKafka polls cl and hands each message to handle, until ctx ends or
// the client fails.
func readKafka(ctx context.Context, cl *kgo.Client, handle func(*kgo.Record)) error {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("kafka fetch: %w", err)
		}
		fs.EachRecord(handle)
	}
}

// kafkaRequester is request/reply on kgo: requests go to a request topic
// with an 8-byte correlation id as key, replies come back on a reply topic
// read from its end.
type kafkaRequester struct {
	cl      *kgo.Client
	topic   string
	pending *pending
	cancel  context.CancelFunc
	done    chan struct{}
	readErr error // set before done is closed

	mu       sync.Mutex
	writeErr error // the first produce error; later requests fail with it
}

// newKafkaRequester creates the row's topics and connects to them; the
// responder is started after, on the same prefix.
func newKafkaRequester(ctx context.Context, addr, prefix string) (*kafkaRequester, error) {
	reqTopic, repTopic := kafkaTopics(prefix)
	if err := createKafkaTopics(ctx, addr, reqTopic, repTopic); err != nil {
		return nil, err
	}
	cl, err := kafkaClient(ctx, addr, repTopic)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &kafkaRequester{cl: cl, topic: reqTopic, pending: newPending(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.readErr = readKafka(rctx, cl, func(m *kgo.Record) {
			if len(m.Key) == 8 {
				r.pending.deliver(binary.BigEndian.Uint64(m.Key), m.Value)
			}
		})
	}()
	return r, nil
}

func (r *kafkaRequester) produced(_ *kgo.Record, err error) {
	if err != nil {
		r.mu.Lock()
		if r.writeErr == nil {
			r.writeErr = fmt.Errorf("kafka produce: %w", err)
		}
		r.mu.Unlock()
	}
}

func (r *kafkaRequester) request(ctx context.Context, payload []byte) ([]byte, error) {
	r.mu.Lock()
	err := r.writeErr
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	id, ch := r.pending.open()
	key := binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
	r.cl.Produce(context.Background(), &kgo.Record{Topic: r.topic, Key: key, Value: payload}, r.produced)
	select {
	case <-r.done:
		r.pending.forget(id)
		return nil, fmt.Errorf("reply reader stopped: %w", r.readErr)
	default:
	}
	return r.pending.wait(ctx, id, ch)
}

func (r *kafkaRequester) close() error {
	r.cancel()
	<-r.done
	r.cl.Close()
	return nil
}

// respondKafka answers every message on the request topic of prefix with a
// message of the same key and value on its reply topic.
func respondKafka(ctx context.Context, addr, prefix string, ready func(string)) error {
	reqTopic, repTopic := kafkaTopics(prefix)
	// Ready is printed once the request topic's end is known: no request
	// published after it is missed.
	cl, err := kafkaClient(ctx, addr, reqTopic)
	if err != nil {
		return err
	}
	defer cl.Close()
	errc := make(chan error, 1)
	go func() {
		errc <- readKafka(ctx, cl, func(m *kgo.Record) {
			cl.Produce(ctx, &kgo.Record{Topic: repTopic, Key: m.Key, Value: m.Value}, nil)
		})
	}()
	ready(reqTopic)
	return <-errc
}
