package adapter

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Duplicate suppression: a call the ambassador may retry carries
// AttemptOf, the id of its first attempt, on every attempt. The adapter
// keeps the answer it gave such a call for a short while; a retry of it
// that comes here after that answer (the answer was lost, or came too
// late for its attempt) is answered from the record instead of calling
// the application twice. The record is bounded in count, bytes and age.
const (
	maxResults      = 4096
	maxResultBytes  = 8 << 20
	maxResultSize   = 64 << 10 // a larger answer is not kept
	resultRetention = 10 * time.Second
)

// results is the adapter's record of answers to calls that may be
// retried, keyed by the caller and the call's first attempt.
type results struct {
	mu    sync.Mutex
	m     map[callKey]recorded
	queue []queuedResult // oldest first, from head
	head  int
	bytes int
}

type recorded struct {
	at  int64  // unix nanoseconds
	msg []byte // the encoded response envelope
	// caller is the service the call came from (verified, with security
	// on): the key's sidecar id is only a name in the request, and the
	// answer goes to no other service.
	caller string
}

type queuedResult struct {
	key callKey
	at  int64
}

// keep records the answer to req, unless it is one a retry should not
// get again: streamed, too large, the mesh's own error, any 5xx (a caller
// may retry on all of them: retry.on: [5xx]) or a gRPC UNAVAILABLE.
func (r *results) keep(req *envelope.Request, out *envelope.Response) {
	if req.AttemptOf == 0 || out.More || out.Error != "" || out.Status >= 500 || grpcUnavailable(out.Trailers) {
		return
	}
	if out.EncodedSize() > maxResultSize {
		return
	}
	msg := out.AppendEnvelope(nil)
	now := time.Now().UnixNano()
	k := callKey{req.Source, req.AttemptOf}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[callKey]recorded{}
	}
	if old, ok := r.m[k]; ok {
		r.bytes -= len(old.msg)
	}
	r.m[k] = recorded{at: now, msg: msg, caller: req.SourceService}
	r.queue = append(r.queue, queuedResult{k, now})
	r.bytes += len(msg)
	r.evict(now)
}

// evict drops the oldest records while there are too many, too large in
// all, or too old. Called with mu held.
func (r *results) evict(now int64) {
	for r.head < len(r.queue) {
		q := r.queue[r.head]
		if len(r.m) <= maxResults && r.bytes <= maxResultBytes && now-q.at <= int64(resultRetention) {
			break
		}
		if rec, ok := r.m[q.key]; ok && rec.at == q.at {
			r.bytes -= len(rec.msg)
			delete(r.m, q.key)
		}
		r.queue[r.head] = queuedResult{}
		r.head++
	}
	if r.head > len(r.queue)/2 && r.head > 64 {
		n := copy(r.queue, r.queue[r.head:])
		clear(r.queue[n:])
		r.queue, r.head = r.queue[:n], 0
	}
}

// find returns the recorded answer to the call of key made by the
// service caller, if it is fresh.
func (r *results) find(k callKey, caller string, now int64) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.m[k]
	if !ok || rec.caller != caller || now-rec.at > int64(resultRetention) {
		return nil, false
	}
	return rec.msg, true
}

// errDuplicate is the rejection of a retry answered from the record.
var errDuplicate = errors.New("a retry of a call served here: answered from the record of its result")

// duplicate is the admission step of duplicate suppression: a retry of a
// call this adapter answered is answered again from its record, and not
// served.
func (a *Adapter) duplicate(req *envelope.Request, _ *envelope.Envelope, _ secure.Sender) *rejection {
	if req.AttemptOf == 0 || req.AttemptOf == req.ID {
		return nil
	}
	msg, ok := a.results.find(callKey{req.Source, req.AttemptOf}, req.SourceService, time.Now().UnixNano())
	if !ok {
		return nil
	}
	env, err := envelope.Open(msg)
	if err != nil {
		return nil
	}
	var out envelope.Response
	if err := out.Unmarshal(env.Msg); err != nil {
		return nil
	}
	out.ID = req.ID
	ctx, cancel := a.callContext(req)
	defer cancel()
	if err := a.pub.Publish(ctx, req.ReplyTo, &out); err != nil {
		a.publishFailed("response", req.ReplyTo, err)
	}
	a.metrics.Resilience.Duplicates.WithLabelValues(a.cfg.Service).Inc()
	a.logger.Debug("retry answered from the record", telemetry.KeySubject, req.ReplyTo, "attempt_of", req.AttemptOf)
	return &rejection{reason: "duplicate", err: errDuplicate}
}

// grpcUnavailable reports whether flat trailers carry grpc-status 14.
func grpcUnavailable(trailers []string) bool {
	for i := 0; i+1 < len(trailers); i += 2 {
		if strings.EqualFold(trailers[i], "grpc-status") {
			return trailers[i+1] == strconv.Itoa(int(codes.Unavailable))
		}
	}
	return false
}
