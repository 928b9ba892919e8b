package envelope

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Request opens a call; see busmesh.v1.Request. Header lists are flat:
// name, value, name, value. After Unmarshal, strings and slices alias the
// decoded input.
type Request struct {
	ID            uint64
	Source        string
	SourceService string
	Service       string
	Version       string
	Instance      string
	Protocol      Protocol
	Method        string
	Path          string
	Headers       []string
	Body          []byte
	More          bool
	ReplyTo       string
	Deadline      int64 // unix nanoseconds; 0 means none
	TraceParent   string
	TraceState    string
	Window        uint32
	Host          string
	// AttemptOf is the id of the first attempt of a call the ambassador
	// may retry, the same on every attempt; 0 on calls it never retries.
	AttemptOf uint64
}

// DeadlineTime returns the deadline as a time, and false when there is none.
func (r *Request) DeadlineTime() (time.Time, bool) {
	if r.Deadline == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, r.Deadline), true
}

func (r *Request) size() int {
	return sizeFixed64(1, r.ID) +
		sizeBytes(2, len(r.Source)) +
		sizeBytes(3, len(r.SourceService)) +
		sizeBytes(4, len(r.Service)) +
		sizeBytes(5, len(r.Version)) +
		sizeBytes(6, len(r.Instance)) +
		sizeVarint(7, uint64(r.Protocol)) +
		sizeBytes(8, len(r.Method)) +
		sizeBytes(9, len(r.Path)) +
		sizeHeaders(10, r.Headers) +
		sizeBytes(11, len(r.Body)) +
		sizeBool(12, r.More) +
		sizeBytes(13, len(r.ReplyTo)) +
		sizeVarint(14, uint64(r.Deadline)) +
		sizeBytes(15, len(r.TraceParent)) +
		sizeBytes(16, len(r.TraceState)) +
		sizeVarint(17, uint64(r.Window)) +
		sizeBytes(18, len(r.Host)) +
		sizeFixed64(19, r.AttemptOf)
}

// AppendEnvelope appends r, wrapped in an Envelope, to b.
func (r *Request) AppendEnvelope(b []byte) []byte {
	b = wrap(b, KindRequest, r.size())
	b = appendFixed64(b, 1, r.ID)
	b = appendString(b, 2, r.Source)
	b = appendString(b, 3, r.SourceService)
	b = appendString(b, 4, r.Service)
	b = appendString(b, 5, r.Version)
	b = appendString(b, 6, r.Instance)
	b = appendVarint(b, 7, uint64(r.Protocol))
	b = appendString(b, 8, r.Method)
	b = appendString(b, 9, r.Path)
	b = appendHeaders(b, 10, r.Headers)
	b = appendBytes(b, 11, r.Body)
	b = appendBool(b, 12, r.More)
	b = appendString(b, 13, r.ReplyTo)
	b = appendVarint(b, 14, uint64(r.Deadline))
	b = appendString(b, 15, r.TraceParent)
	b = appendString(b, 16, r.TraceState)
	b = appendVarint(b, 17, uint64(r.Window))
	b = appendString(b, 18, r.Host)
	b = appendFixed64(b, 19, r.AttemptOf)
	return b
}

// Unmarshal decodes a Request message (from Unwrap) into r, which it resets
// first, keeping the capacity of r.Headers.
func (r *Request) Unmarshal(b []byte) error {
	*r = Request{Headers: sized(r.Headers, countFields(b, 10))}
	d := decoder{b: b}
	for d.next() {
		switch d.num {
		case 1:
			r.ID = d.fixed64()
		case 2:
			r.Source = d.string()
		case 3:
			r.SourceService = d.string()
		case 4:
			r.Service = d.string()
		case 5:
			r.Version = d.string()
		case 6:
			r.Instance = d.string()
		case 7:
			r.Protocol = Protocol(d.varint())
		case 8:
			r.Method = d.string()
		case 9:
			r.Path = d.string()
		case 10:
			r.Headers = d.header(r.Headers)
		case 11:
			r.Body = d.bytes()
		case 12:
			r.More = d.varint() != 0
		case 13:
			r.ReplyTo = d.string()
		case 14:
			r.Deadline = int64(d.varint())
		case 15:
			r.TraceParent = d.string()
		case 16:
			r.TraceState = d.string()
		case 17:
			r.Window = uint32(d.varint())
		case 18:
			r.Host = d.string()
		case 19:
			r.AttemptOf = d.fixed64()
		default:
			d.skip()
		}
	}
	d.checkPairs(r.Headers)
	if len(r.Path) > MaxPathBytes && d.err == nil {
		d.err = malformed(fmt.Sprintf("a path of %d bytes, over %d", len(r.Path), MaxPathBytes))
	}
	return d.err
}

// Response answers a call; see busmesh.v1.Response.
type Response struct {
	ID       uint64
	Status   int32
	Headers  []string
	Body     []byte
	More     bool
	Instance string
	Error    string
	ReplyTo  string
	Window   uint32
	Trailers []string
	Detail   string
}

func (r *Response) size() int {
	return sizeFixed64(1, r.ID) +
		sizeVarint(2, uint64(int64(r.Status))) +
		sizeHeaders(3, r.Headers) +
		sizeBytes(4, len(r.Body)) +
		sizeBool(5, r.More) +
		sizeBytes(6, len(r.Instance)) +
		sizeBytes(7, len(r.Error)) +
		sizeBytes(8, len(r.ReplyTo)) +
		sizeVarint(9, uint64(r.Window)) +
		sizeHeaders(10, r.Trailers) +
		sizeBytes(11, len(r.Detail))
}

