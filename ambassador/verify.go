package ambassador

import (
	"fmt"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
)

// The reply_to fields of an answer and a frame: where the serving adapter
// takes the rest of the call.
const (
	responseReplyTo = 8
	frameReplyTo    = 10
)

// open decodes an envelope from the inbox and, with security on,
// authenticates it (secure.Guard.Open); what fails is counted and logged,
// and ok is false.
func (in *Inbox) open(data []byte) (e envelope.Envelope, from secure.Sender, ok bool) {
	if in.guard == nil {
		e, err := envelope.Open(data)
		if err != nil {
			in.reject("malformed", len(data), err)
			return e, from, false
		}
		return e, from, true
	}
	e, from, err := in.guard.Open(data)
	if err != nil {
		in.reject(secure.Reason(err), len(data), err)
		return e, from, false
	}
	return e, from, true
}

// bind seals what goes to the adapter inbox a verified answer or frame
// names (its reply_to) for its sender: the call's frames, cancels and
// pongs.
func (in *Inbox) bind(e *envelope.Envelope, from secure.Sender) {
	if in.guard == nil {
		return
	}
	field := frameReplyTo
	if e.Kind == envelope.KindResponse {
		field = responseReplyTo
	}
	if r := envelope.ScanString(e.Msg, field); r != "" {
		in.guard.Bind(r, from)
	}
}

// sentBy reports whether, with security on, an answer or frame for a call
// to service comes from that service: another service of the mesh, whose
// envelope verifies as its own, must not answer someone else's call. If
// so, it binds the adapter inbox e names.
func (in *Inbox) sentBy(service string, e *envelope.Envelope, from secure.Sender, size int) bool {
	if in.guard == nil {
		return true
	}
	if from.Peer.Service() == service {
		in.bind(e, from)
		if e.Cred.Cert != nil {
			in.guard.Learn(service, from.Peer) // the adapter rotated
		}
		return true
	}
	in.reject("wrong-sender", size, fmt.Errorf("an answer for a call to %s sent by %s", service, from.Peer.Service()))
	return false
}
