// The load generator: drives bloomr, the Node socket.io peer and the python-socketio peer
// the same way. Node socket.io-client subscribers over websocket (spread over --procs
// child processes), one HTTP publisher posting batches at a fixed rate, each message
// carrying its seq and its send time. See bench/README.md.
//
//   node bench/loadgen.mjs --target bloomr|node|pysio --url http://127.0.0.1:PORT \
//        [--stream ID] [--token SECRET] [--publish-url URL] --mode fanout|idle|replay|store [options]
//
// fanout   --subs K --procs N --rate MSG_PER_S --batch B --warmup S --duration S
//          [--drain S] [--inflight N] [--pad BYTES]: delivered messages/s in the steady window,
//          publish-to-receive latency, lost / duplicated / out-of-order per subscriber.
// idle     --subs K --procs N --hold S: open K connections, hold them, close them.
// replay   --count N --repeat R (bloomr): publish N messages, then time a client
//          connecting with replayLimit=N until `replay_end`.
// store    --batch B --concurrency C --warmup S --duration S (bloomr): POST batches back
//          to back from C clients, messages/s acknowledged (= stored).
//
// stdout carries JSON lines only: {"event": "ready" | "steady_start" | "steady_end" |
// "connected" | "result", ...}; run.py samples the server's CPU at steady_start and
// steady_end. Progress and errors go to stderr.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

const now = () => performance.timeOrigin + performance.now(); // wall clock, ms, sub-ms
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const emit = (event, fields = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const CLK_TCK = 100; // USER_HZ on Linux
// CPU seconds (user + system) of a process, from /proc/PID/stat: read from outside, so a
// child whose event loop is flooded is measured all the same.
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return null;
  }
}
const log = (...args) => process.stderr.write(`[loadgen] ${args.join(' ')}\n`);

// -- arguments ------------------------------------------------------------------------

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const key = argv[i].slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) args[key] = true;
    else args[key] = argv[++i];
  }
  return args;
}

const DEFAULTS = {
  mode: 'fanout', subs: 100, procs: 1, rate: 1000, batch: 10, warmup: 3, duration: 10,
  drain: 10, inflight: 8, hold: 5, count: 10000, repeat: 5, concurrency: 4,
  'connect-concurrency': 50, 'connect-timeout': 60, pad: 0,
};

// -- target adapter -------------------------------------------------------------------

function adapter(opts) {
  const base = opts.url.replace(/\/$/, '');
  if (opts.target === 'bloomr') {
    // --publish-url: publish through another node of a cluster than the subscribers'
    const publishBase = (opts['publish-url'] || base).replace(/\/$/, '');
    const url = new URL(`${publishBase}/api/streams/${opts.stream}/messages`);
    return {
      publishUrl: url,
      headers: { authorization: `Bearer ${opts.token}` },
      query: (extra = {}) => ({ stream: opts.stream, token: opts.token, ...extra }),
      readyEvent: 'replay_end', // bloomr's subscription is live once replay_end arrives
    };
  }
  const room = opts.stream || 'bench';
  return {
    publishUrl: new URL(`${base}/publish?room=${encodeURIComponent(room)}`),
    headers: {},
    query: (extra = {}) => ({ stream: room, ...extra }),
    readyEvent: 'connect',
  };
}

// -- latency histogram: log buckets, ~1 % resolution, µs ------------------------------

const NB = 2000;
const SCALE = 100;
const bucketOf = (us) => Math.min(NB - 1, Math.floor(Math.log1p(us > 0 ? us : 0) * SCALE));
const bucketValue = (i) => Math.expm1((i + 0.5) / SCALE);

function tenths(means) {
  const n = Math.max(1, Math.floor(means.length / 10));
  const mean = (xs) => (xs.length ? xs.reduce((a, x) => a + x, 0) / xs.length : null);
  return { first: mean(means.slice(0, n)), last: mean(means.slice(-n)) };
}

function quantile(hist, total, q) {
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < NB; i++) {
    seen += hist[i];
    if (seen >= rank) return bucketValue(i) / 1000;
  }
  return bucketValue(NB - 1) / 1000;
}

// -- HTTP publisher -------------------------------------------------------------------

function makePoster(ad, maxSockets) {
  const agent = new http.Agent({ keepAlive: true, maxSockets, noDelay: true });
  const { publishUrl } = ad;
  return (body) =>
    new Promise((resolve) => {
      const req = http.request(
        {
          agent,
          host: publishUrl.hostname,
          port: publishUrl.port,
          path: publishUrl.pathname + publishUrl.search,
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...ad.headers },
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
        },
      );
      req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
      req.on('error', (err) => resolve({ status: 0, body: String(err) }));
      req.end(body);
    });
}

