package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// produceTimeout is how long a broker may take to write a produce request.
const produceTimeout = 10 * time.Second

// maxTries bounds how often a message is sent again after its produce
// request failed or the broker refused it without writing; with the
// backoff between tries the last comes about 10 s after the first.
const maxTries = 15

// producer sends published messages with group commit: one sender per
// broker takes everything queued for that broker whenever it is free and
// sends it as one produce request, so a lone message goes out at once and
// concurrent ones share requests instead of queueing behind each other.
// The requests go through the kgo client's connection to the broker (kgo
// dials, negotiates versions, authenticates); kmsg encodes them. kgo's own
// producer pipeline measured 0.85x the requests/s of this at c=1.
type producer struct {
	c *Conn

	ctx    context.Context // cancelled when Close stops flushing
	cancel context.CancelFunc
	stop   chan struct{} // closed by close: send what is queued, then exit

	mu      sync.Mutex
	senders map[int32]*sender
	stopped bool
	room    chan struct{} // closed when buffered bytes go down; nil: nobody waits
	wg      sync.WaitGroup
}

// outMsg is a message waiting for its produce request.
type outMsg struct {
	topic string
	ps    *partitions
	part  int32
	value []byte
	tries int
}

// sender owns the produce requests to one broker.
type sender struct {
	p    *producer
	node int32
	wake chan struct{} // a message was queued

	mu    sync.Mutex
	queue []outMsg
}

func newProducer(c *Conn) *producer {
	p := &producer{c: c, stop: make(chan struct{}), senders: map[int32]*sender{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// publish queues a copy of data for the next partition of topic with a
// leader, waiting while maxBuffered bytes are unsent.
func (p *producer) publish(ctx context.Context, topic string, ps *partitions, data []byte) error {
	part, node, ok := ps.pick()
	if !ok {
		_ = p.c.topics.refresh(ctx, topic, ps)
		if part, node, ok = ps.pick(); !ok {
			return broker.ErrDisconnected
		}
	}
	if err := p.reserve(ctx, len(data)); err != nil {
		return err
	}
	m := outMsg{topic: topic, ps: ps, part: part, value: append([]byte(nil), data...)}
	s, err := p.sender(node)
	if err != nil {
		p.release(len(data))
		return err
	}
	s.enqueue(m)
	return nil
}

// reserve counts n bytes as unsent, waiting while the buffer is full.
func (p *producer) reserve(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		b := p.c.buffered.Load()
		if b == 0 || b+int64(n) <= maxBuffered {
			p.c.buffered.Add(int64(n))
			p.mu.Unlock()
			return nil
		}
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stop:
			return broker.ErrClosed
		}
	}
}

// release counts n bytes as sent or given up, waking waiting publishers.
func (p *producer) release(n int) {
	p.c.buffered.Add(-int64(n))
	p.mu.Lock()
	if p.room != nil {
		close(p.room)
		p.room = nil
	}
	p.mu.Unlock()
}

// sender returns the sender for broker node, starting it on first use.
func (p *producer) sender(node int32) (*sender, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil, broker.ErrClosed
	}
	s := p.senders[node]
	if s == nil {
		s = &sender{p: p, node: node, wake: make(chan struct{}, 1)}
		p.senders[node] = s
		p.wg.Go(s.run)
	}
	return s, nil
}

// close sends what is queued, for at most flushTimeout, and stops the
// senders.
func (p *producer) close() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	close(p.stop)
	giveUp := time.AfterFunc(flushTimeout, p.cancel)
	p.wg.Wait()
	giveUp.Stop()
	p.cancel()
}

