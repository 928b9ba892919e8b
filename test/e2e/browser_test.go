package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserPage is served by browserApp at / through the mesh: from the
// service's own ambassador port, it opens an EventSource, a WebSocket and
// two fetches back to the same origin, so every one crosses the mesh the
// way a browser makes it, and records what each got in window.results.
const browserPage = `<!doctype html>
<title>busmesh browser test</title>
<pre id="log"></pre>
<script>
window.results = {};
const log = (k, v) => { results[k] = v; document.getElementById('log').textContent += k + ': ' + v + '\n'; };

const es = new EventSource('/sse?n=5&every=50ms');
let events = 0;
es.onmessage = () => { if (++events === 5) { log('sse', events); es.close(); } };
es.onerror = () => { if (events < 5) log('sseError', events); };

const ws = new WebSocket('ws://' + location.host + '/ws');
ws.binaryType = 'arraybuffer';
const sent = ['hello', new Uint8Array(70000).fill(7)];
let echoes = 0, closing = 0;
ws.onopen = () => sent.forEach(m => ws.send(m));
ws.onmessage = e => {
	const n = typeof e.data === 'string' ? e.data.length : e.data.byteLength;
	if (n !== (typeof sent[echoes] === 'string' ? sent[echoes].length : sent[echoes].byteLength)) log('wsError', 'echo ' + echoes + ' of ' + n + ' bytes');
	if (++echoes === sent.length) { closing = performance.now(); ws.close(1000, 'done'); }
};
ws.onclose = e => { log('wsCloseMs', Math.round(performance.now() - closing)); log('wsClose', e.code + ' ' + e.wasClean + ' ' + echoes); };

fetch('/sized?n=300000').then(r => r.arrayBuffer()).then(b => log('download', b.byteLength), e => log('downloadError', String(e)));
fetch('/sink', {method: 'POST', body: new Uint8Array(300000)}).then(r => r.text()).then(t => log('upload', t.split(' ')[0]), e => log('uploadError', String(e)));
</script>`

// browserApp serves browserPage at / and the streaming and WebSocket
// applications' paths.
func browserApp() http.Handler {
	mux := http.NewServeMux()
	streams := streamApp()
	mux.Handle("/sse", streams)
	mux.Handle("/sized", streams)
	mux.Handle("/sink", streams)
	mux.Handle("/ws", wsApp(make(chan error, 10), make(chan error, 10)))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, browserPage)
	})
	return mux
}

// TestBrowser: chromium loads a page through the mesh, on every broker,
// and the page's Server-Sent Events, WebSocket (a text and a 70,000-byte
// binary message echoed, then a clean close, completed as soon as the
// application ends its side), download and upload all cross it as they
// would cross no mesh.
func TestBrowser(t *testing.T) {
	chrome := requireChromium(t)
	ctx := newBrowser(t, chrome, 3*time.Minute)
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			m := startStreamMesh(t, b, binary, browserApp())
			if err := chromedp.Do(ctx, chromedp.Navigate("http://"+m.port+"/")); err != nil {
				t.Fatalf("open the page through the mesh: %v", err)
			}
			waitJS(t, ctx, 30*time.Second, "every result of the page",
				`['sse', 'wsClose', 'download', 'upload'].every(k => k in results) || Object.keys(results).some(k => k.endsWith('Error'))`)
			results, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`results`))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"sse": 5.0, "wsClose": "1000 true 2", "download": 300000.0, "upload": "300000"}
			for k, v := range want {
				if results[k] != v {
					t.Errorf("%s = %v, want %v (all results: %v)", k, results[k], v, results)
				}
			}
			// Chromium's close completes when the server's end arrives,
			// or after 2 s without it (5-17 ms here, direct or through
			// the mesh; 2,008 ms when the ambassador did not half-close).
			if ms, ok := results["wsCloseMs"].(float64); !ok || ms >= 1000 {
				t.Errorf("the WebSocket's close took %v ms, want the application's end to reach the browser at once", results["wsCloseMs"])
			}
		})
	}
}