// AppendEnvelope appends r, wrapped in an Envelope, to b.
func (r *Response) AppendEnvelope(b []byte) []byte {
	b = wrap(b, KindResponse, r.size())
	b = appendFixed64(b, 1, r.ID)
	b = appendVarint(b, 2, uint64(int64(r.Status)))
	b = appendHeaders(b, 3, r.Headers)
	b = appendBytes(b, 4, r.Body)
	b = appendBool(b, 5, r.More)
	b = appendString(b, 6, r.Instance)
	b = appendString(b, 7, r.Error)
	b = appendString(b, 8, r.ReplyTo)
	b = appendVarint(b, 9, uint64(r.Window))
	b = appendHeaders(b, 10, r.Trailers)
	b = appendString(b, 11, r.Detail)
	return b
}

// Unmarshal decodes a Response message into r, which it resets first,
// keeping the capacity of its header lists.
func (r *Response) Unmarshal(b []byte) error {
	*r = Response{Headers: sized(r.Headers, countFields(b, 3)), Trailers: r.Trailers[:0]}
	d := decoder{b: b}
	for d.next() {
		switch d.num {
		case 1:
			r.ID = d.fixed64()
		case 2:
			r.Status = int32(d.varint())
		case 3:
			r.Headers = d.header(r.Headers)
		case 4:
			r.Body = d.bytes()
		case 5:
			r.More = d.varint() != 0
		case 6:
			r.Instance = d.string()
		case 7:
			r.Error = d.string()
		case 8:
			r.ReplyTo = d.string()
		case 9:
			r.Window = uint32(d.varint())
		case 10:
			r.Trailers = d.header(r.Trailers)
		case 11:
			r.Detail = d.string()
		default:
			d.skip()
		}
	}
	d.checkPairs(r.Headers)
	d.checkPairs(r.Trailers)
	return d.err
}

// Frame carries the rest of a call; see busmesh.v1.Frame.
type Frame struct {
	ID           uint64
	Seq          uint32
	Data         []byte
	End          bool
	Trailers     []string
	WindowUpdate uint32
	Cancel       bool
	Error        string
	ReplyTo      string
	Instance     string
	Source       string
	Ping         bool
	Pong         bool
}

func (f *Frame) size() int {
	return sizeFixed64(1, f.ID) +
		sizeVarint(2, uint64(f.Seq)) +
		sizeBytes(3, len(f.Data)) +
		sizeBool(4, f.End) +
		sizeHeaders(6, f.Trailers) +
		sizeVarint(7, uint64(f.WindowUpdate)) +
		sizeBool(8, f.Cancel) +
		sizeBytes(9, len(f.Error)) +
		sizeBytes(10, len(f.ReplyTo)) +
		sizeBytes(11, len(f.Instance)) +
		sizeBytes(12, len(f.Source)) +
		sizeBool(13, f.Ping) +
		sizeBool(14, f.Pong)
}

// AppendEnvelope appends f, wrapped in an Envelope, to b.
func (f *Frame) AppendEnvelope(b []byte) []byte {
	b = wrap(b, KindFrame, f.size())
	b = appendFixed64(b, 1, f.ID)
	b = appendVarint(b, 2, uint64(f.Seq))
	b = appendBytes(b, 3, f.Data)
	b = appendBool(b, 4, f.End)
	b = appendHeaders(b, 6, f.Trailers)
	b = appendVarint(b, 7, uint64(f.WindowUpdate))
	b = appendBool(b, 8, f.Cancel)
	b = appendString(b, 9, f.Error)
	b = appendString(b, 10, f.ReplyTo)
	b = appendString(b, 11, f.Instance)
	b = appendString(b, 12, f.Source)
	b = appendBool(b, 13, f.Ping)
	b = appendBool(b, 14, f.Pong)
	return b
}

// Unmarshal decodes a Frame message into f, which it resets first.
func (f *Frame) Unmarshal(b []byte) error {
	*f = Frame{Trailers: f.Trailers[:0]}
	d := decoder{b: b}
	for d.next() {
		switch d.num {
		case 1:
			f.ID = d.fixed64()
		case 2:
			f.Seq = uint32(d.varint())
		case 3:
			f.Data = d.bytes()
		case 4:
			f.End = d.varint() != 0
		case 6:
			f.Trailers = d.header(f.Trailers)
		case 7:
			f.WindowUpdate = uint32(d.varint())
		case 8:
			f.Cancel = d.varint() != 0
		case 9:
			f.Error = d.string()
		case 10:
			f.ReplyTo = d.string()
		case 11:
			f.Instance = d.string()
		case 12:
			f.Source = d.string()
		case 13:
			f.Ping = d.varint() != 0
		case 14:
			f.Pong = d.varint() != 0
		default:
			d.skip()
		}
	}
	d.checkPairs(f.Trailers)
	return d.err
}

// EncodedSize returns the length of r's envelope encoding.
func (r *Request) EncodedSize() int { return envelopeSize(r.size()) }

// EncodedSize returns the length of r's envelope encoding.
func (r *Response) EncodedSize() int { return envelopeSize(r.size()) }

// EncodedSize returns the length of f's envelope encoding.
func (f *Frame) EncodedSize() int { return envelopeSize(f.size()) }

func envelopeSize(msg int) int { return protowire.SizeTag(1) + protowire.SizeVarint(uint64(msg)) + msg }
