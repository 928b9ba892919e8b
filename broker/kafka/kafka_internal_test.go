package kafka

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(*config) string
		wantErr []string
	}{
		{
			name: "defaults",
			in:   "kafka://h1,h2:9093",
			check: func(c *config) string {
				if strings.Join(c.addrs, " ") != "h1:9092 h2:9093" || c.partitions != DefaultPartitions ||
					c.maxMessage != 1<<20 || c.tls != nil || c.sasl != nil || c.acks != 1 || c.replication != -1 || c.metrics {
					return "unexpected defaults"
				}
				if c.partitionsFor("busmesh.default.inbox.sidecar-1") != 1 || c.partitionsFor("busmesh.default.svc.orders") != DefaultPartitions {
					return "partitionsFor is wrong"
				}
				return ""
			},
		},
		{
			name: "options",
			in:   "kafka://h?partitions=3&replication=2&max_message_bytes=4096&acks=all&fetch_wait=100ms&retention=2h&client_id=x&tls=true&client_metrics=true",
			check: func(c *config) string {
				if c.partitions != 3 || c.replication != 2 || c.maxMessage != 4096 || c.acks != -1 ||
					c.fetchWait != 100*time.Millisecond || c.retention != 2*time.Hour || c.clientID != "x" || c.tls == nil || !c.metrics {
					return "options not applied"
				}
				return ""
			},
		},
		{
			name: "kafkas and sasl",
			in:   "kafkas://user:pw@h:9093?sasl=SCRAM-SHA-512",
			check: func(c *config) string {
				if c.tls == nil || c.sasl == nil || c.sasl.Name() != "SCRAM-SHA-512" {
					return "TLS or SASL missing"
				}
				return ""
			},
		},
		{
			name: "userinfo means plain",
			in:   "kafka://user:pw@h",
			check: func(c *config) string {
				if c.sasl == nil || c.sasl.Name() != "PLAIN" {
					return "PLAIN expected"
				}
				return ""
			},
		},
		{name: "no host", in: "kafka://", wantErr: []string{"no broker address"}},
		{name: "bad number", in: "kafka://h?partitions=0", wantErr: []string{"partitions", `"0"`, "from 1"}},
		{name: "unknown", in: "kafka://h?partition=3", wantErr: []string{`"partition" is unknown`}},
		{name: "sasl without user", in: "kafka://h?sasl=plain", wantErr: []string{"needs user:password"}},
		{name: "bad sasl", in: "kafka://u:secretpw@h?sasl=gssapi", wantErr: []string{`"gssapi"`}},
		{name: "bad ca", in: "kafka://h?tls_ca=/nonexistent.pem", wantErr: []string{"tls_ca", "PEM"}},
		{name: "path", in: "kafka://h/vhost", wantErr: []string{"no path"}},
		{name: "every problem", in: "kafka://h?acks=2&fetch_wait=1h&client_metrics=yes", wantErr: []string{"acks", "fetch_wait", "client_metrics"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			c, err := parseConfig(u)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("parseConfig(%s) succeeded, want an error", tt.in)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("parseConfig(%s) = %q, want it to mention %s", tt.in, err, w)
					}
				}
				if strings.Contains(err.Error(), "secretpw") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%s) = %v", tt.in, err)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("parseConfig(%s): %s: %+v", tt.in, msg, c)
			}
		})
	}
}
