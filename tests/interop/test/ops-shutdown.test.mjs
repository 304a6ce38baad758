// Graceful shutdown of `ioscale serve` on SIGTERM: /ready turns 503 "shutting down", the listener
// closes, every client transport is closed after what was queued for it is written (clients see
// "transport close", never "io server disconnect", and start reconnecting), and the process exits 0
// within --shutdown-timeout; a second signal during the shutdown exits at once, non-zero.
//
// About the polling clients: once the listener is closed, a polling client can only reach the
// server over a connection it already has. engine.io-client opens a new TCP connection per request
// by default, so its next poll after a response can hit the closed listener (ECONNREFUSED → "transport
// error"), depending on timing. The polling clients here therefore use a keep-alive http.Agent
// (`agent` option): every poll, including the one that gets the close packet, reuses a connection.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, collect, connected, harness, next, waitFor } from "./lib/harness.mjs";
import { exitWithin, get, keepAliveAgent, rawPolling, scrape, serve, serveWithOpsPort, tryConnect, waitUntil } from "./lib/ops-util.mjs";
import { WsPeer } from "./lib/raw.mjs";

const QUIET = ["--ping-interval", "600000", "--stats-interval", "0"];
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 100, randomizationFactor: 0 };

/** An official client with reconnection on; polling ones keep their connections (see above). */
function client(h, node, mode) {
  return h.client(node.url, { ...MODES[mode], ...RECONNECT, ...(mode === "polling" ? { agent: keepAliveAgent(h) } : {}) });
}

/** Records messages and disconnects of a client in order, and its manager's reconnect attempts. */
function recorder(socket) {
  const log = [];
  socket.on("message", (m) => log.push(`message:${m.message}`));
  socket.on("disconnect", (reason) => log.push(`disconnect:${reason}`));
  const rec = {
    log,
    disconnected: waitFor(socket, "disconnect", { timeoutMs: 15000, label: "disconnect" }),
    reconnectAttempt: waitFor(socket.io, "reconnect_attempt", { timeoutMs: 15000, label: "reconnect_attempt" }),
  };
  rec.disconnected.catch(() => {});
  rec.reconnectAttempt.catch(() => {});
  return rec;
}

test("SIGTERM with WebSocket and polling clients: queued messages delivered, 'transport close', reconnect_attempt, exit 0 well within --shutdown-timeout 5", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-shut", "--shutdown-timeout", "5", ...QUIET]);
  const modes = ["websocket", "websocket", "polling", "polling"];
  const sockets = modes.map((mode) => client(h, node, mode));
  await Promise.all(sockets.map((s) => connected(s)));
  const recs = sockets.map(recorder);
  for (const [i, s] of sockets.entries()) assert.equal(s.io.engine.transport.name, modes[i]);

  // A burst of messages from the first client, broadcast to all; once the sender has its own copy
  // of the last one, the server has queued every copy for every client. The signal follows at once.
  const K = 100;
  const texts = Array.from({ length: K }, (_, i) => `before-sigterm-${i}-${"z".repeat(200)}`);
  const own = collect(sockets[0], "message", K, { timeoutMs: 10000 });
  for (const message of texts) sockets[0].emit("message", { message });
  await own;
  const sigterm = Date.now();
  node.signal("SIGTERM");

  const exit = await exitWithin(node, 6000, sigterm);
  t.diagnostic(`exit ${JSON.stringify(exit)}`);
  assert.equal(exit.code, 0, `exit code; stderr:\n${node.stderr()}`);
  assert.equal(exit.signal, null);
  assert.ok(exit.ms < 3000, `exited ${exit.ms} ms after SIGTERM (timeout 5 s)`);

  const reasons = await Promise.all(recs.map((r) => r.disconnected.then(([reason]) => reason)));
  assert.deepEqual(reasons, modes.map(() => "transport close"));
  await Promise.all(recs.map((r) => r.reconnectAttempt));
  for (const [i, rec] of recs.entries()) {
    const expected = [...texts.map((m) => `message:${m}`), "disconnect:transport close"];
    assert.deepEqual(rec.log.slice(0, K + 1), expected, `client ${i} (${modes[i]}): every message before the disconnect`);
    assert.ok(!rec.log.includes("disconnect:io server disconnect"));
  }
  assert.match(node.stderr(), /shutting down/);
  assert.match(node.stderr(), /shut down/);
});

