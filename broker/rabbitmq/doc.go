// Package rabbitmq is the RabbitMQ backend of package broker, on
// github.com/rabbitmq/amqp091-go (AMQP 0-9-1). See docs/architecture.md
// ("Subjects").
//
// # URL
//
//	amqp://user:pass@host:5672/vhost?exchange=busmesh&prefetch=32
//	amqps://user:pass@host:5671/vhost?tls_ca=/etc/ca.pem&tls_server_name=rabbit.example
//
// Options: exchange (default "busmesh"), exchange_type (the type a new
// exchange is declared with: direct, the default, or topic), prefetch
// (queue-group members' unacknowledged messages, default 32), confirm (wait for publisher confirms,
// default false), max_message_bytes (the server's max_message_size, when it
// is not the default of its version). For amqps:// only, named as the NATS
// and Kafka backends name theirs: tls_ca (a PEM file of the CAs to trust
// instead of the system's), tls_cert and tls_key (a client certificate and
// its key, PEM), tls_server_name (the name to expect in the server's
// certificate, when it is not the host dialed); the files are checked at
// Dial. amqp091-go's own options (heartbeat, connection_timeout,
// channel_max, and its names for the TLS settings: cacertfile, certfile,
// keyfile, server_name_indication) pass through; any other is an error.
//
// # What maps to what
//
//   - All subjects share one durable exchange; the routing key is the
//     subject. Subjects are literal: the topic wildcards "*" and "#" are
//     refused as tokens of a subscribed subject. A new exchange is direct,
//     which routes literal subjects for less of the broker's CPU than
//     topic (README, "Benchmark"). An exchange that exists as topic (busmesh
//     declared topic before this option, and an operator may have made it)
//     is used as it is, with a log line saying so. Busmesh versions before
//     exchange_type declare topic and fail on a direct exchange: a fleet
//     that mixes them on a new broker or vhost sets exchange_type=topic
//     until the old ones are gone. On a direct exchange, queues an operator
//     binds with wildcard patterns (a tap) receive nothing, and RabbitMQ's
//     topic permissions do not apply; exchange_type=topic keeps both.
//   - Subscribe (fan-out, inboxes): an exclusive, auto-delete, server-named
//     queue bound to the subject, on a channel of its own.
//   - QueueSubscribe: a classic queue named "<exchange>/<group>/<subject>"
//     (hashed when too long), shared by every member on every connection,
//     bound to the subject, consumed with the prefetch limit (basic.qos)
//     and acknowledged after the handler returns, so a member whose handler
//     blocks holds at most prefetch messages and the others take the rest.
//     The adapter's handler never blocks (it queues or refuses a call), so
//     the window paces deliveries; a member stalled without losing its
//     connection (starved of CPU, partitioned) holds up to prefetch calls
//     until the heartbeat gives up on it, and their callers time out.
//     The queue is auto-deleted with its last consumer (and expires after
//     60 s without one, for a member that died between declare and
//     consume). The trade-off: when the last member goes (or every member's
//     connection drops), messages still queued are lost and later publishes
//     are returned as unroutable, instead of piling up for a member that
//     may never come back; a request with a deadline wants that answer at
//     once, and its caller can retry. Messages are transient; the queue is
//     declared durable only because RabbitMQ 4 deprecates transient
//     non-exclusive queues, which leaves one gap: after a broker restart the
//     queue is back without consumers and swallows publishes until the
//     members return or it expires.
//   - Publish: one publishing channel per connection, mandatory flag, no
//     publisher confirms unless ?confirm=true. The single channel keeps each
//     publisher's messages in order and measured as fast as a pool (the
//     connection's socket is the point of serialization either way).
//   - broker.Returner: PublishReturnable puts the token in the message's
//     MessageId; basic.return hands it back and the publishing channel's
//     return loop calls returned(token).
//   - broker.SizeLimiter: the server's max_message_size, which AMQP does
//     not report: max_message_bytes, or else the default of the server's
//     version (128 MiB for RabbitMQ 3.x, 16 MiB for 4.x). Larger messages
//     fail with broker.ErrTooLarge before anything is sent, since RabbitMQ
//     answers them by closing the channel.
//
// # Delivery
//
// At most once. Handler calls are serial per subscription. Acks go after the
// handler, batched (multiple) while more deliveries are waiting, a group
// member's every 8 messages at most; what a group member prefetched but did
// not handle when it leaves or loses its connection is redelivered to
// another member, and so are the up to 8 it handled but had not yet
// acknowledged, so a handler may, rarely, see a message another member also
// saw.
//
// # Reconnection
//
// amqp091-go does not reconnect unless asked (its optional Recovery is not
// used: it cannot know that group queues must be declared before
// consuming, nor tell Publish the connection is down). When the connection
// is lost the backend logs it once, redials with jittered backoff (100 ms
// growing to 2 s), redeclares the exchange and reopens the publishing
// channel; each subscription then re-creates its queue, binding, qos and
// consumer on the new connection. Meanwhile Publish and Subscribe return
// broker.ErrDisconnected at once rather than wait: callers carry deadlines
// and the retry policy above the broker decides. Publish also returns it
// while the broker blocks publishers (a memory or disk alarm), rather than
// hang on a full socket.
package rabbitmq