let PAD = '';

function batchBody(first, count) {
  const t = now();
  const parts = new Array(count);
  for (let i = 0; i < count; i++) parts[i] = `{"data":{"seq":${first + i},"t":${t}${PAD}}}`;
  return `[${parts.join(',')}]`;
}

// -- child: holds subscribers ----------------------------------------------------------

function runChild() {
  const subs = [];
  let seenSize = 0;
  let win = null; // {start, end, sendStart, sendEnd}
  let inWindow = 0;
  const hist = new Float64Array(NB);
  let histTotal = 0;
  let latMax = 0;

  function onMessage(sub, m) {
    const t = now();
    const seq = m && m.seq;
    if (typeof seq !== 'number' || seq < 0 || seq >= seenSize) {
      sub.bad++;
      return;
    }
    if (sub.seen[seq]) {
      sub.dups++;
      return;
    }
    sub.seen[seq] = 1;
    sub.unique++;
    sub.hash = (Math.imul(sub.hash, 31) + seq) | 0; // order fingerprint, compared across subscribers
    if (seq < sub.last) sub.ooo++;
    sub.last = seq;
    if (win !== null) {
      if (t >= win.start && t < win.end) inWindow++;
      if (m.t >= win.sendStart && m.t < win.sendEnd) {
        const lat = t - m.t;
        hist[bucketOf(lat * 1000)]++;
        histTotal++;
        if (lat > latMax) latMax = lat;
        sub.latSum += lat;
        sub.latN++;
      }
    }
  }

  function connectOne(url, query, readyEvent, timeoutMs) {
    return new Promise((resolve) => {
      const sub = { seen: null, latSum: 0, latN: 0, hash: 0, unique: 0, dups: 0, ooo: 0, bad: 0, last: -1, ready: false, disconnects: 0, warnings: {}, errors: {} };
      sub.seen = new Uint8Array(seenSize);
      const socket = io(url, {
        transports: ['websocket'], forceNew: true, reconnection: false, query, timeout: timeoutMs,
      });
      sub.socket = socket;
      const timer = setTimeout(() => finish(false), timeoutMs);
      let settled = false;
      function finish(ok) {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        sub.ready = ok;
        resolve(sub);
      }
      socket.on(readyEvent, () => finish(true));
      socket.on('message', (m) => onMessage(sub, m));
      socket.on('warning', (w) => { sub.warnings[w?.code] = (sub.warnings[w?.code] || 0) + 1; });
      socket.on('error', (e) => { sub.errors[e?.code] = (sub.errors[e?.code] || 0) + 1; finish(false); });
      socket.on('connect_error', () => finish(false));
      socket.on('disconnect', () => { sub.disconnects++; finish(false); });
    });
  }

  async function connectAll(msg) {
    seenSize = msg.seenSize;
    const started = now();
    let next = 0;
    const worker = async () => {
      while (next < msg.count) {
        next++;
        subs.push(await connectOne(msg.url, msg.query, msg.readyEvent, msg.timeoutMs));
      }
    };
    await Promise.all(Array.from({ length: Math.min(msg.concurrency, msg.count) }, worker));
    const ok = subs.filter((s) => s.ready === true).length;
    process.send({ ev: 'connected', ok, failed: subs.length - ok, seconds: (now() - started) / 1000 });
  }

  process.on('message', async (msg) => {
    if (msg.cmd === 'connect') {
      await connectAll(msg);
    } else if (msg.cmd === 'window') {
      win = msg;
    } else if (msg.cmd === 'progress') {
      let unique = 0;
      for (const s of subs) unique += s.unique;
      process.send({ ev: 'progress', unique });
    } else if (msg.cmd === 'finish') {
      const perSub = subs.map((s) => {
        let lost = 0;
        if (s.ready) {
          for (const [lo, hi] of msg.acked) for (let q = lo; q < hi; q++) if (!s.seen[q]) lost++;
        }
        const connected = s.ready && s.socket.connected;
        return { ready: s.ready, connected, hash: s.hash, unique: s.unique, lost, dups: s.dups, ooo: s.ooo, bad: s.bad, disconnects: s.disconnects, warnings: s.warnings, errors: s.errors, latMean: s.latN ? s.latSum / s.latN : null };
      });
      for (const s of subs) s.socket.disconnect();
      // Exit only once the (large) message has been handed to the IPC channel.
      process.send({ ev: 'stats', perSub, inWindow, hist: Array.from(hist), histTotal, latMax }, () => process.exit(0));
    }
  });
  process.send({ ev: 'started' });
}

