// Package identity is the mesh's service identity: who a sidecar is, how it
// proves it to peers across a broker it does not trust, and how it checks
// what peers send. See docs/architecture.md (steps 6 and 8, where
// signing and verification plug in).
//
// It owns:
//   - the mesh CA and service certificates (ca.go, cert.go): an Ed25519 CA,
//     short-lived service certificates whose key is the service's Ed25519
//     signing key and which carry an X25519 key-agreement key in the
//     extension OIDKeyAgreement; mesh and service are named by the URI SAN
//     busmesh://<mesh>/<service>;
//   - loading an identity from files and reloading it when they change
//     (identity.go, source.go), keeping the previous one for a grace period
//     so a rotation fails no call in flight;
//   - checking peer certificates against the mesh CA, cached by fingerprint
//     (peer.go, cache.go);
//   - per-envelope authentication (pairkey.go, mac.go): a key per sender and
//     receiver, agreed once by X25519 and HKDF, then an HMAC-SHA256 over the
//     encoded envelope, appended as its last protobuf field (MACField);
//   - freshness and replay (replay.go) and signed broadcasts for messages
//     without one receiver, such as discovery announcements (broadcast.go).
//
// It leaves to others: which envelope fields carry the key ids and the
// timestamp (internal/envelope), when to sign and verify (the ambassador's
// publisher and the adapter's admission chain), how certificates travel
// between sidecars (discovery), and authorization (policy).
//
// Errors a peer can cause wrap one of the sentinels in errors.go; Reason
// turns them into a short label for metrics.
//
// Per envelope, with the busmesh.v1.Envelope credential fields: the
// sender (the one publisher) takes key := src.Current().SendKey(peer) for
// the receiver's verified certificate, encodes key_id = key.Sender(),
// peer_key_id = key.Receiver(), timestamp_unix_nano and, until the peer
// has it, certificate, then b = AppendMAC(b, b, key). The receiver (the
// admission chain) does msg, mac, ok := SplitMAC(b); decodes b;
// local := src.Local(peer_key_id); sender := local.Verifier().Resolve(
// key_id, certificate); VerifyMAC(msg, mac, local.RecvKey(sender)); then
// guard.Check(key_id, id, timestamp). Once keys are cached none of this
// allocates; an Ed25519 signature and verification per envelope would
// cost about 200 times more at 200 bytes and 10 times at 16 KiB
// (BenchmarkMAC, BenchmarkEd25519).
package identity
