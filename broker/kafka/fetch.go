package kafka

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// fanout is a fan-out subscription's reader: long-poll fetch requests,
// one per leader of the topic's partitions, through the subscription's
// kgo client's connections (kgo dials, negotiates versions, authenticates;
// kmsg encodes; kgo.ProcessFetchPartition decodes the batches). kgo's
// consumer passes each fetch through more goroutines than this one loop:
// on the reply path of every call that measured.
type fanout struct {
	s     *subscription
	ps    *partitions
	next  map[int32]int64 // partition → offset of its next fetch
	busy  map[int32]bool  // partitions in a request in flight
	reset chan int        // the topic was recreated with this many partitions

	results chan fetched
	bo      map[int32]time.Duration // leader → backoff after a failed request
}

// fetched is one fetch request's outcome.
type fetched struct {
	node  int32
	parts []int32
	res   *kmsg.FetchResponse
	err   error
}

func newFanout(s *subscription, ps *partitions, from map[int32]int64) *fanout {
	return &fanout{s: s, ps: ps, next: from, busy: map[int32]bool{}, reset: make(chan int, 1),
		results: make(chan fetched), bo: map[int32]time.Duration{}}
}

// run fetches and calls the handler until the subscription ends. With one
// leader to ask and nothing in flight (an inbox), it waits for the fetch
// itself; otherwise each leader's fetch runs on a goroutine of its own and
// the answers are handled here, in turn, so handler calls stay serial.
func (f *fanout) run() {
	ctx := f.s.ctx
	for ctx.Err() == nil {
		select {
		case parts := <-f.reset:
			f.restart(parts)
		default:
		}
		groups, leaderless := f.idle()
		if leaderless {
			// Elections take a moment: ask again (at most every
			// refreshEvery) until every partition has a leader.
			_ = f.s.c.topics.refresh(ctx, f.s.subject, f.ps)
		}
		if len(groups) == 1 && len(f.busy) == 0 {
			for node, parts := range groups {
				f.handle(f.fetch(ctx, node, parts, f.request(parts)))
			}
			continue
		}
		for node, parts := range groups {
			for _, p := range parts {
				f.busy[p] = true
			}
			req := f.request(parts)
			f.s.wg.Go(func() {
				r := f.fetch(ctx, node, parts, req)
				select {
				case f.results <- r:
				case <-ctx.Done():
				}
			})
		}
		if len(f.busy) == 0 {
			// Nobody leads anything: ask again shortly.
			f.sleep(ctx, -1)
			continue
		}
		select {
		case r := <-f.results:
			for _, p := range r.parts {
				delete(f.busy, p)
			}
			f.handle(r)
		case parts := <-f.reset:
			f.restart(parts)
		case <-ctx.Done():
		}
	}
}

// idle groups the partitions not being fetched by their leader;
// leaderless says some have none now.
func (f *fanout) idle() (groups map[int32][]int32, leaderless bool) {
	groups = map[int32][]int32{}
	for p := range f.next {
		if f.busy[p] {
			continue
		}
		if node := f.ps.leader(p); node >= 0 {
			groups[node] = append(groups[node], p)
		} else {
			leaderless = true
		}
	}
	return groups, leaderless
}

