package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka request/reply settings, the lowest-latency ones kafka-go's Conn
// allows: fetches long-poll with MinBytes 1 (the broker answers as soon as
// a message is there), and a writer sends whatever is queued as one
// produce request the moment it is free (group commit, no linger timer).
// DESIGN.md measured the alternative, kafka.Writer with BatchSize 1, at a
// sixth of this throughput.
const (
	kafkaMaxWait    = 250 * time.Millisecond // longest idle long-poll
	kafkaBatchBytes = 768 << 10              // below kfake's 1 MiB max.message.bytes
	kafkaQueue      = 1024
)

// runKfake runs an in-memory Kafka cluster of one broker (franz-go's
// kfake), reachable over TCP by the sidecars and the raw clients.
func runKfake(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	port := fs.Int("port", 0, "listen port on 127.0.0.1 (0: any)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := []kfake.Opt{kfake.NumBrokers(1)}
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

// createKafkaTopics creates single-partition topics on the cluster at addr.
func createKafkaTopics(ctx context.Context, addr string, topics ...string) error {
	conn, err := (&kafka.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect to kafka %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find kafka controller: %w", err)
	}
	cc, err := (&kafka.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("connect to kafka controller: %w", err)
	}
	defer func() { _ = cc.Close() }()
	configs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		configs[i] = kafka.TopicConfig{Topic: t, NumPartitions: 1, ReplicationFactor: 1}
	}
	if err := cc.CreateTopics(configs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	return nil
}

// dialKafkaLeader connects to the leader of partition 0 of topic, retrying
// briefly while a new topic's leader is elected.
func dialKafkaLeader(ctx context.Context, addr, topic string) (*kafka.Conn, error) {
	var err error
	for range 50 {
		var c *kafka.Conn
		if c, err = kafka.DialLeader(ctx, "tcp", addr, topic, 0); err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("connect to leader of %s: %w", topic, err)
}

// kafkaWriter produces to one partition: Send queues a message, and one
// goroutine writes everything queued as one produce request whenever it is
// free.
type kafkaWriter struct {
	conn  *kafka.Conn
	queue chan kafka.Message
	stop  chan struct{}
	done  chan struct{}

	mu  sync.Mutex
	err error // the first write error; later sends fail with it
}

func newKafkaWriter(conn *kafka.Conn) *kafkaWriter {
	w := &kafkaWriter{conn: conn, queue: make(chan kafka.Message, kafkaQueue), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// send queues m; it fails once a write has failed.
func (w *kafkaWriter) send(ctx context.Context, m kafka.Message) error {
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case w.queue <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-w.stop:
		return errors.New("kafka writer closed")
	}
}

func (w *kafkaWriter) loop() {
	defer close(w.done)
	batch := make([]kafka.Message, 0, 256)
	for {
		select {
		case <-w.stop:
			return
		case m := <-w.queue:
			batch = append(batch[:0], m)
			size := len(m.Value)
		drain:
			for size < kafkaBatchBytes {
				select {
				case m := <-w.queue:
					batch = append(batch, m)
					size += len(m.Value)
				default:
					break drain
				}
			}
			_ = w.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := w.conn.WriteMessages(batch...); err != nil {
				w.mu.Lock()
				if w.err == nil {
					w.err = fmt.Errorf("kafka produce: %w", err)
				}
				w.mu.Unlock()
			}
		}
	}
}

func (w *kafkaWriter) close() error {
	close(w.stop)
	<-w.done
	return w.conn.Close()
}

// seekKafkaEnd positions conn at the end of its partition: what is
// published after it returns will be read.
func seekKafkaEnd(conn *kafka.Conn) error {
	if _, err := conn.Seek(0, kafka.SeekEnd); err != nil {
		return fmt.Errorf("seek to end: %w", err)
	}
	return nil
}

// readKafka long-polls one partition from conn's offset and hands each
// message to handle, until ctx ends or a read fails.
func readKafka(ctx context.Context, conn *kafka.Conn, handle func(kafka.Message)) error {
	for ctx.Err() == nil {
		_ = conn.SetReadDeadline(time.Now().Add(kafkaMaxWait + 10*time.Second))
		b := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 16 << 20, MaxWait: kafkaMaxWait})
		for {
			m, err := b.ReadMessage()
			if err != nil {
				break
			}
			handle(m)
		}
		// kafka-go reports a long poll that found nothing as
		// RequestTimedOut; the connection stays usable.
		if err := b.Close(); err != nil && !errors.Is(err, kafka.RequestTimedOut) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kafka fetch: %w", err)
		}
	}
	return nil
}

// kafkaRequester is request/reply on kafka-go's Conn: requests go to a
// request topic with an 8-byte correlation id as key, replies come back on
// a reply topic read from its end.
type kafkaRequester struct {
	w       *kafkaWriter
	reader  *kafka.Conn
	topic   string
	pending *pending
	cancel  context.CancelFunc
	done    chan struct{}
	readErr error // set before done is closed
}

// newKafkaRequester creates the row's topics and connects to them; the
// responder is started after, on the same prefix.
func newKafkaRequester(ctx context.Context, addr, prefix string) (*kafkaRequester, error) {
	reqTopic, repTopic := kafkaTopics(prefix)
	if err := createKafkaTopics(ctx, addr, reqTopic, repTopic); err != nil {
		return nil, err
	}
	wc, err := dialKafkaLeader(ctx, addr, reqTopic)
	if err != nil {
		return nil, err
	}
	rc, err := dialKafkaLeader(ctx, addr, repTopic)
	if err != nil {
		_ = wc.Close()
		return nil, err
	}
	if err := seekKafkaEnd(rc); err != nil {
		_ = wc.Close()
		_ = rc.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &kafkaRequester{w: newKafkaWriter(wc), reader: rc, topic: reqTopic, pending: newPending(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.readErr = readKafka(rctx, rc, func(m kafka.Message) {
			if len(m.Key) == 8 {
				r.pending.deliver(binary.BigEndian.Uint64(m.Key), m.Value)
			}
		})
	}()
	return r, nil
}

func (r *kafkaRequester) request(ctx context.Context, payload []byte) ([]byte, error) {
	id, ch := r.pending.open()
	key := binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
	if err := r.w.send(ctx, kafka.Message{Key: key, Value: payload}); err != nil {
		r.pending.forget(id)
		return nil, err
	}
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
	werr := r.w.close()
	_ = r.reader.Close() // ends a fetch in progress
	<-r.done
	return werr
}

// respondKafka answers every message on the request topic of prefix with a
// message of the same key and value on its reply topic.
func respondKafka(ctx context.Context, addr, prefix string, ready func(string)) error {
	reqTopic, repTopic := kafkaTopics(prefix)
	rc, err := dialKafkaLeader(ctx, addr, reqTopic)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	wc, err := dialKafkaLeader(ctx, addr, repTopic)
	if err != nil {
		return err
	}
	w := newKafkaWriter(wc)
	defer func() { _ = w.close() }()
	// Ready is printed after the seek: no request published after it is
	// missed.
	if err := seekKafkaEnd(rc); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		errc <- readKafka(ctx, rc, func(m kafka.Message) {
			_ = w.send(ctx, kafka.Message{Key: m.Key, Value: m.Value})
		})
	}()
	ready(reqTopic)
	select {
	case <-ctx.Done():
		_ = rc.Close() // ends a fetch in progress; readKafka then returns nil
		return <-errc
	case err := <-errc:
		return err
	}
}