// -- parent: spawns children, publishes, aggregates ------------------------------------

class Child {
  constructor() {
    this.proc = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.waiters = [];
    this.proc.on('message', (msg) => {
      const i = this.waiters.findIndex((w) => w.ev === msg.ev);
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(msg);
    });
    this.proc.on('exit', (code, signal) => {
      this.exited = true;
      if (code || signal) log(`child ${this.proc.pid} exited with ${code ?? signal}`);
      for (const w of this.waiters.splice(0)) w.resolve(null);
    });
  }

  next(ev) {
    return new Promise((resolve) => this.waiters.push({ ev, resolve }));
  }

  async request(cmd, ev) {
    const answer = this.next(ev);
    this.proc.send(cmd);
    return answer;
  }
}

async function spawnChildren(opts, ad, count, seenSize) {
  const procs = Math.max(1, Math.min(opts.procs, count));
  const children = [];
  for (let i = 0; i < procs; i++) {
    const child = new Child();
    await child.next('started');
    children.push(child);
  }
  const started = now();
  const answers = await Promise.all(
    children.map((child, i) => {
      const n = Math.floor(count / procs) + (i < count % procs ? 1 : 0);
      return child.request({
        cmd: 'connect', url: opts.url, query: ad.query(), readyEvent: ad.readyEvent, count: n,
        seenSize, concurrency: opts['connect-concurrency'], timeoutMs: opts['connect-timeout'] * 1000,
      }, 'connected');
    }),
  );
  const ok = answers.reduce((a, x) => a + x.ok, 0);
  const failed = answers.reduce((a, x) => a + x.failed, 0);
  return { children, ok, failed, seconds: (now() - started) / 1000 };
}

async function progress(children) {
  const answers = await Promise.all(children.map((c) => c.request({ cmd: 'progress' }, 'progress')));
  return answers.reduce((a, x) => a + x.unique, 0);
}

function merged(stats) {
  const hist = new Float64Array(NB);
  let total = 0;
  let max = 0;
  for (const s of stats) {
    for (let i = 0; i < NB; i++) hist[i] += s.hist[i];
    total += s.histTotal;
    max = Math.max(max, s.latMax);
  }
  return { hist, total, max };
}

function sumCodes(perSub, key) {
  const out = {};
  for (const s of perSub) for (const [k, v] of Object.entries(s[key])) out[k] = (out[k] || 0) + v;
  return out;
}

