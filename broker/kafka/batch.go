package kafka

import (
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"
)

// tp names a topic partition.
type tp struct {
	topic string
	part  int32
}

// batch is one produce request: a record batch per partition.
type batch struct {
	parts map[tp]*partBatch
	order []tp
	n     int
}

type partBatch struct {
	msgs    []outMsg
	size    int
	settled bool
}

// take removes from the queue what one produce request can carry: for each
// partition one record batch within the topic's size limit, and at most
// maxRequest bytes in all. It returns nil when the queue is empty.
func (s *sender) take() *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	b := &batch{parts: map[tp]*partBatch{}}
	limit := s.p.cfg.maxBatch()
	var rest []outMsg
	total := 0
	for _, m := range s.queue {
		k := tp{m.t.name, m.part}
		pb := b.parts[k]
		if pb == nil {
			pb = &partBatch{size: batchHeader}
		}
		rs := recordSize(len(m.value), len(pb.msgs))
		if len(pb.msgs) > 0 && pb.size+rs > limit || total > 0 && total+rs > maxRequest {
			rest = append(rest, m)
			continue
		}
		if len(pb.msgs) == 0 {
			b.parts[k] = pb
			b.order = append(b.order, k)
		}
		pb.msgs = append(pb.msgs, m)
		pb.size += rs
		total += rs
		b.n++
		s.bytes -= len(m.value)
	}
	clear(s.queue)
	s.queue = append(s.queue[:0], rest...)
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
	return b
}

func (b *batch) msgs() []outMsg {
	all := make([]outMsg, 0, b.n)
	for _, k := range b.order {
		all = append(all, b.parts[k].msgs...)
	}
	return all
}

func (b *batch) topics() []*topic {
	seen := map[*topic]bool{}
	var ts []*topic
	for _, k := range b.order {
		if t := b.parts[k].msgs[0].t; !seen[t] {
			seen[t] = true
			ts = append(ts, t)
		}
	}
	return ts
}

// request encodes b as a produce request.
func (b *batch) request(acks int16) *produce.Request {
	req := &produce.Request{Acks: acks, Timeout: int32(produceTimeout / time.Millisecond)}
	index := map[string]int{}
	for _, k := range b.order {
		pb := b.parts[k]
		recs := make([]protocol.Record, len(pb.msgs))
		for i, m := range pb.msgs {
			recs[i].Value = protocol.NewBytes(m.value)
		}
		i, ok := index[k.topic]
		if !ok {
			i = len(req.Topics)
			index[k.topic] = i
			req.Topics = append(req.Topics, produce.RequestTopic{Topic: k.topic})
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, produce.RequestPartition{
			Partition: k.part,
			RecordSet: protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(recs...)},
		})
	}
	return req
}