test("during a shutdown held open by a polling session: /ready 503 'shutting down' on --ops-port, listener closed, final poll flushes then closes, exit 0", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const node = await serveWithOpsPort(h, ["--server-id", "ops-shut-ready", "--shutdown-timeout", "30", "--ping-timeout", "20000", ...QUIET]);
  assert.deepEqual((await get(`${node.opsUrl}/ready`)).json, { ready: true });

  // A raw polling session joins "/" and does not poll: the server keeps it (its queued packets and
  // the close packet wait for its next poll, up to ping-timeout), which holds the shutdown open.
  const raw = await rawPolling(h, node.url);
  assert.equal((await raw.post("40")).status, 200);
  const ws = client(h, node, "websocket");
  await connected(ws);
  const rec = recorder(ws);
  await waitUntil(async () => (await scrape(node.opsUrl)).value("ioscale_sockets", { namespace: "/" }) === 2, { label: "2 sockets" });
  const echo = next(ws, "message");
  ws.emit("message", { message: "queued for the poller" });
  await echo;

  const sigterm = Date.now();
  node.signal("SIGTERM");
  const notReady = await waitUntil(
    async () => {
      const res = await get(`${node.opsUrl}/ready`);
      return res.status !== 200 && res;
    },
    { timeoutMs: 5000, label: "/ready not 200 after SIGTERM" },
  );
  assert.equal(notReady.status, 503);
  assert.deepEqual(notReady.json, { ready: false, reason: "shutting down" });
  // Liveness is unaffected.
  const health = await get(`${node.opsUrl}/health`);
  assert.equal(health.status, 200);
  assert.equal(health.json.status, "ok");
  // The main listener is gone: new connections are refused.
  assert.equal(await tryConnect(node.port), "ECONNREFUSED");
  // The WebSocket client was closed with "transport close" and tries to reconnect.
  assert.deepEqual(await rec.disconnected, ["transport close"]);
  await rec.reconnectAttempt;
  // Both sockets were disconnected server-side as "server shutting down"; the node is still up.
  const m = await waitUntil(
    async () => {
      const s = await scrape(node.opsUrl);
      return s.value("ioscale_disconnects_total", { reason: "server shutting down" }) === 2 && s;
    },
    { label: "2 'server shutting down' disconnects" },
  );
  assert.equal(m.value("ioscale_sockets", { namespace: "/" }), 0);
  assert.ok(node.running(), "the shutdown waits for the polling session's final poll");
  assert.deepEqual((await get(`${node.opsUrl}/ready`)).json, { ready: false, reason: "shutting down" });

  // The final poll, over the connection the session already has: what was queued, then close.
  const final = await raw.get();
  const finalAt = Date.now();
  assert.equal(final.status, 200);
  assert.equal(final.reusedSocket, true);
  const packets = raw.packets(final.body);
  t.diagnostic(`final poll: ${JSON.stringify(packets.map((p) => p.slice(0, 60)))}`);
  assert.equal(packets.at(-1), "1", "the close packet comes last");
  const body = packets.slice(0, -1).filter((p) => p !== "6");
  assert.equal(body.length, 3, `connect reply, server-info, message: ${JSON.stringify(packets)}`);
  assert.match(body[0], /^40\{"sid":"[^"]+"\}$/);
  assert.equal(JSON.parse(body[1].slice(2))[0], "server-info");
  assert.deepEqual(JSON.parse(body[2].slice(2)).map((x) => x.message ?? x), ["message", "queued for the poller"]);

  const exit = await exitWithin(node, 5000, finalAt);
  t.diagnostic(`exit ${exit.ms} ms after the final poll, ${Date.now() - sigterm} ms after SIGTERM`);
  assert.equal(exit.code, 0);
  assert.ok(exit.ms < 2000, `exited ${exit.ms} ms after the last session ended`);
});

