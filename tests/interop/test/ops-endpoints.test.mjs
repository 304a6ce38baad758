// `ioscale serve` operations endpoints: /health, /ready, /metrics and /stats with their status codes
// and content, on the main port, and only on --ops-port when given (404s elsewhere).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { MODES, connected, harness, next } from "./lib/harness.mjs";
import { get, parseMetrics, serve, serveWithOpsPort } from "./lib/ops-util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const VERSION = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(path.resolve(here, "../../../Cargo.toml"), "utf8"))[1];

/** Every metric family the description names, with its type. */
const FAMILIES = {
  ioscale_connections: "gauge",
  ioscale_sockets: "gauge",
  ioscale_rooms: "gauge",
  ioscale_packets_received: "counter",
  ioscale_packets_sent: "counter",
  ioscale_bytes_received: "counter",
  ioscale_bytes_sent: "counter",
  ioscale_broadcasts: "counter",
  ioscale_dropped_packets: "counter",
  ioscale_disconnects: "counter",
  ioscale_handshake_errors: "counter",
  ioscale_broadcast_fanout_seconds: "histogram",
  ioscale_adapter_requests: "counter",
  ioscale_adapter_timeouts: "counter",
  ioscale_redis_up: "gauge",
  ioscale_redis_reconnects: "counter",
};

const OPS_PATHS = ["/health", "/ready", "/metrics", "/stats"];

async function checkHealth(base, serverId) {
  const res = await get(`${base}/health`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^application\/json/);
  assert.deepEqual(Object.keys(res.json).sort(), ["serverId", "status", "uptimeSeconds", "version"]);
  assert.equal(res.json.status, "ok");
  assert.equal(res.json.serverId, serverId);
  assert.ok(Number.isInteger(res.json.uptimeSeconds) && res.json.uptimeSeconds >= 0 && res.json.uptimeSeconds < 60, `uptimeSeconds ${res.json.uptimeSeconds}`);
  assert.equal(res.json.version, VERSION);
}

async function checkReady(base) {
  const res = await get(`${base}/ready`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^application\/json/);
  assert.deepEqual(res.json, { ready: true });
}

async function checkMetrics(base, { polling, websocket }) {
  const res = await get(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^(application\/openmetrics-text|text\/plain)/);
  assert.ok(res.body.trimEnd().endsWith("# EOF"), "OpenMetrics text ends with # EOF");
  const m = parseMetrics(res.body);
  for (const [family, type] of Object.entries(FAMILIES)) {
    assert.equal(m.families.get(family), type, `# TYPE ${family} ${type}`);
  }
  assert.equal(m.value("ioscale_connections", { transport: "polling" }), polling);
  assert.equal(m.value("ioscale_connections", { transport: "websocket" }), websocket);
  assert.equal(m.value("ioscale_sockets", { namespace: "/" }), polling + websocket);
  for (const scope of ["local", "cluster"]) m.value("ioscale_broadcasts_total", { scope });
  for (const reason of ["slow_consumer", "volatile", "redis_unavailable"]) m.value("ioscale_dropped_packets_total", { reason });
  for (let code = 0; code <= 5; code++) m.value("ioscale_handshake_errors_total", { code: String(code) });
  for (const reason of ["transport close", "client namespace disconnect", "server shutting down", "ping timeout"]) {
    m.value("ioscale_disconnects_total", { reason });
  }
  for (const name of ["packets_received", "packets_sent", "bytes_received", "bytes_sent", "adapter_requests", "adapter_timeouts", "redis_reconnects"]) {
    assert.ok(m.value(`ioscale_${name}_total`) >= 0);
  }
  assert.ok(m.value("ioscale_broadcast_fanout_seconds_bucket", { le: "+Inf" }) >= 0);
  m.value("ioscale_broadcast_fanout_seconds_count");
  m.value("ioscale_broadcast_fanout_seconds_sum");
  assert.equal(m.value("ioscale_redis_up"), 0, "no --redis-url: redis_up 0");
  return m;
}

