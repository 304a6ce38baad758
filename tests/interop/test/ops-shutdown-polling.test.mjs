// Graceful shutdown of `ioscale serve` with polling clients that open a new TCP connection per
// request (engine.io-client's default in Node: no agent, `Connection: close`), as curl does. The
// listener stays open through the drain: requests of known sessions are served (each gets its queue,
// then the close packet), new handshakes get 503, and the node exits as soon as every session ended,
// well before --shutdown-timeout. A handshake never polled afterwards (an abandoned one) has no client
// to wait for: it ends at once, as Node's engine.io discards it.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import { MODES, connected, harness, within } from "./lib/harness.mjs";
import { exitWithin, scrape, serve, serveWithOpsPort, waitUntil } from "./lib/ops-util.mjs";

const QUIET = ["--ping-interval", "600000", "--stats-interval", "0"];

/** One request on its own TCP connection (`Connection: close`): { status, body } or { error }. */
function once(port, method, target, body) {
  return new Promise((resolve) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: target, agent: false, headers: { connection: "close" } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", (error) => resolve({ error: error.code ?? error.message }));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", (error) => resolve({ error: error.code ?? error.message }));
    req.end(body);
  });
}

/** A raw polling session, curl-like: every request on a new connection. */
async function curlSession(port) {
  const open = await once(port, "GET", "/socket.io/?EIO=4&transport=polling");
  assert.equal(open.status, 200, `handshake: ${JSON.stringify(open)}`);
  const sid = JSON.parse(open.body.slice(1)).sid;
  const target = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
  return {
    sid,
    get: () => once(port, "GET", target),
    post: (body) => once(port, "POST", target, body),
  };
}

test("SIGTERM under a steady broadcast to 100 polling clients with a new connection per request: every client gets every message sent before the signal, then 'transport close'; exit long before --shutdown-timeout", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-shut-poll-many", "--shutdown-timeout", "10", "--ping-timeout", "20000", ...QUIET]);
  const N = 100;
  // engine.io-client's default in Node: no agent, so every poll and post is a new TCP connection.
  const pollers = Array.from({ length: N }, () => h.client(node.url, { ...MODES.polling }));
  const sender = h.client(node.url, MODES.websocket);
  await Promise.all([...pollers, sender].map((s) => connected(s)));
  assert.equal(pollers[0].io.engine.transport.name, "polling");

  const logs = pollers.map((s) => {
    const log = { messages: [], reason: null };
    s.on("message", (m) => log.messages.push(Number(m.message.split("-")[1])));
    log.closed = new Promise((resolve) => s.on("disconnect", (reason) => resolve((log.reason = reason))));
    return log;
  });
  // The sender's own copies (its WebSocket gets everything queued for it before its close).
  let echoed = 0;
  sender.on("message", () => echoed++);
  const senderClosed = new Promise((resolve) => sender.on("disconnect", resolve));

  // A steady broadcast, 50 messages a second, for a while.
  let sent = 0;
  const ticker = setInterval(() => sender.emit("message", { message: `b-${sent++}` }), 20);
  h.defer(() => clearInterval(ticker));
  await waitUntil(() => echoed >= 40 && logs.every((l) => l.messages.length >= 10), { timeoutMs: 20000, label: "the broadcast reaching every poller" });

  // Then a burst, and the signal while the clients are between two polls: this process does not
  // run for 300 ms, so each poller's pending poll is answered with the burst's first messages and
  // the rest stays queued in the server, for a next poll that the clients send after the signal,
  // each on a new connection. (Without the busy wait the pollers mostly have a poll pending at the
  // signal, which gets the close packet directly.) The server broadcast every message long before
  // the signal: each one was queued for every client.
  clearInterval(ticker);
  for (let i = 0; i < 50; i++) sender.emit("message", { message: `b-${sent++}` });
  // engine.io-client writes a burst over a few ticks: the whole burst leaves before the busy wait.
  while (sender.io.engine.writeBuffer.length > 0) await new Promise((resolve) => setImmediate(resolve));
  const until = Date.now() + 300;
  while (Date.now() < until);
  const sigterm = Date.now();
  node.signal("SIGTERM");

  const exit = await exitWithin(node, 12000, sigterm);
  await within(5000, senderClosed, "the sender's disconnect");
  const reasons = await within(10000, Promise.all(logs.map((l) => l.closed)), "every poller's disconnect");
  const before = echoed;
  assert.equal(before, sent, "the sender got its own copy of every message");

  const counts = {};
  for (const r of reasons) counts[r] = (counts[r] ?? 0) + 1;
  const got = logs.map((l) => l.messages.length);
  const missing = logs.map((l) => Array.from({ length: before }, (_, i) => i).filter((i) => !l.messages.includes(i)).length);
  t.diagnostic(`sent ${sent} (all before SIGTERM), echoed ${before}; exit ${JSON.stringify(exit)}; reasons ${JSON.stringify(counts)}; received per poller min ${Math.min(...got)} max ${Math.max(...got)}; pollers missing messages: ${missing.filter((m) => m > 0).length}`);
  assert.deepEqual(counts, { "transport close": N }, "every poller sees 'transport close' (never 'transport error')");
  for (const [i, l] of logs.entries()) {
    assert.deepEqual(l.messages, Array.from({ length: sent }, (_, k) => k), `poller ${i}: every message sent before the signal, in order, before its disconnect (got ${l.messages.length}/${sent})`);
  }
  assert.equal(exit.code, 0, `stderr:\n${node.stderr().slice(-2000)}`);
  assert.ok(exit.ms < 4000, `exited ${exit.ms} ms after SIGTERM (--shutdown-timeout 10)`);
  assert.doesNotMatch(node.stderr(), /shutdown timeout/);
});

