// metrics.js is the one place the dashboard reads the sidecar's numbers:
// it scrapes /info, /v1/services and the Prometheus counters on /metrics,
// and turns successive scrapes into windowed figures (rate = Δcount / Δt,
// success rate from Δ per status class, p99 from Δ per histogram bucket). When the
// admin API serves windowed stats itself, only this module changes: keep
// the shapes sample() and window() return.

const AMB = 'busmesh_ambassador_';
const AD = 'busmesh_adapter_';

/**
 * succeeded tells whether a request series' class label ("2xx"…"5xx") is
 * a success: anything but a server error, as telemetry.Success, `busmesh
 * top` and the PromQL in docs/monitoring.md decide. HTTP statuses and gRPC
 * codes share the class vocabulary (DeadlineExceeded and Unavailable are
 * 5xx, NotFound and Canceled 4xx), so neither code label is read here.
 */
export function succeeded(cls) {
  return cls !== '5xx';
}

/** parseProm parses the Prometheus text format into {name, labels, value} samples. */
export function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue;
    let name, labels = {}, rest;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    if (brace >= 0 && brace < space) {
      name = line.slice(0, brace);
      const end = line.lastIndexOf('}');
      const body = line.slice(brace + 1, end);
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let m;
      while ((m = re.exec(body)) !== null) labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      rest = line.slice(end + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = Number(rest.split(' ')[0]);
    if (!Number.isNaN(value)) out.push({ name, labels, value });
  }
  return out;
}

function series() {
  return { total: 0, ok: 0, buckets: new Map(), inflight: 0 };
}

function get(map, key) {
  let s = map.get(key);
  if (!s) { s = series(); map.set(key, s); }
  return s;
}

/**
 * snapshot reduces one scrape to counters per edge (caller → service, on
 * the ambassador side), per served service (adapter side) and per mesh
 * error (service and reason). Labels it does not know (instance, broker…)
 * are summed over.
 */
