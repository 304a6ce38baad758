// `ioscale serve` /metrics values following real traffic from the official client: connections by
// transport, sockets, rooms, disconnect reasons, Engine.IO packets and bytes in and out, broadcasts,
// the fan-out histogram, handshake errors, and packets dropped for a slow consumer.
//
// Heartbeats would add packets at random moments: every node here runs with a ping interval far
// beyond the test's length, so the only packets are the ones the test causes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, closeSocket, collect, connected, harness, next } from "./lib/harness.mjs";
import { deltas, get, rawPolling, scrape, serve, waitUntil } from "./lib/ops-util.mjs";

const QUIET = ["--ping-interval", "600000", "--ping-timeout", "600000", "--stats-interval", "0"];

const connections = (m) => ({
  polling: m.value("ioscale_connections", { transport: "polling" }),
  websocket: m.value("ioscale_connections", { transport: "websocket" }),
});

/** Records the byte length of every Engine.IO message frame the client receives, and how many polling responses carried them. */
function frameMeter(socket) {
  const meter = { frames: 0, bytes: 0, responses: 0 };
  socket.io.engine.on("packet", (packet) => {
    if (packet.type !== "message") return;
    meter.frames++;
    meter.bytes += Buffer.byteLength(`4${packet.data}`);
  });
  socket.io.engine.transport.on("pollComplete", () => meter.responses++);
  return meter;
}