// request builds a long poll for parts from where each is.
func (f *fanout) request(parts []int32) *kmsg.FetchRequest {
	st := f.ps.state.Load()
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(f.s.c.cfg.fetchWait.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = fetchMaxBytes
	req.SessionEpoch = -1 // no fetch session (KIP-227): see consumeOpts
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = f.s.subject, st.id
	for _, p := range parts {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = p
		rp.FetchOffset = f.next[p]
		rp.PartitionMaxBytes = int32(f.s.c.cfg.maxBatch())
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// fetch sends req, a long poll for parts, to node.
func (f *fanout) fetch(ctx context.Context, node int32, parts []int32, req *kmsg.FetchRequest) fetched {
	res, err := f.s.cl.Broker(int(node)).Request(ctx, req)
	r := fetched{node: node, parts: parts, err: err}
	if err == nil {
		r.res = res.(*kmsg.FetchResponse)
		r.err = kerr.ErrorForCode(r.res.ErrorCode)
	}
	return r
}

// handle delivers a fetch's records and moves each partition on, or
// reacts to what went wrong: a moved leader (ask where it went), a lost
// position (continue from the end), a lost topic (have the Conn check).
func (f *fanout) handle(r fetched) {
	ctx := f.s.ctx
	if ctx.Err() != nil {
		return
	}
	if r.err != nil {
		f.failed(r.node, r.err)
		return
	}
	var lastErr error
	for _, rt := range r.res.Topics {
		for i := range rt.Partitions {
			rp := &rt.Partitions[i]
			at, ok := f.next[rp.Partition]
			if !ok {
				continue
			}
			fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset: at, Topic: f.s.subject, Partition: rp.Partition,
			}, rp, kgo.DefaultDecompressor(), nil)
			if fp.Err != nil {
				lastErr = fp.Err
				if errors.Is(fp.Err, kerr.OffsetOutOfRange) {
					f.toEnd(rp.Partition, fp.HighWatermark)
				}
				continue
			}
			for _, rec := range fp.Records {
				if ctx.Err() != nil {
					return
				}
				// A copy: rec.Value is a slice of the whole fetch response,
				// which a handler that keeps one message (a stalled
				// stream's frame) would keep alive in full.
				f.s.h(ctx, bytes.Clone(rec.Value))
			}
			f.next[rp.Partition] = next
		}
	}
	if lastErr != nil {
		f.failed(r.node, lastErr)
		return
	}
	delete(f.bo, r.node)
}

// failed logs why a fetch failed, asks where the partitions are led now and
// waits a backoff that grows while the same leader keeps failing.
func (f *fanout) failed(node int32, err error) {
	ctx := f.s.ctx
	if ctx.Err() != nil {
		return
	}
	if topicLost(err) {
		f.s.c.health.suspect()
	}
	lv := f.s.c.logger.Warn
	if kerr.IsRetriable(err) || topicLost(err) || errors.Is(err, kerr.OffsetOutOfRange) {
		lv = f.s.c.logger.Debug
	}
	var kafkaErr *kerr.Error
	if !errors.As(err, &kafkaErr) {
		lv = f.s.c.logger.Debug // a lost connection: the Conn's health check reports it
	}
	lv("subscription interrupted", telemetry.KeySubject, f.s.subject, telemetry.KeyErr, err)
	_ = f.s.c.topics.refresh(ctx, f.s.subject, f.ps)
	f.sleep(ctx, node)
}

// sleep waits the backoff of node (-1: nobody leads), doubling it.
func (f *fanout) sleep(ctx context.Context, node int32) {
	wait := f.bo[node]
	wait = min(max(2*wait, 10*time.Millisecond), time.Second)
	f.bo[node] = wait
	select {
	case <-ctx.Done():
	case <-time.After(wait/2 + rand.N(wait/2)):
	}
}

// toEnd continues partition p from its end: the log lost the position
// (truncated, or the topic recreated shorter).
func (f *fanout) toEnd(p int32, hw int64) {
	if hw >= 0 {
		f.next[p] = hw
		return
	}
	ends, err := f.s.c.topics.endOffsets(f.s.ctx, f.s.subject)
	if err == nil {
		if end, ok := ends[p]; ok {
			f.next[p] = end
		}
	}
}

// restart reads a recreated topic's parts partitions from their first
// message, once the fetches on the old one returned.
func (f *fanout) restart(parts int) {
	for len(f.busy) > 0 {
		select {
		case r := <-f.results:
			for _, p := range r.parts {
				delete(f.busy, p)
			}
		case <-f.s.ctx.Done():
			return
		}
	}
	_ = f.s.c.topics.refresh(f.s.ctx, f.s.subject, f.ps)
	f.next = make(map[int32]int64, parts)
	for p := range int32(parts) {
		f.next[p] = 0
	}
}