export function snapshot(t, info, samples) {
  const caller = (info && (info.caller || info.sidecar)) || 'this sidecar';
  const snap = { t, edges: new Map(), served: new Map(), errors: new Map(), brokerErrors: new Map() };
  for (const { name, labels, value } of samples) {
    if (!name.startsWith('busmesh_')) continue;
    const svc = labels.service || '?';
    const edge = (labels.caller || caller) + ' → ' + svc;
    switch (name) {
      case AMB + 'requests_total': {
        const s = get(snap.edges, edge);
        s.caller = labels.caller || caller; s.service = svc;
        s.total += value; if (succeeded(labels.class)) s.ok += value;
        break;
      }
      case AMB + 'request_duration_seconds_bucket': {
        const s = get(snap.edges, edge);
        s.caller = labels.caller || caller; s.service = svc;
        s.buckets.set(labels.le, (s.buckets.get(labels.le) || 0) + value);
        break;
      }
      case AMB + 'errors_total':
        snap.errors.set(svc + '\u0000' + labels.reason, (snap.errors.get(svc + '\u0000' + labels.reason) || 0) + value);
        break;
      case 'busmesh_broker_errors_total':
        if (labels.operation === 'publish') {
          const conn = labels.connection || 'primary';
          snap.brokerErrors.set(conn, (snap.brokerErrors.get(conn) || 0) + value);
        }
        break;
      case AD + 'requests_total': {
        const s = get(snap.served, svc); s.service = svc;
        s.total += value; if (succeeded(labels.class)) s.ok += value;
        break;
      }
      case AD + 'request_duration_seconds_bucket': {
        const s = get(snap.served, svc); s.service = svc;
        s.buckets.set(labels.le, (s.buckets.get(labels.le) || 0) + value);
        break;
      }
      case AD + 'inflight_requests':
        get(snap.served, svc).inflight += value;
        break;
    }
  }
  return snap;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function getText(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.text();
}

/** sample scrapes the admin port once: {t (seconds), info, services, snap}. */
export async function sample() {
  const [info, services, text] = await Promise.all([getJSON('/info'), getJSON('/v1/services'), getText('/metrics')]);
  const t = Date.now() / 1000;
  return { t, info, services: services.services || [], snap: snapshot(t, info, parseProm(text)) };
}

function delta(now, then) {
  const d = now - (then || 0);
  return d < 0 ? now : d; // a counter that went back restarted
}

/** quantile estimates q from cumulative bucket deltas, as Prometheus's histogram_quantile does. */
export function quantile(q, bucketsNow, bucketsThen) {
  const bounds = [...bucketsNow.keys()].map((le) => ({ le, bound: le === '+Inf' ? Infinity : Number(le) }))
    .sort((a, b) => a.bound - b.bound);
  const counts = bounds.map(({ le, bound }) => ({ bound, count: delta(bucketsNow.get(le), bucketsThen && bucketsThen.get(le)) }));
  if (counts.length === 0) return null;
  const total = counts[counts.length - 1].count;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevBound = 0, prevCount = 0;
  for (const { bound, count } of counts) {
    if (count >= rank) {
      if (bound === Infinity || count === prevCount) return prevBound;
      return prevBound + (bound - prevBound) * (rank - prevCount) / (count - prevCount);
    }
    prevBound = bound; prevCount = count;
  }
  return prevBound;
}

function figures(now, then, dt) {
  const total = delta(now.total, then && then.total);
  const ok = delta(now.ok, then && then.ok);
  return {
    rps: dt > 0 ? total / dt : 0,
    requests: total,
    success: total > 0 ? ok / total : null,
    p99: quantile(0.99, now.buckets, then && then.buckets),
    p50: quantile(0.5, now.buckets, then && then.buckets),
    inflight: now.inflight,
  };
}

/**
 * window compares the newest snapshot with the oldest one within seconds
 * of it. It returns per edge and per served service {rps, requests,
 * success (0..1 or null), p50, p99 (seconds or null)}, a requests/s series
 * per edge for sparklines, the mesh errors by service and reason, the
 * failed publishes per broker connection, and the whole window's totals.
 */
export function window(snaps, seconds) {
  const last = snaps[snaps.length - 1];
  let first = last;
  for (const s of snaps) { if (s.t >= last.t - seconds - 0.001) { first = s; break; } }
  const dt = last.t - first.t;
  const edges = [], served = [], errors = [];
  for (const [key, now] of last.edges) {
    const f = figures(now, first === last ? null : first.edges.get(key), dt);
    if (first === last) { f.rps = 0; f.requests = 0; f.success = null; f.p50 = f.p99 = null; }
    const spark = [];
    for (let i = snaps.indexOf(first) + 1; i < snaps.length; i++) {
      const a = snaps[i - 1].edges.get(key), b = snaps[i].edges.get(key);
      const d = snaps[i].t - snaps[i - 1].t;
      spark.push(b && d > 0 ? delta(b.total, a && a.total) / d : 0);
    }
    edges.push({ key, caller: now.caller, service: now.service, spark, ...f });
  }
  for (const [key, now] of last.served) {
    const f = figures(now, first === last ? null : first.served.get(key), dt);
    if (first === last) { f.rps = 0; f.requests = 0; f.success = null; f.p50 = f.p99 = null; }
    served.push({ service: key, ...f });
  }
  for (const [key, now] of last.errors) {
    const n = first === last ? 0 : delta(now, first.errors.get(key));
    const [service, reason] = key.split('\u0000');
    if (n > 0) errors.push({ service, reason, count: n });
  }
  edges.sort((a, b) => a.key.localeCompare(b.key));
  served.sort((a, b) => a.service.localeCompare(b.service));
  errors.sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));
  const all = { total: 0, ok: 0, buckets: new Map(), inflight: 0 };
  const allThen = { total: 0, ok: 0, buckets: new Map(), inflight: 0 };
  for (const [key, now] of last.edges) {
    const then = first === last ? null : first.edges.get(key);
    all.total += now.total; all.ok += now.ok;
    for (const [le, c] of now.buckets) all.buckets.set(le, (all.buckets.get(le) || 0) + c);
    if (then) {
      allThen.total += then.total; allThen.ok += then.ok;
      for (const [le, c] of then.buckets) allThen.buckets.set(le, (allThen.buckets.get(le) || 0) + c);
    }
  }
  const totals = first === last ? { rps: 0, requests: 0, success: null, p99: null, p50: null } : figures(all, allThen, dt);
  totals.errors = errors.reduce((n, e) => n + e.count, 0);
  const publishFailures = {};
  for (const [conn, now] of last.brokerErrors) {
    const n = first === last ? 0 : delta(now, first.brokerErrors.get(conn));
    if (n > 0) publishFailures[conn] = n;
  }
  return { seconds: dt, edges, served, errors, publishFailures, totals };
}

/** newErrors lists the mesh errors that appeared between two snapshots. */
export function newErrors(prev, next) {
  const out = [];
  if (!prev) return out;
  for (const [key, now] of next.errors) {
    const n = delta(now, prev.errors.get(key));
    if (n > 0) {
      const [service, reason] = key.split('\u0000');
      out.push({ t: next.t, service, reason, count: n });
    }
  }
  return out;
}
