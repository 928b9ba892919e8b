// Package kafka is the Kafka backend of package broker on segmentio/kafka-go
// (github.com/segmentio/kafka-go): its Client and Transport carry every
// produce, fetch, metadata, offset and topic request, with kafka-go's own
// connection pool, version negotiation, TLS and SASL (plain, scram). It is
// a candidate measured against the franz-go backend (issue 16). It
// registers the URL schemes kafka:// and kafkas:// (TLS).
//
// Mapping (docs/architecture.md, "Subjects"):
//
//   - A subject is a topic of the same name, created on first use with
//     Client.CreateTopics: subjects under busmesh.inbox. get one partition,
//     others ?partitions= (default 6). Topics carry max.message.bytes to fit
//     MaxMessageBytes and retention.ms from ?retention= (default 1h).
//   - Subscribe (fan-out) long-polls every partition with Client.Fetch (one
//     goroutine per partition: kafka-go fetches one partition per request)
//     from the end of each partition as of the call, without a group.
//   - QueueSubscribe is a consumer group, GroupID(subject, group), run by
//     kafka-go's ConsumerGroup (range or round-robin assignment, eager
//     rebalances). Its coordinator requests go over kafka-go Conns from a
//     Dialer with the same TLS and SASL settings, not the Transport. Each
//     generation reads its partitions with Client.Fetch loops from the
//     committed offsets, or where the partitions ended when QueueSubscribe
//     was called (committed before it returns); positions are committed
//     every second and when the generation ends. A member that loses its
//     coordinator connection joins again as a new member, and the group
//     waits for the old one to time out (10 s) before it reads again.
//
// Publish queues the message for a partition (round-robin) and returns. A
// partition has at most one Client.Produce in flight; what is published
// meanwhile goes in the next request (group commit, no linger). Refused
// produce requests (leader moved, not enough replicas) and those a lost
// connection interrupted are sent again, up to 10 times over about 5 s, so
// with acks=1 a message may be written twice. kafka-go's Transport routes
// requests by metadata it caches and refreshes at random intervals of up
// to a second; a moved leader is followed when the cache next refreshes.
//
// The backend is not a broker.Connectivity (the Transport reports nothing
// about its connections) and does not recreate topics a restarted empty
// cluster lost. Kafka cannot tell a publisher that nobody listens, so it is
// not a broker.Returner; it is a broker.SizeLimiter.
//
// URL options: partitions (request topics' partition count, default 6),
// replication (default -1, the broker's default), max_message_bytes (default
// 1 MiB), retention (default 1h), acks (1 or all, default 1), fetch_wait
// (longest idle poll, default 500ms), client_id, tls (true: TLS, as
// kafkas://), tls_ca (a PEM file of CAs), sasl (plain, scram-sha-256 or
// scram-sha-512 with user:password@ from the URL; plain when only the
// userinfo is given).
package kafka
