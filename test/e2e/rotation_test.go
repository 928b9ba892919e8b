package e2e

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// reissue replaces c's files with a new certificate and key for service,
// as an operator (or cert-manager) rotating them would.
func (p *pki) reissue(c cert, service string) {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(service, 24*time.Hour, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	if _, _, err := identity.WriteServiceFiles(filepath.Dir(c.cert), service, certPEM, keyPEM); err != nil {
		p.t.Fatal(err)
	}
}

// TestRotationUnderLoad: 8 callers call for 20s while the callee's and the
// caller's certificates are replaced on disk: no call fails.
func TestRotationUnderLoad(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			testRotationUnderLoad(t, b)
		})
	}
}

func testRotationUnderLoad(t *testing.T, b brokerCase) {
	m := startSecureMesh(t, b, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := callers(8, func() {
		resp, err := client.Get("http://" + m.port + "/load")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = &statusError{resp.StatusCode, resp.Header.Get("X-Busmesh-Error")}
			}
		}
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
			return
		}
		ok.Add(1)
	})
	steps := []func(){
		func() { m.pki.reissue(m.calleeCert, m.service) },
		func() { m.pki.reissue(m.callerCert, "web") },
		func() { m.pki.reissue(m.calleeCert, m.service) },
	}
	for _, step := range steps {
		time.Sleep(5 * time.Second)
		step()
	}
	time.Sleep(5 * time.Second)
	stop()
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed during rotation; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d calls in 20s", ok.Load())
	}
	rotations := func(s *sidecar) int { return countLines(s.log.String(), `"msg":"identity rotated"`) }
	if got := rotations(m.callee); got != 2 {
		t.Errorf("callee rotated %d times, want 2", got)
	}
	if got := rotations(m.caller); got != 1 {
		t.Errorf("caller rotated %d times, want 1", got)
	}
	// Announcements signed with the new certificates are believed.
	if got := countLines(m.caller.log.String(), `"msg":"announcement rejected"`); got != 0 {
		t.Errorf("the caller rejected %d announcements during rotation", got)
	}
	t.Logf("%s: %d calls, %d failed, while rotating", b.name, ok.Load(), failed.Load())
}

type statusError struct {
	code   int
	reason string
}

func (e *statusError) Error() string { return http.StatusText(e.code) + " " + e.reason }

func countLines(log, substr string) int { return strings.Count(log, substr) }
