// Package kafka is the Kafka backend of package broker, on
// github.com/segmentio/kafka-go. It registers the URL schemes kafka:// and
// kafkas:// (TLS).
//
// Mapping (DESIGN.md, "Broker contract"):
//
//   - A subject is a topic of the same name, created on first use with
//     CreateTopics: subjects under busmesh.inbox. get one partition (an inbox
//     is one sidecar's reply topic, named after its stable sidecar name, so a
//     restart reuses it); other subjects get ?partitions= (default 6), enough
//     for that many instances of a service to share the work. Topics carry
//     max.message.bytes to fit MaxMessageBytes and retention.ms from
//     ?retention= (default 1h: requests outlive their deadlines quickly).
//   - Subscribe (fan-out) reads every partition without a consumer group,
//     from the end of each partition as of the call: no group join on the
//     reply path.
//   - QueueSubscribe is a consumer group, GroupID(subject, group), so queue
//     groups belong to their subject as in NATS. On a partition the group has
//     no committed offset for, a member starts where the partition ended when
//     it called QueueSubscribe, and commits that before returning: a new group
//     skips old messages but never one published after QueueSubscribe
//     returned. Positions are committed every second and when a rebalance
//     revokes partitions, so the next owner starts where the last stopped.
//     Members heartbeat every 500 ms, so a join completes within about a
//     second (plus the broker's group.initial.rebalance.delay.ms for a new
//     group); a member that dies without leaving is replaced after 10 s.
//     Membership is kafka-go's ConsumerGroup. A rebalance does not wait for
//     a running handler: the message it is handling counts as consumed.
//
// Delivery is at most once. Publish queues the message for its partition's
// leader and returns; each broker has one produce connection whose sender
// takes everything queued when it is free and writes it as one produce
// request (group commit): no linger timer, so a lone request goes out at
// once and a busy sender makes larger requests instead of a longer queue.
// Messages go to partitions round-robin, so queue-group members get equal
// shares; there is no ordering between them. Messages the broker refused
// before writing (leader moved) are routed again; those lost with a
// connection are logged, not resent. Consumers long-poll each leader for all
// of a subscription's partitions with MinBytes 1, so the broker answers as
// soon as a message is there; fetch_wait only bounds an idle poll.
//
// A lost connection is logged once per broker and retried with jittered
// backoff; fetch loops and consumer groups resume where they were.
// Kafka cannot tell a publisher that nobody listens, so the backend is not a
// broker.Returner; it is a broker.SizeLimiter.
//
// URL options: partitions (request topics' partition count, default 6),
// replication (default -1, the broker's default), max_message_bytes (default
// 1 MiB), retention (default 1h), acks (1 or all, default 1), fetch_wait
// (longest idle poll, default 500ms), client_id, tls (true: TLS, as
// kafkas://), tls_ca (a PEM file of CAs), sasl (plain, scram-sha-256 or
// scram-sha-512 with user:password@ from the URL; plain when only the
// userinfo is given).
package kafka
