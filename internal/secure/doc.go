// Package secure puts the mesh's identities (package identity) on the
// envelopes a sidecar sends and takes: a Guard seals every envelope the
// sidecar's publisher sends (bus.Sealer) and opens every envelope its
// adapter and ambassador take off the bus, checking the sender's
// certificate, the MAC, freshness and replay.
//
// Keys. An envelope is MACed with the pair key agreed between the sender's
// certificate and the receiver's. The receiver is found from the subject:
//   - a request or cancel for service S (busmesh.<mesh>.svc.S...,
//     busmesh.<mesh>.cancel.S) goes to S's certificate, which every
//     instance of S shares (`busmesh ca issue S`); the ambassador asks for
//     it once on busmesh.<mesh>.certs.S, which the adapters of S answer
//     (queue group), checks it against the mesh CA and that it names S, and
//     asks again every Refresh so that a rotation is followed;
//   - anything else (an answer, a frame, a ping) goes to an inbox whose
//     owner this sidecar has heard from: opening a verified envelope binds
//     the subject where its sender takes the rest of the call (a request's
//     reply_to, an answer's or frame's reply_to) to the sender's
//     certificate and to the local identity it addressed, so the answer is
//     sealed with the keys the caller used.
//
// Requests and cancels carry the caller's certificate, so that whichever
// instance of the service takes them can verify the caller; answers,
// frames, pings and pongs never do, since their receiver has the sender's
// certificate already (it fetched it, or the request carried it).
package secure
