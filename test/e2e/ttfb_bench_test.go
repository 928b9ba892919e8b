package e2e

import (
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// BenchmarkTimeToFirstByte measures how soon a caller reads the first
// byte of a response the application streams (a byte, a pause of 20ms,
// the rest), directly and through the mesh over each broker:
//
//	go test -run '^$' -bench TimeToFirstByte -benchtime 200x ./test/e2e/
//
// ttfb-p50 and ttfb-p90 are the figures; ns/op includes the pause.
func BenchmarkTimeToFirstByte(b *testing.B) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("x"))
		_ = http.NewResponseController(w).Flush()
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte("the rest"))
	})
	var m *streamMesh
	b.Run("direct", func(b *testing.B) {
		for _, bc := range brokers(b) {
			requireBroker(b, bc)
			m = startStreamMesh(b, bc, plainBinary, app)
			break
		}
		ttfb(b, "http://"+m.app+"/")
	})
	for _, bc := range brokers(b) {
		b.Run(bc.name, func(b *testing.B) {
			requireBroker(b, bc)
			m := startStreamMesh(b, bc, plainBinary, app)
			ttfb(b, "http://"+m.port+"/")
		})
	}
}

func ttfb(b *testing.B, url string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	var total []time.Duration
	get := func() time.Duration {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, one); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		total = append(total, time.Since(start))
		return took
	}
	for range 5 { // warm the connections
		get()
	}
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		lat = append(lat, get())
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "ttfb-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "ttfb-p90-µs")
	slices.Sort(total)
	b.ReportMetric(float64(total[len(total)/2].Microseconds()), "whole-p50-µs")
}