test("a second SIGTERM during a held shutdown exits at once with a non-zero code", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-shut-twice", "--shutdown-timeout", "30", "--ping-timeout", "20000", ...QUIET]);
  const raw = await rawPolling(h, node.url);
  assert.equal((await raw.post("40")).status, 200);
  await waitUntil(async () => (await scrape(node.url)).value("ioscale_sockets", { namespace: "/" }) === 1, { label: "1 socket" });

  node.signal("SIGTERM");
  await node.waitForLine((l) => /shutting down/.test(l), { label: "shutting down" });
  assert.ok(node.running(), "held open by the polling session");
  const second = Date.now();
  node.signal("SIGTERM");
  const exit = await exitWithin(node, 3000, second);
  t.diagnostic(`second signal: ${JSON.stringify(exit)}`);
  assert.notEqual(exit.code, 0);
  assert.notEqual(exit.code, null, "exited by itself, not killed by the signal");
  assert.ok(exit.ms < 1000, `exited ${exit.ms} ms after the second signal`);
  assert.match(node.stderr(), /second signal/);
  assert.doesNotMatch(node.stderr(), /shut down$/m);
});

test("a WebSocket client that reads slowly gets every message queued before SIGTERM, in order, then the close", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-shut-slow", "--shutdown-timeout", "30", "--ping-timeout", "20000", "--max-buffered-bytes", "200000000", ...QUIET]);
  // A raw Socket.IO client over WebSocket in room "slow".
  const peer = new WsPeer(`ws://127.0.0.1:${node.port}/socket.io/?EIO=4&transport=websocket`);
  h.defer(() => peer.ws.terminate());
  await peer.opened;
  assert.match(await peer.next(), /^0\{/);
  peer.send("40");
  assert.match(await peer.next(), /^40\{/);
  assert.match(await peer.next(), /^42\["server-info"/);
  peer.send('420["join","slow"]');
  assert.equal(await peer.next(), '430[{"ok":true,"room":"slow"}]');
  // From now on it does not read: what the server writes piles up in the TCP buffers, then in the server.
  peer.ws._socket.pause();

  // 200 messages of ~50 kB (10 MB) to the room, far more than the socket buffers hold.
  const sender = h.client(node.url, MODES.websocket);
  await connected(sender);
  const K = 200;
  const pad = "s".repeat(50000);
  for (let i = 0; i < K; i++) sender.emit("message", { message: `slow-${i}-${pad}`, room: "slow" });
  // The ack comes after every message before it was handled.
  assert.deepEqual(await sender.timeout(10000).emitWithAck("join", "marker"), { ok: true, room: "marker" });

  const sigterm = Date.now();
  node.signal("SIGTERM");
  await node.waitForLine((l) => /shutting down/.test(l), { label: "shutting down" });
  peer.ws._socket.resume();

  const seqs = [];
  for (;;) {
    let msg;
    try {
      msg = await peer.next(10000);
    } catch (error) {
      if (peer.closeInfo) break;
      throw error;
    }
    const m = /^42\["message",\{"serverId":"ops-shut-slow","socketId":"[^"]+","message":"slow-(\d+)-s+"/.exec(msg);
    assert.ok(m, `unexpected frame ${String(msg).slice(0, 120)}`);
    seqs.push(Number(m[1]));
  }
  const exit = await exitWithin(node, 30000, sigterm);
  const missing = [];
  for (let i = 0; i < K; i++) if (!seqs.includes(i)) missing.push(i);
  t.diagnostic(`received ${seqs.length}/${K}; missing ${missing.length ? `${missing[0]}..${missing.at(-1)} (${missing.length})` : "none"}; close ${JSON.stringify(peer.closeInfo)}; exit ${JSON.stringify(exit)}`);
  assert.deepEqual(missing, [], "no message queued before the signal is lost");
  assert.deepEqual(seqs, Array.from({ length: K }, (_, i) => i), "in order");
  assert.equal(exit.code, 0);
});
