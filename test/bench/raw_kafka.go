package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka request/reply settings on kafka-go's Client and Transport, as the
// kafka-go candidate backend uses them: produce with group commit (one
// request in flight; what arrives meanwhile goes in the next, no linger),
// no compression, long-poll fetches (MinBytes 1) that the broker answers as
// soon as a message is there. kafka-go fetches and produces one partition
// per request and has no fetch sessions.
const kafkaMaxWait = 250 * time.Millisecond // longest idle long-poll

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

// kafkaClient is a kafka-go Client on a Transport of its own.
func kafkaClient(addr string) (*kafka.Client, *kafka.Transport) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}, tr
}

// createKafkaTopics creates single-partition topics on the cluster at addr.
func createKafkaTopics(ctx context.Context, cl *kafka.Client, topics ...string) error {
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: 1, ReplicationFactor: 1})
	}
	res, err := cl.CreateTopics(ctx, req)
	if err == nil {
		for _, e := range res.Errors {
			if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
				err = errors.Join(err, e)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	return nil
}

// kafkaEnd returns the offset the next message on partition 0 of topic
// gets: a reader that starts there reads what is published after this.
func kafkaEnd(ctx context.Context, cl *kafka.Client, topic string) (int64, error) {
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
	if err == nil && len(res.Topics[topic]) != 1 {
		err = errors.New("partition 0 not listed")
	}
	if err == nil {
		err = res.Topics[topic][0].Error
	}
	if err != nil {
		return 0, fmt.Errorf("end of %s: %w", topic, err)
	}
	return res.Topics[topic][0].LastOffset, nil
}

// readKafka long-polls partition 0 of topic from offset and hands each
// message's key and value to handle, until ctx ends or a fetch fails.
func readKafka(ctx context.Context, cl *kafka.Client, topic string, offset int64, handle func(key, value []byte)) error {
	for {
		res, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Offset: offset, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: kafkaMaxWait})
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return fmt.Errorf("kafka fetch: %w", err)
		}
		for {
			rec, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("kafka fetch: %w", err)
			}
			if rec.Offset < offset {
				continue // a batch may start before the offset asked for
			}
			key, _ := kafka.ReadAll(rec.Key)
			value, err := kafka.ReadAll(rec.Value)
			if err != nil {
				return fmt.Errorf("kafka fetch: %w", err)
			}
			offset = rec.Offset + 1
			handle(key, value)
		}
	}
}

// kafkaProducer writes to partition 0 of one topic with group commit: one
// Client.Produce in flight, the messages queued meanwhile in the next.
type kafkaProducer struct {
	cl    *kafka.Client
	topic string

	mu    sync.Mutex
	queue []kafka.Record
	busy  bool
	err   error // the first produce error; later produces fail with it
	wg    sync.WaitGroup
}

func (p *kafkaProducer) produce(key, value []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.queue = append(p.queue, kafka.Record{Key: kafka.NewBytes(key), Value: kafka.NewBytes(value)})
	if !p.busy {
		p.busy = true
		p.wg.Go(p.send)
	}
	return nil
}

func (p *kafkaProducer) send() {
	for {
		p.mu.Lock()
		recs := p.queue
		p.queue = nil
		if len(recs) == 0 {
			p.busy = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		res, err := p.cl.Produce(context.Background(), &kafka.ProduceRequest{
			Topic: p.topic, RequiredAcks: kafka.RequireOne, Records: kafka.NewRecordReader(recs...),
		})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = fmt.Errorf("kafka produce: %w", err)
			}
			p.mu.Unlock()
		}
	}
}

// kafkaRequester is request/reply on kafka-go's Client: requests go to a
// request topic with an 8-byte correlation id as key, replies come back on
// a reply topic read from its end.
type kafkaRequester struct {
	tr      *kafka.Transport
	prod    *kafkaProducer
	pending *pending
	cancel  context.CancelFunc
	done    chan struct{}
	readErr error // set before done is closed
}

// newKafkaRequester creates the row's topics and connects to them; the
// responder is started after, on the same prefix.
func newKafkaRequester(ctx context.Context, addr, prefix string) (*kafkaRequester, error) {
	reqTopic, repTopic := kafkaTopics(prefix)
	cl, tr := kafkaClient(addr)
	if err := createKafkaTopics(ctx, cl, reqTopic, repTopic); err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	end, err := kafkaEnd(ctx, cl, repTopic)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &kafkaRequester{tr: tr, prod: &kafkaProducer{cl: cl, topic: reqTopic}, pending: newPending(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.readErr = readKafka(rctx, cl, repTopic, end, func(key, value []byte) {
			if len(key) == 8 {
				r.pending.deliver(binary.BigEndian.Uint64(key), value)
			}
		})
	}()
	return r, nil
}

func (r *kafkaRequester) request(ctx context.Context, payload []byte) ([]byte, error) {
	id, ch := r.pending.open()
	key := binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
	if err := r.prod.produce(key, payload); err != nil {
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
	<-r.done
	r.prod.wg.Wait()
	r.tr.CloseIdleConnections()
	return nil
}

// respondKafka answers every message on the request topic of prefix with a
// message of the same key and value on its reply topic.
func respondKafka(ctx context.Context, addr, prefix string, ready func(string)) error {
	reqTopic, repTopic := kafkaTopics(prefix)
	cl, tr := kafkaClient(addr)
	defer tr.CloseIdleConnections()
	// Ready is printed once the request topic's end is known: no request
	// published after it is missed.
	end, err := kafkaEnd(ctx, cl, reqTopic)
	if err != nil {
		return err
	}
	prod := &kafkaProducer{cl: cl, topic: repTopic}
	defer prod.wg.Wait()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var perr error // the first produce error; it ends the read
	errc := make(chan error, 1)
	go func() {
		errc <- readKafka(rctx, cl, reqTopic, end, func(key, value []byte) {
			if err := prod.produce(key, value); err != nil && perr == nil {
				perr = err
				cancel()
			}
		})
	}()
	ready(reqTopic)
	if err := <-errc; err != nil {
		return err
	}
	return perr
}