test("metrics follow traffic: 50 clients, 20 disconnects, N messages, a room, handshake errors", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-met", ...QUIET]);
  const m0 = await scrape(node.url);
  assert.deepEqual(connections(m0), { polling: 0, websocket: 0 });

  // 50 clients: even ones WebSocket, odd ones polling.
  const clients = [];
  const infos = [];
  for (let i = 0; i < 50; i++) {
    const s = h.client(node.url, i % 2 ? MODES.polling : MODES.websocket);
    infos.push(next(s, "server-info", { timeoutMs: 15000 }));
    clients.push(s);
  }
  await Promise.all(clients.map((s) => connected(s, 15000)));
  await Promise.all(infos);
  const m1 = await scrape(node.url);
  assert.deepEqual(connections(m1), { polling: 25, websocket: 25 });
  assert.equal(m1.value("ioscale_sockets", { namespace: "/" }), 50);
  assert.equal(m1.value("ioscale_rooms"), 50, "every socket's own room is counted");
  const connectDeltas = deltas(m0, m1);
  t.diagnostic(`connecting 50 clients: ${JSON.stringify(connectDeltas)}`);
  // Each client sent one packet (its namespace CONNECT, "40").
  assert.equal(connectDeltas.ioscale_packets_received_total, 50);
  // Each client was written the Engine.IO open packet ("0{...}"), its CONNECT reply ("40{sid}")
  // and `server-info`.
  assert.equal(connectDeltas.ioscale_packets_sent_total, 150);
  assert.equal(m1.value("ioscale_handshake_errors_total", { code: "0" }), 0);

  // 20 clients leave (10 of each transport) with socket.disconnect().
  const leaving = clients.splice(0, 20);
  for (const s of leaving) closeSocket(s);
  const m2 = await waitUntil(
    async () => {
      const m = await scrape(node.url);
      const c = connections(m);
      return m.value("ioscale_sockets", { namespace: "/" }) === 30 && c.polling + c.websocket === 30 && m;
    },
    { label: "30 sockets and 30 connections after 20 disconnects" },
  );
  assert.deepEqual(connections(m2), { polling: 15, websocket: 15 });
  assert.equal(m2.value("ioscale_rooms"), 30);
  const leaveDeltas = deltas(m1, m2);
  t.diagnostic(`20 disconnects: ${JSON.stringify(leaveDeltas)}`);
  const disconnects = Object.fromEntries(Object.entries(leaveDeltas).filter(([k]) => k.startsWith("ioscale_disconnects_total")));
  assert.deepEqual(disconnects, { 'ioscale_disconnects_total{reason="client namespace disconnect"}': 20 });

  // A named room adds one room.
  const [sender, ...others] = clients; // sender: a WebSocket client (index 20 was even)
  assert.equal(sender.io.engine.transport.name, "websocket");
  assert.deepEqual(await others[0].timeout(5000).emitWithAck("join", "ops-room"), { ok: true, room: "ops-room" });
  assert.equal((await scrape(node.url)).value("ioscale_rooms"), 31);

  // N messages from one WebSocket client, broadcast to all 30.
  const N = 25;
  const sentFrames = [];
  sender.io.engine.on("packetCreate", (p) => p.type === "message" && sentFrames.push(`4${p.data}`));
  const meters = clients.map(frameMeter);
  const received = clients.map((s) => collect(s, "message", N, { timeoutMs: 15000 }));
  const m3 = await scrape(node.url);
  const texts = Array.from({ length: N }, (_, i) => `ops-${i} naïve ✓ ${"x".repeat(i)}`);
  for (const message of texts) sender.emit("message", { message });
  const got = await Promise.all(received);
  for (const list of got) assert.deepEqual(list.map((m) => m.message), texts);
  const m4 = await scrape(node.url);
  const msgDeltas = deltas(m3, m4);
  t.diagnostic(`${N} messages to 30 clients: ${JSON.stringify(msgDeltas)}`);

  assert.equal(sentFrames.length, N);
  assert.deepEqual(sentFrames, texts.map((message) => `42${JSON.stringify(["message", { message }])}`));
  const sentBytes = sentFrames.reduce((sum, f) => sum + Buffer.byteLength(f), 0);
  assert.equal(msgDeltas.ioscale_packets_received_total, N);
  assert.equal(msgDeltas.ioscale_bytes_received_total, sentBytes);
  assert.equal(msgDeltas['ioscale_broadcasts_total{scope="local"}'], N);
  assert.equal(msgDeltas['ioscale_broadcasts_total{scope="cluster"}'], undefined);
  assert.equal(msgDeltas.ioscale_broadcast_fanout_seconds_count, N);
  assert.equal(msgDeltas['ioscale_broadcast_fanout_seconds_bucket{le="+Inf"}'], N);
  // Histogram buckets are cumulative: non-decreasing, the +Inf one equal to the count.
  const buckets = [...m4.samples].filter(([k]) => k.startsWith("ioscale_broadcast_fanout_seconds_bucket"));
  assert.equal(buckets.at(-1)[0], 'ioscale_broadcast_fanout_seconds_bucket{le="+Inf"}');
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `bucket ${buckets[i][0]} >= ${buckets[i - 1][0]}`);
  assert.equal(buckets.at(-1)[1], m4.value("ioscale_broadcast_fanout_seconds_count"));
  assert.ok(m4.value("ioscale_broadcast_fanout_seconds_sum") > 0);
  assert.equal(msgDeltas.ioscale_packets_sent_total, N * 30);
  // Bytes written: every frame each client got, plus one record separator between frames of one
  // polling response (a response with k frames is k frames and k - 1 separators).
  const framesBytes = meters.reduce((sum, m) => sum + m.bytes, 0);
  const separators = meters.reduce((sum, m) => sum + (m.responses ? m.frames - m.responses : 0), 0);
  assert.equal(meters.reduce((sum, m) => sum + m.frames, 0), N * 30);
  assert.equal(msgDeltas.ioscale_bytes_sent_total, framesBytes + separators);
  for (const key of Object.keys(msgDeltas)) {
    assert.ok(!key.startsWith("ioscale_disconnects") && !key.startsWith("ioscale_handshake") && !key.startsWith("ioscale_dropped"), `unexpected change ${key}`);
  }

  // One message from a polling client: one POST carrying exactly that packet.
  const pollingSender = others.find((s) => s.io.engine.transport.name === "polling");
  const pollFrames = [];
  pollingSender.io.engine.on("packetCreate", (p) => p.type === "message" && pollFrames.push(`4${p.data}`));
  const again = clients.map((s) => next(s, "message", { filter: (m) => m.message === "from polling ✓" }));
  const m5 = await scrape(node.url);
  pollingSender.emit("message", { message: "from polling ✓" });
  await Promise.all(again);
  const m6 = await scrape(node.url);
  const pollDeltas = deltas(m5, m6);
  assert.equal(pollDeltas.ioscale_packets_received_total, 1);
  assert.equal(pollDeltas.ioscale_bytes_received_total, Buffer.byteLength(pollFrames[0]));
  assert.equal(pollDeltas.ioscale_packets_sent_total, 30);
  assert.equal(pollDeltas['ioscale_broadcasts_total{scope="local"}'], 1);

  // Refused Engine.IO requests, counted by their error code.
  const refused = [
    ["/socket.io/?EIO=4&transport=unknown", 0, "Transport unknown"],
    ["/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", 1, "Session ID unknown"],
    ["/socket.io/?EIO=3&transport=polling", 5, "Unsupported protocol version"],
  ];
  for (const [p, code, message] of refused) {
    const before = await scrape(node.url);
    const res = await get(`${node.url}${p}`);
    assert.equal(res.status, 400, `${p}: ${res.body}`);
    assert.deepEqual(res.json, { code, message });
    const d = deltas(before, await scrape(node.url));
    const errors = Object.fromEntries(Object.entries(d).filter(([k]) => k.startsWith("ioscale_handshake_errors")));
    assert.deepEqual(errors, { [`ioscale_handshake_errors_total{code="${code}"}`]: 1 }, p);
    // A refused request creates no connection.
    assert.deepEqual(connections(await scrape(node.url)), { polling: 15, websocket: 15 });
  }
});

