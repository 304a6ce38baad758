// Helpers of the ops-* tests (operations endpoints, metrics, shutdown, logs of `ioscale serve`):
// a node whose exit code and stderr lines can be awaited, Prometheus text parsing, bounded polling
// of a state, and a raw Engine.IO polling session on one kept-alive TCP connection.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { request } from "./raw.mjs";

export { request };

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Environment variables `ioscale serve` reads: a test sets what it needs by flags only. */
const SERVE_ENV = [
  "PORT", "HOST", "SERVER_ID", "REDIS_URL", "ALLOWED_ORIGINS", "PING_INTERVAL", "PING_TIMEOUT",
  "MAX_HTTP_BUFFER_SIZE", "CONNECT_TIMEOUT", "SOCKETIO_PATH", "TRANSPORTS", "COOKIE", "MAX_BUFFERED_BYTES",
  "REDIS_KEY_PREFIX", "REDIS_REQUESTS_TIMEOUT", "REDIS_SPECIFIC_RESPONSE_CHANNEL", "OPS_PORT",
  "SHUTDOWN_TIMEOUT", "STATS_INTERVAL", "LOG_FORMAT",
];

/**
 * Spawns `ioscale serve ...args --port 0` through the harness (SIGKILLed at the end of the test if
 * still running) and resolves once it listens. Besides spawnBinary's fields it has
 *   port, url, signal(name), lines() (complete stderr lines so far), waitForLine(pred, opts).
 */