func (s *sender) enqueue(msgs ...outMsg) {
	s.mu.Lock()
	s.queue = append(s.queue, msgs...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// requeue puts msgs back ahead of newer ones.
func (s *sender) requeue(msgs []outMsg) {
	s.mu.Lock()
	s.queue = append(msgs, s.queue...)
	s.mu.Unlock()
}

func (s *sender) take() []outMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

func (s *sender) run() {
	stopping := false
	for {
		if !stopping {
			select {
			case <-s.wake:
			case <-s.p.stop:
				stopping = true
			}
		}
		for s.round() {
		}
		if stopping || s.p.ctx.Err() != nil {
			s.drop(s.take(), broker.ErrClosed)
			return
		}
	}
}

// round sends one produce request with what is queued; false when there
// was nothing to send or the producer gave up flushing.
func (s *sender) round() bool {
	msgs := s.take()
	if len(msgs) == 0 {
		return false
	}
	ctx := s.p.ctx
	if ctx.Err() != nil {
		s.drop(msgs, ctx.Err())
		return false
	}
	req, parts, rest := produceRequest(s.p.c.cfg.acks, s.p.c.cfg.maxBatch(), msgs)
	if len(rest) > 0 {
		s.requeue(rest) // the next request carries them
		msgs = msgs[:0:0]
		for _, ms := range parts {
			msgs = append(msgs, ms...)
		}
	}
	resp, err := s.p.c.cl.Broker(int(s.node)).Request(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			s.drop(msgs, err)
			return false
		}
		// Connection lost or refused: kgo dials again on the next request.
		// The broker may have written some (acks=1 may deliver twice).
		s.retry(msgs, err)
		return true
	}
	s.settle(resp.(*kmsg.ProduceResponse), parts)
	return true
}

// settle reads the broker's answer for each partition of a request.
func (s *sender) settle(res *kmsg.ProduceResponse, parts map[tp][]outMsg) {
	var again []outMsg
	var cause error
	for _, rt := range res.Topics {
		for _, rp := range rt.Partitions {
			k := tp{rt.Topic, rp.Partition}
			msgs, ok := parts[k]
			if !ok {
				continue
			}
			delete(parts, k)
			err := kerr.ErrorForCode(rp.ErrorCode)
			switch {
			case err == nil:
				s.p.release(size(msgs))
			case kerr.IsRetriable(err) || topicLost(err):
				again, cause = append(again, msgs...), err
			default:
				s.p.drop(msgs, err)
			}
		}
	}
	for _, msgs := range parts {
		again, cause = append(again, msgs...), errors.New("partition missing from the produce response")
	}
	if len(again) > 0 {
		s.retry(again, cause)
	}
}

// retry sends msgs again after fresh metadata and a backoff that grows
// with their tries, each to its partition's leader now (or another
// partition's when it has none), unless they were tried too often.
func (s *sender) retry(msgs []outMsg, cause error) {
	p := s.p
	tries := 0
	asked := map[string]bool{}
	for _, m := range msgs {
		tries = max(tries, m.tries)
		if !asked[m.topic] {
			asked[m.topic] = true
			_ = p.c.topics.refresh(p.ctx, m.topic, m.ps)
		}
	}
	if topicLost(cause) {
		p.c.health.suspect()
	}
	wait := min(10*time.Millisecond<<tries, time.Second)
	select {
	case <-p.ctx.Done():
	case <-time.After(wait/2 + rand.N(wait/2+1)):
	}
	byNode := map[int32][]outMsg{}
	var dropped []outMsg
	for _, m := range msgs {
		m.tries++
		node := m.ps.leader(m.part)
		if node < 0 {
			var ok bool
			if m.part, node, ok = m.ps.pick(); !ok {
				node = -1
			}
		}
		if m.tries > maxTries || node < 0 || p.ctx.Err() != nil {
			dropped = append(dropped, m)
			continue
		}
		byNode[node] = append(byNode[node], m)
	}
	p.drop(dropped, cause)
	for node, ms := range byNode {
		to, err := p.sender(node)
		if err != nil {
			// Closing: no new sender starts, and this one flushes what it
			// has until Close gives up.
			to = s
		}
		to.enqueue(ms...)
	}
}

// drop gives up on msgs, logging why.
func (s *sender) drop(msgs []outMsg, err error) { s.p.drop(msgs, err) }

func (p *producer) drop(msgs []outMsg, err error) {
	if len(msgs) == 0 {
		return
	}
	p.release(size(msgs))
	lost := map[string]int{}
	for _, m := range msgs {
		lost[m.topic]++
	}
	lv := p.c.logger.Warn
	if topicLost(err) || errors.Is(err, context.Canceled) {
		lv = p.c.logger.Debug // the health check says so once
	}
	for topic, n := range lost {
		lv("publish failed", telemetry.KeySubject, topic, keyCount, n, telemetry.KeyErr, err)
	}
}

func size(msgs []outMsg) int {
	n := 0
	for _, m := range msgs {
		n += len(m.value)
	}
	return n
}

// tp names a partition of a topic.
type tp struct {
	topic string
	part  int32
}

// Record batch sizes, for keeping a batch within the topic's
// max.message.bytes and a request within maxRequest.
const (
	batchHeader    = 61 // a record batch's fields before its records
	recordOverhead = 21 // a record's fields around its value, at most
	maxRequest     = 8 << 20
)

// produceRequest builds one produce request for msgs, a record batch per
// partition of at most maxBatch bytes (one message alone may fill it), and
// returns which messages each partition carries and those left for the next
// request.
func produceRequest(acks int16, maxBatch int, msgs []outMsg) (*kmsg.ProduceRequest, map[tp][]outMsg, []outMsg) {
	parts := map[tp][]outMsg{}
	sizes := map[tp]int{}
	var order []tp
	full := map[tp]bool{} // later messages wait too: a partition keeps its order
	var rest []outMsg
	total := 0
	for _, m := range msgs {
		k := tp{m.topic, m.part}
		n := len(m.value) + recordOverhead
		if full[k] || total > 0 && total+n > maxRequest || sizes[k] > 0 && sizes[k]+n > maxBatch {
			full[k] = true
			rest = append(rest, m)
			continue
		}
		if _, ok := parts[k]; !ok {
			order = append(order, k)
			sizes[k] = batchHeader
		}
		parts[k] = append(parts[k], m)
		sizes[k] += n
		total += n
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = acks
	req.TimeoutMillis = int32(produceTimeout.Milliseconds())
	now := time.Now().UnixMilli()
	topicAt := map[string]int{}
	for _, k := range order {
		i, ok := topicAt[k.topic]
		if !ok {
			i = len(req.Topics)
			topicAt[k.topic] = i
			rt := kmsg.NewProduceRequestTopic()
			rt.Topic = k.topic
			req.Topics = append(req.Topics, rt)
		}
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = k.part
		rp.Records = recordBatch(parts[k], now)
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	return req, parts, rest
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordBatch encodes msgs as one uncompressed record batch (magic 2)
// timestamped now: kmsg writes the fields, this sets the length and CRC
// kmsg leaves to the producer.
func recordBatch(msgs []outMsg, now int64) []byte {
	var recs []byte
	for i, m := range msgs {
		r := kmsg.Record{OffsetDelta: int32(i), Value: m.value}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // everything after a one-byte zero length
		recs = r.AppendTo(recs)
	}
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(len(msgs) - 1),
		FirstTimestamp:       now,
		MaxTimestamp:         now,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(msgs)),
		Records:              recs,
	}
	raw := b.AppendTo(make([]byte, 0, 61+len(recs)))
	// Length counts what follows it; the CRC covers what follows it.
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
	return raw
}