async function checkStats(base, serverId, connections) {
  const res = await get(`${base}/stats`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^application\/json/);
  assert.deepEqual(res.json, {
    serverId,
    totalConnections: connections,
    serversOnline: 1,
    complete: true,
    servers: [{ serverId, connections }],
  });
}

/** A WebSocket and a polling client, connected (and server-info received). */
async function twoClients(h, url) {
  const ws = h.client(url, MODES.websocket);
  const polling = h.client(url, MODES.polling);
  const infos = [ws, polling].map((s) => next(s, "server-info"));
  await Promise.all([connected(ws), connected(polling)]);
  await Promise.all(infos);
  return [ws, polling];
}

test("main port: /health, /ready, /metrics, /stats answer 200 with their content; other paths 404", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-ep-main", "--stats-interval", "0"]);
  await checkHealth(node.url, "ops-ep-main");
  await checkReady(node.url);
  await checkMetrics(node.url, { polling: 0, websocket: 0 });
  await checkStats(node.url, "ops-ep-main", 0);

  await twoClients(h, node.url);
  await checkMetrics(node.url, { polling: 1, websocket: 1 });
  await checkStats(node.url, "ops-ep-main", 2);

  // `/` answers a one-line page (ops-root.test.mjs).
  for (const p of ["/nope", "/health/extra", "/metricsx"]) {
    const res = await get(`${node.url}${p}`);
    assert.equal(res.status, 404, `${p} → ${res.status}`);
  }
  // A query string does not change the route.
  assert.equal((await get(`${node.url}/health?verbose=1`)).status, 200);

  // uptimeSeconds counts from the start: it does not go backwards.
  const a = (await get(`${node.url}/health`)).json.uptimeSeconds;
  const b = (await get(`${node.url}/health`)).json.uptimeSeconds;
  assert.ok(b >= a);
});

test("--ops-port: the endpoints answer only there; the main port 404s them; the ops port 404s everything else", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  // Port 0 would not tell us where the ops listener is: a free port is taken in Node and passed on.
  const node = await serveWithOpsPort(h, ["--server-id", "ops-ep-split", "--stats-interval", "0"]);
  const opsPort = node.opsPort;
  assert.notEqual(node.port, opsPort);
  const ops = node.opsUrl;

  // The main port: Socket.IO works, the ops paths do not exist.
  await twoClients(h, node.url);
  for (const p of [...OPS_PATHS, "/nope"]) {
    const res = await get(`${node.url}${p}`);
    assert.equal(res.status, 404, `main port ${p} → ${res.status} ${res.body}`);
  }

  // The ops port: the endpoints, with the same content as on the main port.
  await checkHealth(ops, "ops-ep-split");
  await checkReady(ops);
  await checkMetrics(ops, { polling: 1, websocket: 1 });
  await checkStats(ops, "ops-ep-split", 2);

  // ... and nothing else: not the Socket.IO path (handshake or probe), nor anything unknown (`/`
  // answers a one-line page, ops-root.test.mjs).
  for (const p of ["/socket.io/?EIO=4&transport=polling", "/socket.io/", "/socket.io/?EIO=4&transport=bogus", "/nope"]) {
    const res = await get(`${ops}${p}`);
    assert.equal(res.status, 404, `ops port ${p} → ${res.status} ${res.body}`);
  }
  // Requests to the ops port did not reach the engine: no session, no handshake error counted.
  const m = parseMetrics((await get(`${ops}/metrics`)).body);
  assert.equal(m.value("ioscale_handshake_errors_total", { code: "0" }), 0);
  assert.equal(m.value("ioscale_connections", { transport: "polling" }) + m.value("ioscale_connections", { transport: "websocket" }), 2);

  // A WebSocket upgrade on the ops port is refused as well.
  const { default: WebSocket } = await import("ws");
  const ws = new WebSocket(`ws://127.0.0.1:${opsPort}/socket.io/?EIO=4&transport=websocket`);
  h.defer(() => ws.terminate());
  const status = await new Promise((resolve) => {
    ws.once("unexpected-response", (_req, res) => resolve(res.statusCode));
    ws.once("open", () => resolve("open"));
    ws.once("error", (e) => resolve(e.message));
  });
  assert.equal(status, 404);
});