export async function serve(h, args, { env } = {}) {
  const run = h.spawn("ioscale", ["serve", ...args, "--port", "0"], { env, unsetEnv: SERVE_ENV });
  const port = await run.listening();
  const node = {
    ...run,
    port,
    url: `http://127.0.0.1:${port}`,
    signal(name = "SIGTERM") {
      run.proc.kill(name);
    },
    running: () => run.proc.exitCode === null && run.proc.signalCode === null,
    lines: () => run.stderr().split("\n").slice(0, -1),
    /**
     * Resolves with the first complete stderr line (index >= `from`) for which `pred(line)` is
     * true; rejects after `timeoutMs` or when the process exits first.
     */
    waitForLine(pred, { from = 0, timeoutMs = 10000, label = String(pred) } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const lines = node.lines();
          for (let i = from; i < lines.length; i++) {
            if (pred(lines[i])) {
              done();
              resolve({ line: lines[i], index: i });
              return true;
            }
          }
          return false;
        };
        // spawnBinary's own listener was attached first, so stderr() already holds the chunk.
        const onData = () => check();
        const onExit = () => {
          if (!check()) {
            done();
            reject(new Error(`process exited before logging ${label}; stderr:\n${run.stderr().slice(-3000)}`));
          }
        };
        const done = () => {
          clearTimeout(timer);
          run.proc.stderr.off("data", onData);
          run.proc.off("exit", onExit);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no stderr line ${label} within ${timeoutMs} ms; stderr:\n${run.stderr().slice(-3000)}`));
        }, timeoutMs);
        run.proc.stderr.on("data", onData);
        run.proc.on("exit", onExit);
        if (!node.running()) onExit();
        else check();
      });
    },
  };
  return node;
}

/** `GET url` on a fresh connection: { status, headers, body, json } (json undefined when not JSON). */
export async function get(url) {
  const res = await request(url);
  let json;
  try {
    json = JSON.parse(res.body);
  } catch {}
  return { ...res, json };
}

/** A TCP connection attempt: resolves "connected" or the error code (e.g. ECONNREFUSED). */
export function tryConnect(port, host = "127.0.0.1") {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error) => resolve(error.code));
  });
}

/** Calls `fn` every `intervalMs` until it returns a truthy value (returned); rejects after `timeoutMs`. */
export async function waitUntil(fn, { timeoutMs = 10000, intervalMs = 50, label = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`${label} not reached within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    await delay(intervalMs);
  }
}

/** `name{k="v",...}` in the given label order, as the exposition writes one-label samples. */
export function sampleKey(name, labels = {}) {
  const entries = Object.entries(labels);
  if (!entries.length) return name;
  return `${name}{${entries.map(([k, v]) => `${k}="${v}"`).join(",")}}`;
}

/** Parses Prometheus / OpenMetrics text into { text, samples: Map(key → number), families: Map(name → type), value(name, labels) }. */
export function parseMetrics(text) {
  const samples = new Map();
  const families = new Map();
  for (const line of text.split("\n")) {
    if (!line) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      families.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable metrics line: ${JSON.stringify(line)}`);
    samples.set(m[1] + (m[2] ?? ""), Number(m[3]));
  }
  return {
    text,
    samples,
    families,
    /** The sample's value; fails the test if the sample is missing. */
    value(name, labels) {
      const key = sampleKey(name, labels);
      assert.ok(samples.has(key), `metric ${key} missing from /metrics:\n${text}`);
      return samples.get(key);
    },
  };
}

/** GET `<base>/metrics`, checked for status 200, parsed. */
export async function scrape(base) {
  const res = await request(`${base}/metrics`);
  assert.equal(res.status, 200, `/metrics status: ${res.body}`);
  return parseMetrics(res.body);
}

/** Differences of every sample between two scrapes (only non-zero ones). */
export function deltas(before, after) {
  const out = {};
  for (const [key, value] of after.samples) {
    const d = value - (before.samples.get(key) ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

/** An http.Agent that keeps its connections; destroyed at the end of the test. */
export function keepAliveAgent(h, maxSockets = 2) {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  h.defer(() => agent.destroy());
  return agent;
}

/**
 * A raw Engine.IO v4 polling session whose requests all go over one kept-alive TCP connection
 * (so it can still poll after the server closed its listener). It polls only when told to.
 * Returns { sid, open, get(), post(body), packets(body) }.
 */
export async function rawPolling(h, base, path = "/socket.io/") {
  const agent = keepAliveAgent(h, 1);
  const send = (method, query, body) =>
    new Promise((resolve, reject) => {
      const req = http.request(`${base}${path}?EIO=4&transport=polling${query}`, { method, agent }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8"), reusedSocket: req.reusedSocket }));
      });
      req.on("error", reject);
      req.end(body);
    });
  const open = await send("GET", "");
  assert.equal(open.status, 200, `polling handshake: ${open.body}`);
  assert.equal(open.body[0], "0", `open packet: ${open.body}`);
  const sid = JSON.parse(open.body.slice(1)).sid;
  return {
    sid,
    open: JSON.parse(open.body.slice(1)),
    get: () => send("GET", `&sid=${encodeURIComponent(sid)}`),
    post: (body) => send("POST", `&sid=${encodeURIComponent(sid)}`, body),
    packets: (body) => body.split("\x1e"),
  };
}

/** Exit of a spawned node, bounded: { code, signal, ms } (ms since `since`). */
export async function exitWithin(node, ms, since = Date.now()) {
  let timer;
  const result = await Promise.race([
    node.exited,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`process still running ${ms} ms after the signal; stderr:\n${node.stderr().slice(-3000)}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
  return { ...result, ms: Date.now() - since };
}

/**
 * `serve` with `--ops-port P` on a port that was free a moment ago (bound on port 0 in Node, then
 * released); retries with another port if somebody took it meanwhile. Adds opsPort and opsUrl.
 */
export async function serveWithOpsPort(h, args, opts) {
  for (let attempt = 0; ; attempt++) {
    const opsPort = await freeTcpPort();
    try {
      const node = await serve(h, [...args, "--ops-port", String(opsPort)], opts);
      await node.waitForLine((l) => l.includes(`operations endpoints on `) && l.includes(`:${opsPort}`), { label: "operations endpoints line" });
      return Object.assign(node, { opsPort, opsUrl: `http://127.0.0.1:${opsPort}` });
    } catch (error) {
      if (attempt >= 4 || !/cannot listen/.test(error.message)) throw error;
    }
  }
}

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A TCP proxy to 127.0.0.1:`targetPort` that can hold back what clients send (hold() / release()),
 * so a test decides when a request reaches the server. Each client connection gets its upstream
 * connection at once, so a held request travels over a connection the server already accepted.
 * Closed at the end of the test.
 */
export async function holdingProxy(h, targetPort) {
  let held = false;
  const pairs = new Set();
  const server = net.createServer((client) => {
    const pair = { client, up: net.connect({ port: targetPort, host: "127.0.0.1" }), queue: [], ended: false, requests: 0, responses: 0, lastMethod: null };
    pairs.add(pair);
    const destroy = () => {
      client.destroy();
      pair.up.destroy();
      pairs.delete(pair);
    };
    client.on("error", destroy);
    pair.up.on("error", destroy);
    client.on("close", destroy);
    pair.up.on("close", destroy);
    pair.up.pipe(client);
    // HTTP/1.1 requests and responses on one connection alternate: counting the chunks that start
    // one tells whether the server holds a request of this connection.
    pair.up.on("data", (chunk) => {
      if (chunk.subarray(0, 9).toString("latin1") === "HTTP/1.1 ") pair.responses++;
    });
    const forward = (chunk) => {
      const method = /^(GET|POST) /.exec(chunk.subarray(0, 5).toString("latin1"));
      if (method) {
        pair.requests++;
        pair.lastMethod = method[1];
      }
      pair.up.write(chunk);
    };
    pair.forward = forward;
    client.on("data", (chunk) => (held ? pair.queue.push(chunk) : forward(chunk)));
    client.on("end", () => {
      if (held) pair.ended = true;
      else pair.up.end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const proxy = {
    port: server.address().port,
    url: `http://127.0.0.1:${server.address().port}`,
    hold() {
      held = true;
    },
    /** Forwards what was held, in order, and stops holding. Returns how many chunks were held. */
    release() {
      held = false;
      let chunks = 0;
      for (const pair of pairs) {
        for (const chunk of pair.queue.splice(0)) {
          chunks++;
          pair.forward(chunk);
        }
        if (pair.ended) pair.up.end();
      }
      return chunks;
    },
    /** Whether the server holds an unanswered GET from one of the proxied connections (a pending long poll). */
    pendingGet: () => [...pairs].some((p) => p.requests > p.responses && p.lastMethod === "GET"),
    heldChunks: () => [...pairs].reduce((n, p) => n + p.queue.length, 0),
    close() {
      for (const { client, up } of pairs) {
        client.destroy();
        up.destroy();
      }
      pairs.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  h.defer(() => proxy.close());
  return proxy;
}