async function fanout(opts, ad) {
  const { subs, rate, batch } = opts;
  const interval = (batch / rate) * 1000;
  const batches = Math.ceil(((opts.warmup + opts.duration) * rate) / batch);
  const seenSize = batches * batch;
  const conn = await spawnChildren(opts, ad, subs, seenSize);
  const { children } = conn;
  log(`${opts.target}: ${conn.ok}/${subs} subscribers ready in ${conn.seconds.toFixed(2)} s (${conn.failed} failed)`);
  emit('ready', { subscribers: conn.ok, failed: conn.failed, connect_seconds: conn.seconds });

  const t0 = now() + 200;
  const win = { start: t0 + opts.warmup * 1000, end: t0 + (opts.warmup + opts.duration) * 1000 };
  win.sendStart = win.start;
  win.sendEnd = win.end;
  for (const c of children) c.proc.send({ cmd: 'window', ...win });
  const cpu = {};
  setTimeout(() => {
    cpu.start = children.map((c) => cpuSeconds(c.proc.pid));
    emit('steady_start', { t: now() });
  }, win.start - now());
  setTimeout(() => {
    cpu.end = children.map((c) => cpuSeconds(c.proc.pid));
    emit('steady_end', { t: now() });
  }, win.end - now());

  const post = makePoster(ad, opts.inflight);
  const acked = [];
  const failures = {};
  let inflight = 0;
  let slot = null;
  let late = 0;
  let sent = 0;
  const requests = [];
  const postHist = new Float64Array(NB);
  let postTotal = 0;
  for (let k = 0; k < batches; k++) {
    const due = t0 + k * interval;
    if (due > now()) await sleep(due - now());
    while (inflight >= opts.inflight) await new Promise((resolve) => { slot = resolve; });
    if (now() - due > interval) late++;
    const first = k * batch;
    inflight++;
    sent += batch;
    const postedAt = now();
    requests.push(post(batchBody(first, batch)).then((r) => {
      inflight--;
      postHist[bucketOf((now() - postedAt) * 1000)]++;
      postTotal++;
      if (slot) { const s = slot; slot = null; s(); }
      if (r.status >= 200 && r.status < 300) acked.push([first, first + batch]);
      else failures[`${r.status} ${r.body.slice(0, 120)}`] = (failures[`${r.status} ${r.body.slice(0, 120)}`] || 0) + 1;
    }));
  }
  const sendDone = now();
  await Promise.all(requests);
  const publishSeconds = (sendDone - t0) / 1000;
  if (now() < win.end) await sleep(win.end - now() + 50);

  // Drain: until every subscriber has every acknowledged message, or no progress.
  const ackedCount = acked.reduce((a, [lo, hi]) => a + hi - lo, 0);
  const expected = ackedCount * conn.ok;
  const drainStart = now();
  let last = -1;
  let lastChange = now();
  let unique = 0;
  while (now() - drainStart < opts.drain * 1000) {
    unique = await progress(children);
    if (unique >= expected) break;
    if (unique !== last) { last = unique; lastChange = now(); }
    if (now() - lastChange > 3000) break;
    await sleep(200);
  }
  const drainSeconds = (now() - drainStart) / 1000;
  acked.sort((a, b) => a[0] - b[0]);
  const stats = await Promise.all(children.map((c) => c.request({ cmd: 'finish', acked }, 'stats')));
  const perSub = stats.flatMap((s) => s.perSub);
  const lat = merged(stats);
  const windowSeconds = opts.duration;
  const delivered = stats.reduce((a, s) => a + s.inWindow, 0);
  const readySubs = perSub.filter((s) => s.ready);
  const lostPer = readySubs.map((s) => s.lost);
  // Subscribers that got everything must have got it in the same order.
  const hashes = {};
  for (const s of readySubs) if (s.lost === 0) hashes[s.hash] = (hashes[s.hash] || 0) + 1;
  const majority = Math.max(0, ...Object.values(hashes));
  const orderMismatch = Object.values(hashes).reduce((a, x) => a + x, 0) - majority;
  emit('result', {
    mode: 'fanout', target: opts.target, subscribers: subs, ready: conn.ok, procs: children.length,
    rate, batch, warmup: opts.warmup, duration: opts.duration,
    published: sent, acked: ackedCount, publish_failures: failures, late_batches: late,
    publish_ms: { p50: quantile(postHist, postTotal, 0.5), p99: quantile(postHist, postTotal, 0.99) },
    publish_rate_achieved: sent / publishSeconds,
    delivered_in_window: delivered, delivered_per_s: delivered / windowSeconds,
    offered_per_s: rate * conn.ok,
    latency_ms: {
      p50: quantile(lat.hist, lat.total, 0.5), p90: quantile(lat.hist, lat.total, 0.9),
      p99: quantile(lat.hist, lat.total, 0.99), max: lat.total ? lat.max : null, samples: lat.total,
    },
    // the histogram itself (bucket index -> count, non-empty buckets), so that rounds
    // can be pooled: see latency_quantile in run.py
    // mean latency of the first and the last tenth of the subscribers, in connection
    // order: the difference is the fan-out's cost per subscriber (server and loadgen)
    latency_by_order_ms: tenths(perSub.map((s) => s.latMean).filter((x) => x !== null)),
    latency_hist: Object.fromEntries([...lat.hist.entries()].filter(([, n]) => n > 0)),
    lost_total: lostPer.reduce((a, x) => a + x, 0),
    lost_max_per_sub: lostPer.length ? Math.max(...lostPer) : 0,
    subs_with_loss: lostPer.filter((x) => x > 0).length,
    dup_total: perSub.reduce((a, s) => a + s.dups, 0),
    subs_with_dups: perSub.filter((s) => s.dups > 0).length,
    out_of_order_total: perSub.reduce((a, s) => a + s.ooo, 0),
    order_mismatch_subs: orderMismatch,
    bad_payloads: perSub.reduce((a, s) => a + s.bad, 0),
    disconnected_subs: readySubs.filter((s) => !s.connected).length,
    warnings: sumCodes(perSub, 'warnings'), errors: sumCodes(perSub, 'errors'),
    drain_seconds: drainSeconds, complete: unique >= expected,
    loadgen_cpu_util: children.map((c, i) => (cpu.end[i] - cpu.start[i]) / windowSeconds),
  });
}

