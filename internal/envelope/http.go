package envelope

import (
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopByHop are the headers of one HTTP connection, not of the message
// (RFC 9110, section 7.6.1); a proxy does not forward them.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// MeshHeaderPrefix starts the headers busmesh reads and writes itself
// (X-Busmesh-Timeout, X-Busmesh-Error, X-Busmesh-Instance). They are not
// forwarded from callers to applications.
const MeshHeaderPrefix = "X-Busmesh-"

// AppendHTTPHeader appends h to a flat header list, leaving out hop-by-hop
// headers, those named by Connection, and busmesh's own.
func AppendHTTPHeader(list []string, h http.Header) []string {
	conn := h["Connection"]
	for name, values := range h {
		if hopByHop[name] || strings.HasPrefix(name, MeshHeaderPrefix) || (len(conn) > 0 && listedIn(conn, name)) {
			continue
		}
		for _, v := range values {
			list = append(list, name, v)
		}
	}
	return list
}

// listedIn reports whether name is among the comma-separated tokens of a
// Connection header.
func listedIn(conn []string, name string) bool {
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			if textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok)) == name {
				return true
			}
		}
	}
	return false
}

// SetHTTPHeader adds a flat header list to h. It leaves out entries that
// are not valid HTTP (a name with a space, a value with a line break), so an
// envelope from the bus cannot split a message, and hop-by-hop headers.
func SetHTTPHeader(h http.Header, list []string) {
	// One backing array for every single value, as net/textproto does: a
	// header costs a map entry, not a slice of its own.
	values := make([]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		name, value := list[i], list[i+1]
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			continue
		}
		name = textproto.CanonicalMIMEHeaderKey(name) // no allocation when already canonical
		if hopByHop[name] {
			continue
		}
		if prev, ok := h[name]; ok {
			h[name] = append(prev[:len(prev):len(prev)], value)
			continue
		}
		v := values[:1:1]
		values = values[1:]
		v[0] = value
		h[name] = v
	}
}

// AppendTrailerNames appends a Trailer entry naming the keys of trailer,
// the trailers a message declares before its body, if it declares any:
// Trailer is hop-by-hop for AppendHTTPHeader, so declared trailers cross
// the bus this way.
func AppendTrailerNames(list []string, trailer http.Header) []string {
	if len(trailer) == 0 {
		return list
	}
	names := make([]string, 0, len(trailer))
	for name := range trailer {
		names = append(names, name)
	}
	return append(list, "Trailer", strings.Join(names, ", "))
}

// TrailerNames returns the canonical names the Trailer entries of a flat
// header list declare (entries AppendTrailerNames wrote: AppendHTTPHeader
// writes none).
func TrailerNames(list []string) []string {
	var names []string
	for i := 0; i+1 < len(list); i += 2 {
		if list[i] != "Trailer" {
			continue
		}
		for tok := range strings.SplitSeq(list[i+1], ",") {
			if name := strings.TrimSpace(tok); httpguts.ValidHeaderFieldName(name) {
				names = append(names, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	return names
}

// Upgrade returns the value of the Upgrade entry of a flat header list, ""
// when there is none. An upgrade request (and its 101 answer) carries one
// past AppendHTTPHeader, which leaves Upgrade out as hop-by-hop.
func Upgrade(list []string) string {
	for i := 0; i+1 < len(list); i += 2 {
		if list[i] == "Upgrade" {
			return list[i+1]
		}
	}
	return ""
}