test("a curl-like polling session between two polls at SIGTERM: its next poll (a new connection) gets what was queued, then the close; a new handshake gets 503; exit at once", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serveWithOpsPort(h, ["--server-id", "ops-shut-curl", "--shutdown-timeout", "10", "--ping-timeout", "20000", ...QUIET]);
  const s = await curlSession(node.port);
  assert.equal((await s.post("40")).status, 200);
  // Its first poll collects the connect reply and server-info: a client reads this session.
  const early = [];
  while (early.length < 2) {
    const res = await s.get();
    assert.equal(res.status, 200);
    early.push(...res.body.split("\x1e"));
  }
  assert.match(early[0], /^40\{"sid":/);
  assert.match(early[1], /^42\["server-info"/);
  // Something queued for it while no poll is pending: a broadcast from a WebSocket client.
  const ws = h.client(node.url, MODES.websocket);
  await connected(ws);
  ws.emit("message", { message: "queued for the curl session" });
  await waitUntil(async () => (await scrape(node.opsUrl)).value("ioscale_packets_sent_total") >= 6, { label: "the broadcast queued" });

  const sigterm = Date.now();
  node.signal("SIGTERM");
  await node.waitForLine((l) => /shutting down/.test(l), { label: "shutting down" });
  // A new handshake during the drain is refused; the node does not take new sessions.
  const fresh = await once(node.port, "GET", "/socket.io/?EIO=4&transport=polling");
  // The session's next polls, each on a new connection: what was queued, then the close.
  const packets = [];
  let pollError;
  for (let polls = 0; polls < 5 && !packets.includes("1") && !pollError; polls++) {
    const res = await s.get();
    if (res.status === 200) packets.push(...res.body.split("\x1e"));
    else pollError = res.error ?? `${res.status} ${res.body}`;
  }
  const finalAt = Date.now();
  const exit = await exitWithin(node, 12000, sigterm);
  t.diagnostic(`handshake during the drain: ${fresh.status ?? fresh.error}; after the signal the session got ${JSON.stringify(packets)}${pollError ? `, then ${pollError}` : ""}; exit ${exit.code} ${exit.ms} ms after SIGTERM, ${Date.now() - finalAt} ms after the final poll`);
  assert.equal(pollError, undefined, "every poll during the drain is served");
  const body = packets.filter((p) => p !== "6" && p !== "1");
  assert.equal(body.length, 1, JSON.stringify(packets));
  const event = JSON.parse(body[0].slice(2));
  assert.deepEqual(event.slice(0, 2).map((x) => x.message ?? x), ["message", "queued for the curl session"]);
  // With connection state recovery on (serve's default), the event's last argument is its offset.
  assert.ok(event.length === 2 || (event.length === 3 && typeof event[2] === "string"), JSON.stringify(event));
  assert.equal(packets.at(-1), "1", "the close packet comes last");
  assert.equal(fresh.status, 503, `a handshake during the drain: ${JSON.stringify(fresh)}`);
  assert.equal(exit.code, 0);
  assert.ok(exit.ms < 2000, `exited ${exit.ms} ms after SIGTERM (--shutdown-timeout 10)`);
});

test("abandoned polling handshakes (never polled, one of them joined '/' by a POST) do not hold the shutdown: exit at once", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-shut-abandoned", "--shutdown-timeout", "10", "--ping-timeout", "20000", ...QUIET]);
  await curlSession(node.port);
  const joined = await curlSession(node.port);
  assert.equal((await joined.post("40")).status, 200);
  await waitUntil(async () => {
    const m = await scrape(node.url);
    return m.value("ioscale_sockets", { namespace: "/" }) === 1 && m.value("ioscale_connections", { transport: "polling" }) === 2;
  }, { label: "2 polling sessions, 1 socket" });

  const sigterm = Date.now();
  node.signal("SIGTERM");
  const exit = await exitWithin(node, 12000, sigterm);
  t.diagnostic(`exit ${JSON.stringify(exit)}`);
  assert.equal(exit.code, 0);
  assert.ok(exit.ms < 2000, `exited ${exit.ms} ms after SIGTERM (--shutdown-timeout 10)`);
  assert.doesNotMatch(node.stderr(), /shutdown timeout/);
});