async function idle(opts, ad) {
  const conn = await spawnChildren(opts, ad, opts.subs, 1);
  emit('connected', { connected: conn.ok, failed: conn.failed, seconds: conn.seconds });
  log(`${opts.target}: ${conn.ok}/${opts.subs} idle connections in ${conn.seconds.toFixed(1)} s`);
  await sleep(opts.hold * 1000);
  const stats = await Promise.all(conn.children.map((c) => c.request({ cmd: 'finish', acked: [] }, 'stats')));
  const perSub = stats.flatMap((s) => s.perSub);
  emit('result', {
    mode: 'idle', target: opts.target, subscribers: opts.subs, connected: conn.ok, failed: conn.failed,
    connect_seconds: conn.seconds, still_connected: perSub.filter((s) => s.connected).length,
    errors: sumCodes(perSub, 'errors'), warnings: sumCodes(perSub, 'warnings'),
  });
}

async function replay(opts, ad) {
  const post = makePoster(ad, 1);
  const count = opts.count;
  for (let first = 0; first < count; first += 1000) {
    const r = await post(batchBody(first, Math.min(1000, count - first)));
    if (r.status !== 201) throw new Error(`publish failed: ${r.status} ${r.body}`);
  }
  emit('ready', { published: count });
  const runs = [];
  for (let r = 0; r < opts.repeat; r++) {
    runs.push(await new Promise((resolve) => {
      const t0 = now();
      const run = { count: 0, inOrder: true, last: -1, connectMs: null, firstMs: null, replayEndMs: null, replayEnd: null, warnings: [] };
      const socket = io(opts.url, {
        transports: ['websocket'], forceNew: true, reconnection: false,
        query: ad.query({ replayLimit: String(count) }),
      });
      const done = (why) => { clearTimeout(timer); socket.disconnect(); run.end = why; resolve(run); };
      const timer = setTimeout(() => done('timeout'), 30_000);
      socket.on('connect', () => { run.connectMs = now() - t0; });
      socket.on('warning', (w) => run.warnings.push(w.code));
      socket.on('error', (e) => { run.error = e; done('error'); });
      socket.on('message', (m) => {
        if (run.firstMs === null) run.firstMs = now() - t0;
        run.count++;
        if (m.seq !== run.last + 1) run.inOrder = false;
        run.last = m.seq;
      });
      socket.on('replay_end', (e) => { run.replayEndMs = now() - t0; run.replayEnd = e; done('replay_end'); });
    }));
    await sleep(200);
  }
  emit('result', { mode: 'replay', target: opts.target, count, runs });
}

async function store(opts, ad) {
  const post = makePoster(ad, opts.concurrency);
  const t0 = now();
  const win = { start: t0 + opts.warmup * 1000, end: t0 + (opts.warmup + opts.duration) * 1000 };
  setTimeout(() => emit('steady_start', { t: now() }), win.start - now());
  setTimeout(() => emit('steady_end', { t: now() }), win.end - now());
  let seq = 0;
  let stored = 0;
  let failed = 0;
  const hist = new Float64Array(NB);
  let histTotal = 0;
  const client = async () => {
    while (now() < win.end) {
      const body = batchBody(seq, opts.batch);
      seq += opts.batch;
      const sentAt = now();
      const r = await post(body);
      const at = now();
      if (r.status !== 201) { failed++; continue; }
      if (at >= win.start && at < win.end) {
        stored += opts.batch;
        hist[bucketOf((at - sentAt) * 1000)]++;
        histTotal++;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, client));
  emit('result', {
    mode: 'store', target: opts.target, batch: opts.batch, concurrency: opts.concurrency,
    stored_in_window: stored, stored_per_s: stored / opts.duration, failed_requests: failed,
    total_published: seq,
    request_ms: { p50: quantile(hist, histTotal, 0.5), p99: quantile(hist, histTotal, 0.99) },
  });
}

async function main() {
  const raw = parseArgs(process.argv.slice(2));
  if (raw.child) return runChild();
  const opts = { ...DEFAULTS, ...raw };
  for (const k of Object.keys(DEFAULTS)) if (typeof DEFAULTS[k] === 'number') opts[k] = Number(opts[k]);
  if (!opts.url || !['bloomr', 'node', 'pysio'].includes(opts.target)) {
    process.stderr.write('usage: loadgen.mjs --target bloomr|node|pysio --url URL [--stream ID --token T] --mode fanout|idle|replay|store ...\n');
    process.exit(2);
  }
  if (opts.pad > 0) PAD = `,"pad":"${'x'.repeat(opts.pad)}"`;
  const ad = adapter(opts);
  const modes = { fanout, idle, replay, store };
  await modes[opts.mode](opts, ad);
  process.exit(0);
}

main().catch((err) => {
  log(err.stack || String(err));
  process.exit(1);
});
