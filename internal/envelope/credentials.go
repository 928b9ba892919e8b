package envelope

// AppendCredentials appends the credential fields of an envelope (key id,
// peer key id, timestamp and, when not nil, the sender's certificate) to b,
// an encoded envelope, and returns the extended slice. The MAC, which
// covers them, goes last (identity.AppendMAC).
func AppendCredentials(b, keyID, peerKeyID []byte, ts int64, cert []byte) []byte {
	b = appendBytes(b, fieldKeyID, keyID)
	b = appendBytes(b, fieldPeerKeyID, peerKeyID)
	b = appendFixed64(b, fieldTimestamp, uint64(ts))
	return appendBytes(b, fieldCert, cert)
}

// ScanString returns string field num of an encoded message without
// decoding the rest, "" when it is absent or the message is malformed. It
// aliases msg and allocates nothing: the security layer uses it to learn
// an answer's reply_to before the answer is decoded.
func ScanString(msg []byte, num int) string {
	d := decoder{b: msg}
	for d.next() {
		if int(d.num) == num {
			return d.string()
		}
		d.skip()
	}
	return ""
}
