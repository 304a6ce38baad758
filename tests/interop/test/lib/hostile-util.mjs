// Helpers of the hostile-* tests: an `ioscale serve` node with limit flags, a well-behaved witness
// client whose round trips through the application prove it is unaffected, limit counters and
// `limit reached` log lines, raw HTTP / TCP / WebSocket attempts from a chosen local address, and
// the server's memory from /proc.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import WebSocket from "ws";
import { connected } from "./harness.mjs";
import { parseMetrics, waitUntil } from "./ops-util.mjs";
import { request, within } from "./raw.mjs";

export { waitUntil, within };

/**
 * `ioscale serve` with the given flags, through the harness (clients are closed before it stops).
 * The ping interval (default 25 s) is longer than every test, so heartbeats add nothing.
 */
export function serveApp(h, flags = []) {
  const stats = flags.includes("--stats-interval") ? [] : ["--stats-interval", "0"];
  return h.app(["serve", "--server-id", "hostile", ...stats, ...flags]);
}

/**
 * The `connections` of the periodic `stats` log lines (every session the node still holds, closed
 * ones awaiting their last poll included), from line `from` of the output on.
 */
export function statsConnections(server, from = 0) {
  const lines = server.output().split("\n").slice(from, -1);
  return lines.flatMap((l) => {
    const m = / INFO stats connections=(\d+)/.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

/** Number of complete output lines so far (a mark for statsConnections). */
export const outputLines = (server) => server.output().split("\n").length - 1;

/** GET /metrics on a fresh connection, parsed. */
export async function metrics(server) {
  const res = await request(`${server.url}/metrics`);
  assert.equal(res.status, 200, `/metrics: ${res.status} ${res.body}`);
  return parseMetrics(res.body);
}

/** `ioscale_limit_rejections_total{limit}` of a scrape. */
export const rejections = (m, limit) => m.value("ioscale_limit_rejections_total", { limit });

/** The `ioscale_limit_rejections_total` samples of a scrape that are not zero, by limit. */
export function allRejections(m) {
  const out = {};
  for (const [key, value] of m.samples) {
    const match = /^ioscale_limit_rejections_total\{limit="([a-z_]+)"\}$/.exec(key);
    if (match && value !== 0) out[match[1]] = value;
  }
  return out;
}

/** Open Engine.IO connections (both transports) of a scrape. */
export const openConnections = (m) =>
  m.value("ioscale_connections", { transport: "polling" }) + m.value("ioscale_connections", { transport: "websocket" });

/** The `count` of every `limit reached` warn line the server logged for `limit`. */
export function limitLogCounts(server, limit) {
  return [...server.output().matchAll(/WARN limit reached limit="([a-z_]+)" count=(\d+)/g)]
    .filter((m) => m[1] === limit)
    .map((m) => Number(m[2]));
}

/** The counts a server logs after `n` refusals: the first, then every power of two. */
export function loggedCounts(n) {
  const out = [];
  for (let c = 1; c <= n; c *= 2) out.push(c);
  return out;
}

/** Asserts that `n` refusals of `limit` were logged as `limit reached` lines at 1, 2, 4, ... (waits for stderr). */
export async function assertLimitLogged(server, limit, n) {
  const want = loggedCounts(n);
  await waitUntil(() => limitLogCounts(server, limit).length >= want.length, {
    timeoutMs: 3000,
    label: `${want.length} "limit reached" lines for ${limit}`,
  }).catch(() => {});
  assert.deepEqual(limitLogCounts(server, limit), want, `"limit reached" log lines for ${limit} after ${n} refusals`);
}

/**
 * A socket.io-client socket (WebSocket transport) connected to "/" before the hostile client acts;
 * `assertAlive(w)` proves it still works.
 */
export async function witness(h, server, opts = {}) {
  const socket = h.client(server.url, { transports: ["websocket"], ...opts });
  socket.on("message", () => {}); // broadcasts of other tests' senders are fine
  await connected(socket, 5000);
  return socket;
}

let rounds = 0;
/**
 * Round trip through the application: `join` (ack {ok:true}) of the room "witness" (always the same
 * room, so a rooms limit is never reached by it), then a `message` to that room that it receives.
 */
export async function assertAlive(socket, label = "the already-connected client keeps working") {
  assert.ok(socket.connected, `${label}: still connected`);
  const reply = await socket.timeout(5000).emitWithAck("join", "witness");
  assert.deepEqual(reply, { ok: true, room: "witness" }, `${label}: join ack`);
  const text = `alive-${++rounds}`;
  const got = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off("message", onMessage);
      reject(new Error(`${label}: its message to its room did not come back within 5000 ms`));
    }, 5000);
    const onMessage = (m) => {
      if (m?.message !== text) return;
      clearTimeout(timer);
      socket.off("message", onMessage);
      resolve(m);
    };
    socket.on("message", onMessage);
  });
  socket.emit("message", { message: text, room: "witness" });
  const m = await got;
  assert.equal(m.socketId, socket.id, `${label}: message sender`);
}

