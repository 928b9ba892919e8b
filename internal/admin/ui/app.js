// app.js renders the dashboard from what metrics.js reads, once a second.
import { sample, window as windowed, newErrors } from './metrics.js';

const POLL_MS = 1000;
const KEEP_S = 330; // enough history for the longest window
const REASONS = {
  'no-route': 'the shared port got a Host that names no service',
  'bad-timeout': 'X-Busmesh-Timeout is not a positive duration',
  'request-too-large': 'the body is over max_body_bytes',
  'headers-too-large': 'the request headers do not fit one broker message',
  'no-healthy-instances': 'discovery knows no healthy instance of the service',
  'no-responders': 'the broker found no adapter subscribed',
  'broker-unavailable': 'the request could not be published',
  'timeout': 'no answer before the deadline',
  'app-unreachable': 'the adapter could not reach its application',
  'response-too-large': "the application's answer is over max_body_bytes",
  'protocol-mismatch': 'an HTTP call to a gRPC application, or the other way round',
  'stream-failed': 'a streamed body broke off between the sidecars',
};

const $ = (id) => document.getElementById(id);

/** h builds an element: h('td', {class: 'num'}, 'text', child…). Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v; else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svgEl(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

const fmt = {
  rate(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); },
  pct(v) { return v === null ? '–' : (v * 100 >= 99.95 && v < 1 ? '99.9' : (v * 100).toFixed(v === 1 ? 0 : 1)) + '%'; },
  dur(s) {
    if (s === null || s === undefined) return '–';
    if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    return s.toFixed(2) + ' s';
  },
  protoDur(d) { // "0.000123s" from the REST API
    if (!d) return null;
    const n = parseFloat(d);
    return Number.isNaN(n) ? null : n;
  },
  ago(ts) {
    if (!ts) return '–';
    const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
    return s < 1 ? 'now' : s < 60 ? s.toFixed(0) + ' s ago' : (s / 60).toFixed(0) + ' min ago';
  },
  clock(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); },
  uptime(s) {
    const d = Math.floor(s / 86400), hr = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
  },
};

function successClass(v) { return v === null ? 'dim' : v >= 0.999 ? 'good' : v >= 0.95 ? 'meh' : 'poor'; }

function sparkline(values) {
  const w = 130, hgt = 26, pad = 2;
  const svg = svgEl('svg', { class: 'spark', viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none' });
  if (values.length < 2) return svg;
  const max = Math.max(...values, 1e-9);
  const step = (w - 2 * pad) / (values.length - 1);
  const pts = values.map((v, i) => [pad + i * step, hgt - pad - (v / max) * (hgt - 2 * pad)]);
  const line = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
  svg.append(svgEl('path', { class: 'area', d: `${line}L${pts[pts.length - 1][0].toFixed(1)},${hgt}L${pad},${hgt}Z` }));
  svg.append(svgEl('path', { class: 'line', d: line }));
  return svg;
}

const state = { snaps: [], events: [], windowS: 30, last: null, failures: 0 };

function renderHeader(info) {
  $('sidecar').textContent = info.sidecar;
  $('mesh').textContent = info.mesh ? 'mesh ' + info.mesh : '';
  $('version').textContent = 'busmesh ' + info.version;
  $('broker-url').textContent = info.broker;
  $('broker-url').title = info.broker;
  $('uptime').textContent = `${info.sidecar} up ${fmt.uptime(info.uptime_s)} · ${info.go}`;
  document.title = `busmesh · ${info.sidecar}`;
}

function renderBroker(info, w) {
  // This connection's own failed publishes: a split's calls failing over
  // another broker say nothing of this one.
  const unavailable = w.publishFailures.primary || 0;
  let cls = 'warn', text = info.broker_state;
  if (info.broker_state === 'disconnected') {
    cls = 'bad';
    text = 'disconnected, reconnecting';
  } else if (info.broker_state === 'connected') {
    cls = unavailable > 0 ? 'bad' : 'ok';
    text = unavailable > 0 ? `publishes failing (${unavailable} in the window)` : 'connected';
  }
  $('broker-dot').className = 'dot ' + cls;
  $('broker-state').textContent = text;
  $('broker').dataset.state = cls;
  $('broker').title = info.broker_since ? 'connected since ' + new Date(info.broker_since).toLocaleString() : '';
  renderBrokers(info.brokers || [], w.publishFailures);
}

// renderBrokers shows the ambassador's further broker connections
// (ambassador.brokers), which traffic splits and mirrors use.
function renderBrokers(brokers, failures) {
  const box = $('brokers');
  box.replaceChildren(...brokers.map((b) => {
    const failed = failures[b.name] || 0;
    const el = document.createElement('div');
    el.className = 'broker';
    el.dataset.name = b.name;
    el.dataset.state = b.state === 'connected' && failed === 0 ? 'ok' : 'bad';
    el.title = b.broker;
    const dot = document.createElement('span');
    dot.className = 'dot ' + el.dataset.state;
    const text = document.createElement('span');
    text.textContent = b.state !== 'connected' ? `${b.name} disconnected, reconnecting`
      : failed > 0 ? `${b.name}: publishes failing (${failed} in the window)` : `${b.name} connected`;
    el.append(dot, text);
    return el;
  }));
}

function renderKPIs(w, services) {
  const t = w.totals;
  $('kpi-rps').textContent = fmt.rate(t.rps);
  $('kpi-rps').dataset.rps = String(t.rps);
  $('kpi-req').textContent = `${t.requests} calls in ${w.seconds.toFixed(0)} s`;
  const s = $('kpi-success');
  s.textContent = fmt.pct(t.success);
  s.dataset.success = String(t.success);
  s.className = 'value ' + ({ good: 'ok', meh: 'warn', poor: 'bad' }[successClass(t.success)] || '');
  $('kpi-p99').textContent = fmt.dur(t.p99);
  $('kpi-p50').textContent = t.p50 === null ? '' : 'p50 ' + fmt.dur(t.p50);
  let healthy = 0, known = 0;
  for (const svc of services) for (const i of svc.instances || []) { known++; if (i.healthy) healthy++; }
  const inst = $('kpi-inst');
  inst.textContent = `${healthy} / ${known}`;
  inst.className = 'value ' + (known === 0 ? '' : healthy === known ? 'ok' : healthy === 0 ? 'bad' : 'warn');
  const e = $('kpi-err');
  e.textContent = String(t.errors);
  e.className = 'value ' + (t.errors > 0 ? 'bad' : 'ok');
}

function renderEdges(w, info) {
  const body = $('edges').tBodies[0];
  const rows = w.edges.map((e) => h('tr', { 'data-edge': e.key, 'data-service': e.service, 'data-rps': String(e.rps), 'data-success': String(e.success) },
    h('td', {}, h('span', { class: 'edge-name' }, e.caller, h('span', { class: 'arrow' }, '→'), e.service)),
    h('td', { class: 'num', 'data-testid': 'edge-rps' }, fmt.rate(e.rps)),
    h('td', {}, sparkline(e.spark)),
    h('td', { class: 'num ' + successClass(e.success) }, fmt.pct(e.success)),
    h('td', { class: 'num' }, fmt.dur(e.p50)),
    h('td', { class: 'num' }, fmt.dur(e.p99)),
    h('td', { class: 'num dim' }, String(e.requests))));
  body.replaceChildren(...rows);
  const empty = $('edges-empty');
  empty.hidden = rows.length > 0;
  $('edges').hidden = rows.length === 0;
  if (rows.length === 0) {
    empty.textContent = info.components && info.components.ambassador
      ? 'No calls yet: call a service through this sidecar\'s ambassador (busmesh call SERVICE /path).'
      : 'This sidecar runs no ambassador, so it makes no calls; open the dashboard of a sidecar that does.';
  }
}

function renderServed(w) {
  $('served-panel').hidden = w.served.length === 0;
  $('served').tBodies[0].replaceChildren(...w.served.map((s) => h('tr', { 'data-served': s.service, 'data-success': String(s.success) },
    h('td', { class: 'edge-name' }, s.service),
    h('td', { class: 'num' }, fmt.rate(s.rps)),
    h('td', { class: 'num ' + successClass(s.success) }, fmt.pct(s.success)),
    h('td', { class: 'num' }, fmt.dur(s.p50)),
    h('td', { class: 'num' }, fmt.dur(s.p99)),
    h('td', { class: 'num' }, String(s.inflight))))); 
}

function renderServices(services, info) {
  const box = $('services');
  box.replaceChildren(...services.map((svc) => {
    const insts = svc.instances || [];
    const healthy = insts.filter((i) => i.healthy).length;
    const badge = healthy === insts.length ? 'ok' : healthy === 0 ? 'bad' : 'warn';
    return h('div', { class: 'svc', 'data-service': svc.name },
      h('div', { class: 'svc-head' }, h('span', { class: 'name' }, svc.name),
        h('span', { class: 'badge ' + badge }, `${healthy}/${insts.length} healthy`)),
      h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['instance', 'version', 'zone', 'in flight', 'p50', 'seen'].map((c, i) => h('th', { class: i >= 3 ? 'num' : '' }, c)))),
        h('tbody', {}, insts.map((i) => {
          const inflight = Number(i.inflight || 0), conc = Number(i.concurrency || 0);
          return h('tr', { 'data-instance': i.name, 'data-healthy': String(!!i.healthy) },
            h('td', {}, h('span', { class: 'dot ' + (i.healthy ? 'ok' : 'bad'), style: 'display:inline-block;margin-right:8px' }),
              i.name, i.sidecar && i.sidecar !== i.name ? h('span', { class: 'dim' }, ' @' + i.sidecar) : null),
            h('td', {}, i.version || h('span', { class: 'dim' }, '–')),
            h('td', {}, i.zone || h('span', { class: 'dim' }, '–')),
            h('td', { class: 'num' }, h('span', { class: 'load', title: `${inflight} of ${conc}` },
              h('span', { style: `width:${conc ? Math.min(100, (100 * inflight) / conc) : 0}%` })), `${inflight}/${conc}`),
            h('td', { class: 'num' }, fmt.dur(fmt.protoDur(i.p50))),
            h('td', { class: 'num dim' }, fmt.ago(i.lastSeen)));
        }))));
  }));
  const empty = $('services-empty');
  empty.hidden = services.length > 0;
  if (services.length === 0) {
    empty.textContent = info.components && info.components.ambassador
      ? 'Discovery knows no service yet: start an adapter on this broker and mesh.'
      : 'This sidecar runs no ambassador, so it keeps no view of the mesh; open the dashboard of a sidecar with one.';
  }
}

function renderErrors(w) {
  const max = Math.max(1, ...w.errors.map((e) => e.count));
  $('errors').replaceChildren(h('div', { class: 'reasons' }, w.errors.map((e) =>
    h('div', { class: 'reason', 'data-reason': e.reason, 'data-service': e.service, 'data-count': String(e.count) },
      h('span', { class: 'what' }, e.reason, h('small', {}, e.service)),
      h('span', { class: 'count' }, String(e.count)),
      h('span', { class: 'bar' }, h('span', { style: `width:${(100 * e.count) / max}%` })),
      h('span', { class: 'desc' }, REASONS[e.reason] || '')))));
  $('errors-empty').hidden = w.errors.length > 0;
  $('events').replaceChildren(...state.events.slice(0, 50).map((e) =>
    h('li', { 'data-reason': e.reason },
      h('time', {}, fmt.clock(e.t)),
      h('span', {}, h('b', {}, e.reason), ' ', h('span', { class: 'dim' }, e.service)),
      h('span', { class: 'n' }, '+' + e.count))));
  $('events-empty').hidden = state.events.length > 0;
}

function render() {
  const last = state.last;
  if (!last) return;
  const w = windowed(state.snaps, state.windowS);
  renderHeader(last.info);
  renderBroker(last.info, w);
  renderKPIs(w, last.services);
  renderEdges(w, last.info);
  renderServed(w);
  renderServices(last.services, last.info);
  renderErrors(w);
  document.body.dataset.samples = String(state.snaps.length);
}

async function tick() {
  try {
    const s = await sample();
    const prev = state.snaps[state.snaps.length - 1];
    state.events.unshift(...newErrors(prev, s.snap).reverse());
    state.events.length = Math.min(state.events.length, 200);
    state.snaps.push(s.snap);
    while (state.snaps.length > 2 && state.snaps[0].t < s.t - KEEP_S) state.snaps.shift();
    state.last = s;
    state.failures = 0;
    $('banner').hidden = true;
    $('live').classList.remove('stale');
    $('updated').textContent = 'live · ' + fmt.clock(s.t);
    render();
  } catch (err) {
    state.failures++;
    $('live').classList.add('stale');
    $('updated').textContent = 'stale';
    if (state.failures >= 2) {
      $('banner').hidden = false;
      $('banner').textContent = `The sidecar's admin port does not answer (${err.message}); retrying every second. Is the sidecar still running?`;
    }
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

$('window').addEventListener('change', (e) => { state.windowS = Number(e.target.value); render(); });
$('theme').addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'light' ? 'dark' : 'light';
  document.documentElement.dataset.theme = next;
  localStorage.setItem('busmesh-theme', next);
});
tick();
