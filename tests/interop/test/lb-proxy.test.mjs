// The proxy contract of `ioscale lb` itself: X-Forwarded-For / X-Forwarded-Proto on forwarded
// requests and WebSocket upgrades, backends from the BACKENDS environment variable, "Session ID
// unknown" for a session whose node went down, the balancer's /health and /metrics, and its own 431s.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { harness } from "./lib/harness.mjs";
import { IOSCALE_ENV, freePort, openClient, spread, startLb, startNode, waitUntil } from "./lib/lb-util.mjs";
import { request } from "./lib/raw.mjs";

const UNKNOWN_SID = { code: 1, message: "Session ID unknown" };

/** A plain HTTP + WebSocket server that records the headers of every request it gets. */
async function recordingBackend(h) {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ kind: "http", url: req.url, headers: req.headers });
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
  const wss = new WebSocketServer({ server });
  wss.on("connection", (socket, req) => {
    seen.push({ kind: "websocket", url: req.url, headers: req.headers });
    socket.send("hello from the backend");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  h.defer(
    () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { seen, address: `127.0.0.1:${server.address().port}` };
}

test("ioscale lb adds X-Forwarded-For and X-Forwarded-Proto to requests and WebSocket upgrades", { timeout: 15000 }, async (t) => {
  const h = harness(t);
  const backend = await recordingBackend(h);
  const lb = await startLb(h, [backend.address]);

  const res = await request(`${lb.url}/some/path?x=1`, { headers: { "x-custom": "kept" } });
  assert.equal(res.status, 200, res.body);
  assert.equal(res.body, "ok");
  const plain = backend.seen.find((s) => s.kind === "http" && s.url === "/some/path?x=1");
  assert.ok(plain, `the request reached the backend: ${JSON.stringify(backend.seen.map((s) => s.url))}`);
  assert.equal(plain.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(plain.headers["x-forwarded-proto"], "http");
  assert.equal(plain.headers["x-custom"], "kept", "other headers are passed on");

  // An X-Forwarded-For from an earlier proxy is extended, not replaced.
  await request(`${lb.url}/chained`, { headers: { "x-forwarded-for": "203.0.113.7" } });
  const chained = backend.seen.find((s) => s.url === "/chained");
  assert.equal(chained?.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
  // Several X-Forwarded-For lines are one list: every address is kept, in order.
  await request(`${lb.url}/two-lines`, { headers: { "x-forwarded-for": ["198.51.100.1", "203.0.113.7"] } });
  const twoLines = backend.seen.find((s) => s.url === "/two-lines");
  assert.equal(twoLines?.headers["x-forwarded-for"], "198.51.100.1, 203.0.113.7, 127.0.0.1");

  const ws = new WebSocket(`ws://127.0.0.1:${lb.port}/socket.io/?EIO=4&transport=websocket`);
  h.defer(() => ws.terminate());
  const greeting = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message through the WebSocket tunnel within 5 s")), 5000);
    ws.once("message", (data) => {
      clearTimeout(timer);
      resolve(data.toString());
    });
    ws.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  assert.equal(greeting, "hello from the backend", "bytes flow through the tunnel");
  const upgrade = backend.seen.find((s) => s.kind === "websocket");
  assert.ok(upgrade, "the upgrade reached the backend");
  assert.equal(upgrade.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(upgrade.headers["x-forwarded-proto"], "http");
  assert.match(upgrade.headers.upgrade ?? "", /websocket/i);
});

test("ioscale lb takes its nodes from BACKENDS (comma list) when no --backend is given", { timeout: 15000 }, async (t) => {
  const h = harness(t);
  const nodes = await Promise.all([0, 1].map((i) => startNode(h, { serverId: `env-${i}` })));
  const run = h.spawn("ioscale", ["lb", "--host", "127.0.0.1", "--port", "0", "--policy", "round-robin"], {
    unsetEnv: IOSCALE_ENV.filter((k) => k !== "BACKENDS"),
    env: { BACKENDS: nodes.map((n) => n.address).join(",") },
  });
  const port = await run.listening();
  const url = `http://127.0.0.1:${port}`;
  const clients = [];
  for (let i = 0; i < 4; i++) clients.push(await openClient(h, url, i % 2 ? "websocket" : "polling", {}, `client #${i}`));
  assert.deepEqual(spread(clients), { "env-0": 2, "env-1": 2 }, "both nodes of BACKENDS get sessions");
});

test("ioscale lb: a session whose node went down gets 400 Session ID unknown; /health and /metrics follow", { timeout: 15000 }, async (t) => {
  const h = harness(t);
  const nodes = await Promise.all([0, 1].map((i) => startNode(h, { serverId: `solo-${i}` })));
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "0"]);

  const open = await request(`${lb.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(open.status, 200, open.body);
  const { sid } = JSON.parse(open.body.slice(1));
  const health = await lb.health();
  assert.deepEqual(health, { status: "ok", backendsUp: 2, sessions: 1, trackedSessions: 1 });
  const m = await lb.metrics();
  assert.equal(m.families.get("ioscale_lb_sessions"), "gauge");
  assert.equal(m.families.get("ioscale_lb_backends_up"), "gauge");
  assert.equal(m.families.get("ioscale_lb_backend_up"), "gauge");
  assert.equal(m.families.get("ioscale_lb_backend_sessions"), "gauge");
  assert.equal(m.families.get("ioscale_lb_requests_total"), "counter");
  assert.equal(m.value("ioscale_lb_sessions"), 1);
  const holder = nodes.find((n) => m.value("ioscale_lb_backend_sessions", { backend: n.address }) === 1);
  assert.ok(holder, `one node holds the session: ${m.text}`);
  for (const n of nodes) assert.ok(m.value("ioscale_lb_requests_total", { backend: n.address }) >= (n === holder ? 1 : 0));

  await holder.kill("SIGKILL");
  const res = await request(`${lb.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`);
  assert.equal(res.status, 400, `a poll of a session on a dead node: ${res.status} ${res.body}`);
  assert.deepEqual(JSON.parse(res.body), UNKNOWN_SID);
  const after = await lb.health();
  assert.equal(after.trackedSessions, 0, `the session is forgotten: ${JSON.stringify(after)}`);
  assert.equal(after.sessions, 0, `the session is no longer counted: ${JSON.stringify(after)}`);
  assert.equal(after.backendsUp, 1, `the dead node is skipped: ${JSON.stringify(after)}`);
  // The client's reconnection (a new handshake) lands on the live node.
  const c = await openClient(h, lb.url, "polling", {}, "reconnecting client");
  assert.equal(c.serverId(), nodes.find((n) => n !== holder).serverId);
});

test("ioscale lb answers an oversized request head with 431, closes, and counts it in its /metrics", { timeout: 15000 }, async (t) => {
  const h = harness(t);
  // A node nobody listens on: a head the balancer let through would get its 502/503, so a 431
  // can only be the balancer's (a Node backend would answer 431 itself past its 16 KiB).
  const lb = await startLb(h, [`127.0.0.1:${await freePort()}`], ["--health-interval", "0"]);
  const before = await lb.metrics();
  assert.equal(before.families.get("ioscale_lb_limit_rejections_total"), "counter");
  assert.equal(before.value("ioscale_lb_limit_rejections_total", { limit: "header_bytes" }), 0);

  // Past the balancer's 64 KiB of request head.
  const answer = await new Promise((resolve, reject) => {
    const socket = net.connect({ port: lb.port, host: "127.0.0.1" });
    h.defer(() => socket.destroy());
    let data = "";
    socket.on("data", (d) => (data += d.toString("latin1")));
    socket.on("error", () => {}); // a reset after the answer: the rest was never read
    socket.on("close", () => resolve(data));
    socket.on("connect", () => socket.write(`GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: ${"a".repeat(70_000)}\r\n\r\n`));
    setTimeout(() => reject(new Error("the balancer did not close the connection within 5 s")), 5000).unref();
  });
  assert.match(answer, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/, JSON.stringify(answer.slice(0, 80)));
  const m = await waitUntil(async () => {
    const m = await lb.metrics();
    return m.value("ioscale_lb_limit_rejections_total", { limit: "header_bytes" }) >= 1 && m;
  }, { timeoutMs: 3000, label: "the 431 counted" });
  assert.equal(m.value("ioscale_lb_limit_rejections_total", { limit: "header_bytes" }), 1);
  assert.equal(m.value("ioscale_lb_limit_rejections_total", { limit: "header_read_timeout" }), 0);
});

test("ioscale lb: a request target that is not a path (OPTIONS *) reaches the node and does not mark it down", { timeout: 15000 }, async (t) => {
  const h = harness(t);
  const node = await startNode(h, { serverId: "asterisk" });
  // Passive health only: a failed forward would mark the node down for --fail-timeout.
  const lb = await startLb(h, [node.address], ["--health-interval", "0"]);
  const answer = await new Promise((resolve, reject) => {
    const socket = net.connect({ port: lb.port, host: "127.0.0.1" });
    h.defer(() => socket.destroy());
    let data = "";
    socket.on("data", (d) => (data += d.toString("latin1")));
    socket.on("error", reject);
    socket.on("close", () => resolve(data));
    socket.on("connect", () => socket.write("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  });
  // The node has nothing at `*`: its 404, passed on.
  assert.match(answer, /^HTTP\/1\.1 404 Not Found\r\n/, JSON.stringify(answer.slice(0, 80)));
  assert.equal((await lb.health()).backendsUp, 1, "the node is still up");
  const c = await openClient(h, lb.url, "polling", {}, "client after OPTIONS *");
  assert.equal(c.serverId(), "asterisk");
});