/**
 * One HTTP request on its own TCP connection, from `localAddress` when given.
 * Resolves { status, headers, body }; rejects on a connection error.
 */
export function httpRequest(url, { method = "GET", headers = {}, body, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false, localAddress }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** `<server>/socket.io/?EIO=4&transport=polling` (plus extra query text). */
export const pollingUrl = (server, extra = "") => `${server.url}/socket.io/?EIO=4&transport=polling${extra}`;
export const websocketUrl = (server, extra = "") => `${server.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket${extra}`;

/** A polling handshake (from `localAddress`): { status, body, sid } (sid only on success). */
export async function pollingHandshake(server, { localAddress, extra } = {}) {
  const res = await httpRequest(pollingUrl(server, extra), { localAddress });
  const sid = res.status === 200 && res.body.startsWith("0") ? JSON.parse(res.body.slice(1)).sid : undefined;
  return { ...res, sid };
}

/**
 * A WebSocket handshake (from `localAddress`). Resolves { ws, open: first message } when accepted, or
 * { status, body } when the server answered the upgrade with an HTTP response; the WebSocket is
 * terminated at the end of the test.
 */
export function wsAttempt(h, url, { localAddress } = {}) {
  const ws = new WebSocket(url, { perMessageDeflate: false, localAddress });
  h.defer(() => ws.terminate());
  return within(
    new Promise((resolve, reject) => {
      ws.once("message", (data) => resolve({ ws, open: data.toString("utf8") }));
      ws.once("unexpected-response", (req, res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") });
          ws.terminate();
        });
      });
      ws.once("error", (e) => reject(e));
    }),
    5000,
    `an answer to the WebSocket handshake ${url}`,
  );
}

/**
 * A raw TCP connection to the server: `data` accumulates what it answers (latin1), `closed`
 * resolves { at, data, error } when the connection ends. Destroyed at the end of the test.
 */
export function rawTcp(h, server) {
  const socket = net.connect({ port: server.port, host: "127.0.0.1" });
  const conn = { socket, data: "", error: undefined, startedAt: Date.now() };
  socket.on("data", (d) => (conn.data += d.toString("latin1")));
  socket.on("error", (e) => (conn.error = e.code));
  conn.connected = new Promise((resolve) => socket.once("connect", resolve));
  conn.closed = new Promise((resolve) => socket.once("close", () => resolve({ at: Date.now(), data: conn.data, error: conn.error })));
  conn.write = (text) => {
    if (!socket.destroyed) socket.write(text);
  };
  h.defer(() => socket.destroy());
  return conn;
}

/** VmRSS and VmHWM (peak RSS) of a process, in KiB. */
export function memoryKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)[1]);
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

/** Runs `task(i)` for i in 0..n-1 with at most `concurrency` in flight; resolves to the results in order. */
export async function pool(n, concurrency, task) {
  const results = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        results[i] = await task(i);
      }
    }),
  );
  return results;
}
