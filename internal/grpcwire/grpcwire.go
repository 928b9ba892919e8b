// Package grpcwire is gRPC as busmesh carries it without knowing an
// application's protos: a pass-through codec that hands messages over as
// bytes, the length-prefixed framing of messages in a call's byte stream,
// and the mapping of metadata and status to and from envelope headers and
// trailers. Both sidecars use it: the ambassador's gRPC listener and the
// adapter's gRPC client. See docs/architecture.md, "The envelope".
package grpcwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Message is one gRPC message, as bytes.
type Message struct {
	Data []byte
}

// Codec passes messages through as bytes: it marshals and unmarshals only
// *Message. It names itself "proto", the content subtype of nearly every
// gRPC call.
type Codec struct{}

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*Message)
	if !ok {
		return nil, fmt.Errorf("grpcwire: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m.Data)}, nil
}

// Unmarshal implements encoding.CodecV2. It copies: gRPC frees data when
// Unmarshal returns.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*Message)
	if !ok {
		return fmt.Errorf("grpcwire: cannot unmarshal into %T", v)
	}
	m.Data = data.Materialize()
	return nil
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return "proto" }

// prefixLen is a message's prefix: a compression flag and a big-endian
// 4-byte length, as on an HTTP/2 gRPC stream.
const prefixLen = 5

// AppendMessage appends msg with its length prefix to b.
func AppendMessage(b, msg []byte) []byte {
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

// ErrTooLarge is returned by ReadMessage for a message over its limit.
var ErrTooLarge = errors.New("grpc message over the size limit")

// ReadMessage reads one length-prefixed message from r, at most max bytes.
// It returns io.EOF at a clean end between messages.
func ReadMessage(r io.Reader, max int) ([]byte, error) {
	var p [prefixLen]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("grpc message prefix: %w", err)
		}
		return nil, err
	}
	if p[0] != 0 {
		return nil, fmt.Errorf("grpc message with compression flag %d on the bus", p[0])
	}
	n := binary.BigEndian.Uint32(p[1:])
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, max)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("grpc message body: %w", err)
	}
	return msg, nil
}

// SplitMessages returns the complete messages at the start of b and what
// remains of it.
func SplitMessages(b []byte) (msgs [][]byte, rest []byte) {
	for len(b) >= prefixLen {
		n := int(binary.BigEndian.Uint32(b[1:prefixLen]))
		if len(b) < prefixLen+n {
			break
		}
		msgs = append(msgs, b[prefixLen:prefixLen+n])
		b = b[prefixLen+n:]
	}
	return msgs, b
}

// reserved reports metadata keys gRPC itself sets on each hop, which are
// not forwarded: pseudo-headers, grpc-* (timeout, encoding, status), and
// the transport's content-type, te and user-agent.
func reserved(key string) bool {
	return strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-") ||
		key == "content-type" || key == "te" || key == "user-agent"
}

// AppendMetadata appends md to a flat header list, leaving out what gRPC
// sets itself on each hop.
func AppendMetadata(list []string, md metadata.MD) []string {
	for k, vs := range md {
		if reserved(k) {
			continue
		}
		for _, v := range vs {
			list = append(list, k, v)
		}
	}
	return list
}

// Metadata turns a flat header list into gRPC metadata, leaving out
// reserved keys and keys that are not valid metadata.
func Metadata(list []string) metadata.MD {
	md := make(metadata.MD, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k := strings.ToLower(list[i])
		if reserved(k) || !validKey(k) {
			continue
		}
		md[k] = append(md[k], list[i+1])
	}
	return md
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Trailer keys that carry a call's status on the bus.
const (
	trailerStatus  = "grpc-status"
	trailerMessage = "grpc-message"
	trailerDetails = "grpc-status-details-bin"
)

// AppendStatus appends a call's status (code, message and details) and its
// trailer metadata to a flat trailer list.
func AppendStatus(list []string, st *status.Status, trailer metadata.MD) []string {
	list = AppendMetadata(list, trailer)
	list = append(list, trailerStatus, strconv.Itoa(int(st.Code())))
	if msg := st.Message(); msg != "" {
		list = append(list, trailerMessage, msg)
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			list = append(list, trailerDetails, string(b))
		}
	}
	return list
}

// Status reads a call's status and trailer metadata from a flat trailer
// list. A list without a status is an error: the call ended without one.
func Status(list []string) (*status.Status, metadata.MD) {
	var code = -1
	var msg string
	var details []byte
	for i := 0; i+1 < len(list); i += 2 {
		switch list[i] {
		case trailerStatus:
			if c, err := strconv.Atoi(list[i+1]); err == nil {
				code = c
			}
		case trailerMessage:
			msg = list[i+1]
		case trailerDetails:
			details = []byte(list[i+1])
		}
	}
	md := Metadata(list)
	if code < 0 {
		return status.New(codes.Internal, "busmesh: the call ended without a gRPC status"), md
	}
	if len(details) > 0 {
		var p spb.Status
		if err := proto.Unmarshal(details, &p); err == nil && p.Code == int32(code) {
			return status.FromProto(&p), md
		}
	}
	return status.New(codes.Code(code), msg), md
}