test("metrics: a client that does not read overflows its queue: every packet it lost counts in dropped_packets{slow_consumer}, it is disconnected", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-slow", "--max-buffered-bytes", "1024", ...QUIET]);
  const sender = h.client(node.url, MODES.websocket);
  await connected(sender);
  // A raw polling session that joins "/" and never polls: its CONNECT reply and server-info stay queued.
  const raw = await rawPolling(h, node.url);
  assert.equal((await raw.post("40")).status, 200);
  await waitUntil(async () => (await scrape(node.url)).value("ioscale_sockets", { namespace: "/" }) === 2, { label: "2 sockets" });
  const m0 = await scrape(node.url);

  // Each message is ~600 bytes: the first fits in the non-reading client's 1024-byte queue, the
  // second does not. The sender gets its own copy each time before the next is sent, so its queue
  // never holds more than one.
  for (let i = 0; i < 3; i++) {
    const echo = next(sender, "message");
    sender.emit("message", { message: `big-${i}-${"y".repeat(550)}` });
    assert.match((await echo).message, new RegExp(`^big-${i}-`));
  }
  const m1 = await waitUntil(
    async () => {
      const m = await scrape(node.url);
      return m.value("ioscale_sockets", { namespace: "/" }) === 1 && m;
    },
    { label: "the slow consumer's socket gone" },
  );
  const d = deltas(m0, m1);
  t.diagnostic(`slow consumer: ${JSON.stringify(d)}`);
  // Lost to the cut client: what sat in its queue (CONNECT reply, server-info, big-0), the packet
  // that overflowed it (big-1), and big-2 if it was broadcast before the socket left its rooms.
  const lost = d['ioscale_dropped_packets_total{reason="slow_consumer"}'];
  assert.ok(lost === 4 || lost === 5, `slow_consumer drops: ${lost}`);
  assert.equal(d['ioscale_dropped_packets_total{reason="volatile"}'], undefined);
  // The application sees a transport error (as Socket.IO reports a failed transport).
  assert.equal(d['ioscale_disconnects_total{reason="transport error"}'], 1);
  assert.deepEqual(connections(m1), { polling: 0, websocket: 1 });
  assert.ok(sender.connected, "the reading client stays connected");
});
