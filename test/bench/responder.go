package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
)

// requester is a broker's own request/reply, the floor of the busmesh row
// on that broker. request is safe for concurrent use; it returns the reply
// body.
type requester interface {
	request(ctx context.Context, payload []byte) ([]byte, error)
	close() error
}

// runResponder answers request/reply on one broker: whatever arrives on
// -name is sent back to its sender, as is. It runs in a process of its own,
// like the adapter does.
func runResponder(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	kind := fs.String("kind", "", "broker: nats, rabbitmq or kafka")
	url := fs.String("url", "", "broker URL or address")
	name := fs.String("name", "", "subject, queue or topic prefix to answer on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *url == "" {
		return fmt.Errorf("-url and -name are required")
	}
	switch *kind {
	case "nats":
		return respondNATS(ctx, *url, *name, ready)
	case "rabbitmq":
		return respondRabbitMQ(ctx, *url, *name, ready)
	case "kafka":
		return respondKafka(ctx, *url, *name, ready)
	}
	return fmt.Errorf("-kind %q is not nats, rabbitmq or kafka", *kind)
}

// pending matches replies to waiting requests by a correlation id, as a
// client of a request/reply protocol without one built in does.
type pending struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan []byte
}

func newPending() *pending { return &pending{waiting: map[uint64]chan []byte{}} }

// open registers a request; its reply arrives on the channel.
func (p *pending) open() (uint64, chan []byte) {
	ch := make(chan []byte, 1)
	p.mu.Lock()
	p.next++
	id := p.next
	p.waiting[id] = ch
	p.mu.Unlock()
	return id, ch
}

// forget removes a request that gave up.
func (p *pending) forget(id uint64) {
	p.mu.Lock()
	delete(p.waiting, id)
	p.mu.Unlock()
}

// deliver hands a reply to its request, if it is still waiting.
func (p *pending) deliver(id uint64, data []byte) {
	p.mu.Lock()
	ch := p.waiting[id]
	delete(p.waiting, id)
	p.mu.Unlock()
	if ch != nil {
		ch <- data
	}
}

// wait waits for the reply to id.
func (p *pending) wait(ctx context.Context, id uint64, ch chan []byte) ([]byte, error) {
	select {
	case data := <-ch:
		return data, nil
	case <-ctx.Done():
		p.forget(id)
		return nil, ctx.Err()
	}
}
