// Package kafka is the Kafka backend of package broker, on franz-go's kgo
// client (github.com/twmb/franz-go), with kadm for topics. It registers the
// URL schemes kafka:// and kafkas:// (TLS).
//
// Mapping (docs/architecture.md, "Subjects"):
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
//     groups belong to their subject as in NATS, with kgo's cooperative-sticky
//     balancer: a rebalance moves only the partitions that change owner. On a
//     partition the group has no committed offset for, a member starts where
//     the partition ended when it called QueueSubscribe, and commits that
//     before returning: a new group skips old messages but never one
//     published after QueueSubscribe returned. A member marks each message
//     once its handler returned; kgo commits the marks every second and when
//     a rebalance revokes partitions, so the next owner starts where the last
//     stopped. Members heartbeat every 500 ms, so a join completes within
//     about a second (plus the broker's group.initial.rebalance.delay.ms for
//     a new group); a member that dies without leaving is replaced after
//     10 s.
//
// Delivery is at most once with acks=all (kgo's idempotent producer never
// writes a message twice); with the default acks=1 a produce request that a
// lost connection interrupted is sent again and may be written twice.
// Publish hands the message to kgo and returns; kgo sends it at once with
// no linger, so a lone request goes out immediately and a busy producer
// sends larger requests instead of a longer queue. Messages go to
// partitions round-robin, so queue-group members get equal shares; there is
// no ordering between them. kgo retries what a broker refused without
// writing (leader moved, not enough replicas, throttled), follows moved
// partitions and reconnects lost connections with backoff; fetches and
// consumer groups resume where they were. Consumers long-poll with the
// broker answering as soon as a message is there; fetch_wait only bounds an
// idle poll.
//
// The backend is a broker.Connectivity: every franz-go client of a Conn
// reports lost connections and failed dials through kgo's hooks, and the
// Conn then asks the cluster for metadata (750 ms at most). When no broker
// can be reached (refused, reset), Connected turns false at once, so a lost
// cluster is reported within about a second; probes that only time out
// turn it false after 2 s of them (a busy cluster is not a lost one; a
// silent network is noticed that late too). The first request a broker
// answers, or a probe (every 250 ms, or at once when a client reconnects),
// turns it true again.
//
// After every such episode the Conn looks up the topics it uses, by ID. A
// cluster that came back empty (restarted without its data, replaced, or a
// topic deleted) no longer has them: the Conn creates them again, and as
// kgo refuses to follow a name to a new topic ID, it purges the old topic
// from its producer and points each subscription at the new topic from its
// first message; queue-group members rejoin their group, which starts at
// the first message too. Another Conn finds the topic under a new ID and
// does the same. Messages in flight across the loss are lost (at most
// once); the mesh's retries cover calls. Produce requests are held at v12
// (topics by name, as Kafka 2.8 to 4.0 speak).
//
// Kafka cannot tell a publisher that nobody listens, so the backend is not a
// broker.Returner; it is a broker.SizeLimiter.
//
// URL options: partitions (request topics' partition count, default 6),
// replication (default -1, the broker's default), max_message_bytes (default
// 1 MiB), retention (default 1h), acks (1 or all, default 1), fetch_wait
// (longest idle poll, default 500ms), client_id, client_metrics (true:
// push KIP-714 client metrics to a cluster that asks for them; default
// false, as the sidecar exports its own), tls (true: TLS, as
// kafkas://), tls_ca (a PEM file of CAs), sasl (plain, scram-sha-256 or
// scram-sha-512 with user:password@ from the URL; plain when only the
// userinfo is given). TLS and SASL are kgo's own (DialTLSConfig, SASL).
package kafka
