package kafka

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

const (
	// maxBuffered bounds the bytes published and not yet answered. Past it
	// Publish waits for room until its ctx ends.
	maxBuffered = 32 << 20

	// flushTimeout is how long Close keeps sending what was published
	// before it.
	flushTimeout = 2 * time.Second

	// maxTries is how often a produce request is sent before its messages
	// are given up: about 5 s of backoff, long enough for kafka-go's cached
	// metadata (metadataTTL) to show a moved leader.
	maxTries = 10

	// produceTimeout bounds one produce request.
	produceTimeout = 10 * time.Second

	// recordOverhead is room for one record's framing in a record batch.
	recordOverhead = 32
)

// producer sends published messages with group commit per partition: a
// partition with a produce request in flight queues what is published
// meanwhile, and its sender takes the whole queue (up to one record batch)
// into the next request. An idle partition's message goes out at once, on a
// sender goroutine started for it; kafka-go's Client.Produce writes one
// partition per request.
type producer struct {
	c      *Conn
	ctx    context.Context // cancelled when Close stops flushing
	cancel context.CancelFunc

	mu       sync.Mutex
	queues   map[partKey]*partQueue
	buffered int
	room     chan struct{} // closed when buffered shrinks
	closing  bool
	senders  sync.WaitGroup
}

type partKey struct {
	topic string
	part  int32
}

// partQueue is one partition's messages waiting for a produce request.
type partQueue struct {
	key  partKey
	msgs [][]byte
	busy bool // a sender runs
}

func newProducer(c *Conn) *producer {
	p := &producer{c: c, queues: map[partKey]*partQueue{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// publish queues a copy of data for the next partition of t.
func (p *producer) publish(ctx context.Context, t *topic, data []byte) error {
	key := partKey{t.name, int32(t.next.Add(1) % uint32(t.parts))}
	v := bytes.Clone(data)
	p.mu.Lock()
	for p.buffered > 0 && p.buffered+len(v) > maxBuffered && !p.closing {
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.c.done:
			return broker.ErrClosed
		}
		p.mu.Lock()
	}
	if p.closing {
		p.mu.Unlock()
		return broker.ErrClosed
	}
	q := p.queues[key]
	if q == nil {
		q = &partQueue{key: key}
		p.queues[key] = q
	}
	q.msgs = append(q.msgs, v)
	p.buffered += len(v)
	if !q.busy {
		q.busy = true
		p.senders.Go(func() { p.send(q) })
	}
	p.mu.Unlock()
	return nil
}

// send writes q's messages, a record batch per request, until q is empty.
func (p *producer) send(q *partQueue) {
	limit := p.c.cfg.maxBatch() - 128 // the batch header
	for {
		p.mu.Lock()
		n, size := 0, 0
		for n < len(q.msgs) && (n == 0 || size+len(q.msgs[n])+recordOverhead <= limit) {
			size += len(q.msgs[n]) + recordOverhead
			n++
		}
		if n == 0 {
			q.busy = false
			p.mu.Unlock()
			return
		}
		msgs := q.msgs[:n:n]
		q.msgs = q.msgs[n:]
		p.mu.Unlock()

		p.produce(q.key, msgs)

		p.mu.Lock()
		for _, m := range msgs {
			p.buffered -= len(m)
		}
		if p.room != nil {
			close(p.room)
			p.room = nil
		}
		p.mu.Unlock()
	}
}

// produce writes msgs to one partition, retrying what the broker refused
// without writing (leader moved, not enough replicas) and what a failed
// connection interrupted (which the broker may have written: with acks=1
// such a message may arrive twice, as with kgo).
func (p *producer) produce(key partKey, msgs [][]byte) {
	recs := make([]kafka.Record, len(msgs))
	var bo backoff
	var err error
	for try := 1; try <= maxTries; try++ {
		for i, m := range msgs {
			recs[i] = kafka.Record{Value: kafka.NewBytes(m)}
		}
		ctx, cancel := context.WithTimeout(p.ctx, produceTimeout)
		var res *kafka.ProduceResponse
		res, err = p.c.cl.Produce(ctx, &kafka.ProduceRequest{
			Topic:        key.topic,
			Partition:    int(key.part),
			RequiredAcks: kafka.RequiredAcks(p.c.cfg.acks),
			Records:      kafka.NewRecordReader(recs...),
		})
		cancel()
		if err == nil {
			if err = res.Error; err == nil {
				return
			}
			var ke kafka.Error
			if !errors.As(err, &ke) || !ke.Temporary() {
				break // refused for good (too large, not authorized)
			}
		}
		if p.ctx.Err() != nil || !sleep(p.ctx, bo.next()) {
			err = errors.Join(err, p.ctx.Err())
			break
		}
	}
	p.c.logger.Warn("publish failed", telemetry.KeySubject, key.topic, keyPartition, key.part, keyCount, len(msgs), telemetry.KeyErr, err)
}

// close sends what is queued, for at most flushTimeout, and waits for the
// senders.
func (p *producer) close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	giveUp := time.AfterFunc(flushTimeout, p.cancel)
	p.senders.Wait()
	giveUp.Stop()
	p.cancel()
}
