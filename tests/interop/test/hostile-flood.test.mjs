// Hostile clients that cost the server memory: one that never reads while the server broadcasts
// (bounded by --max-buffered-bytes, then disconnected as a slow consumer) and a flood of polling
// handshakes that never join a namespace (closed after --connect-timeout). The server's memory is
// read from /proc/<pid>/status; a client connected before keeps working.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import { connected, harness } from "./lib/harness.mjs";
import { sioConnect } from "./lib/raw.mjs";
import {
  allRejections,
  assertAlive,
  memoryKiB,
  metrics,
  openConnections,
  outputLines,
  pool,
  serveApp,
  statsConnections,
  waitUntil,
  within,
  witness,
} from "./lib/hostile-util.mjs";

const MiB = 1024;

test("a client that never reads while the server broadcasts 32 MB: memory stays bounded, it is dropped as a slow consumer", { timeout: 30_000 }, async (t) => {
  const h = harness(t);
  const BOUND = 262_144;
  const app = await serveApp(h, ["--max-buffered-bytes", String(BOUND)]);
  const w = await witness(h, app);
  const sender = h.client(app.url, { transports: ["websocket"] });
  await connected(sender);
  // The hostile client joins "/" and stops reading: its TCP socket is paused, so the kernel
  // buffers fill up and then the server's queue for it.
  const slow = await sioConnect(app);
  h.defer(() => slow.peer.close());
  slow.peer.ws._socket.pause();
  await waitUntil(async () => (await metrics(app)).value("ioscale_sockets", { namespace: "/" }) === 3, { label: "3 sockets" });
  const m0 = await metrics(app);
  const before = memoryKiB(app.proc.pid);

  // 500 broadcasts of 64 KiB (32 MiB to every client). The sender waits for its own copy and the
  // witness's before the next, so the reading clients never have more than one queued.
  const body = "x".repeat(64 * 1024);
  const MESSAGES = 500;
  let witnessed = 0;
  const onWitness = (m) => {
    if (m?.message?.startsWith("flood-")) witnessed++;
  };
  w.on("message", onWitness);
  h.defer(() => w.off("message", onWitness));
  let peakKiB = before.rss;
  let slowGoneAt;
  for (let i = 0; i < MESSAGES; i++) {
    const text = `flood-${i}-${body}`;
    const mine = new Promise((resolve) => {
      const on = (m) => {
        if (m?.message === text) {
          sender.off("message", on);
          resolve();
        }
      };
      sender.on("message", on);
    });
    const theirs = new Promise((resolve) => {
      const on = (m) => {
        if (m?.message === text) {
          w.off("message", on);
          resolve();
        }
      };
      w.on("message", on);
    });
    sender.emit("message", { message: text });
    await within(Promise.all([mine, theirs]), 5000, `broadcast ${i} to the sender and the witness`);
    if (i % 25 === 24) {
      peakKiB = Math.max(peakKiB, memoryKiB(app.proc.pid).rss);
      if (slowGoneAt === undefined && (await metrics(app)).value("ioscale_sockets", { namespace: "/" }) === 2) slowGoneAt = i;
    }
  }
  const after = memoryKiB(app.proc.pid);
  peakKiB = Math.max(peakKiB, after.hwm);
  t.diagnostic(`server RSS ${before.rss} KiB before, peak ${peakKiB} KiB, ${after.rss} KiB after; slow consumer gone by broadcast ${slowGoneAt}`);
  assert.equal(witnessed, MESSAGES, "the witness got every broadcast");
  assert.ok(slowGoneAt !== undefined, "the client that never reads was disconnected during the flood");

  const m1 = await metrics(app);
  assert.ok(m1.value("ioscale_dropped_packets_total", { reason: "slow_consumer" }) >= 1, "packets dropped for the slow consumer are counted");
  assert.equal(m1.value("ioscale_disconnects_total", { reason: "transport error" }) - m0.value("ioscale_disconnects_total", { reason: "transport error" }), 1);
  assert.equal(m1.value("ioscale_sockets", { namespace: "/" }), 2);
  assert.equal(openConnections(m1), 2);
  assert.deepEqual(allRejections(m1), {});
  // Without a bound the server would hold most of the 32 MiB for it (the kernel buffers take a
  // few MiB); with it, the growth stays far below that.
  assert.ok(peakKiB - before.rss < 16 * MiB, `server RSS grew by ${peakKiB - before.rss} KiB during a 32 MiB flood to a client that never reads`);

  // Once it reads again, it finds its connection closed.
  slow.peer.ws._socket.resume();
  const closed = await slow.peer.waitClose(10_000);
  t.diagnostic(`the slow consumer's WebSocket closed with ${closed.code} after ${slow.peer.queue.length} messages`);
  await assertAlive(w);
  await assertAlive(sender, "the sender keeps working");
});

test("a flood of 2,000 polling handshakes that never join: closed after --connect-timeout, forgotten, their memory reused", { timeout: 40_000 }, async (t) => {
  const h = harness(t);
  const FLOOD = 2000;
  // --ping-timeout bounds how long a session closed by the server waits for the poll that would
  // collect its close (Node's closeTimeout): the sessions are forgotten 1 s after the timeout.
  // --max-connections is exactly witness + flood: the second flood is admitted only if the first
  // one's sessions were really forgotten. The stats line (every second) shows the session table.
  const app = await serveApp(h, [
    "--connect-timeout", "500",
    "--ping-timeout", "1000",
    "--max-connections", String(FLOOD + 1),
    "--stats-interval", "1",
  ]);
  const w = await witness(h, app);
  await assertAlive(w);
  const baseline = memoryKiB(app.proc.pid).rss;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  h.defer(() => agent.destroy());
  const handshake = () =>
    new Promise((resolve, reject) => {
      const req = http.get(`${app.url}/socket.io/?EIO=4&transport=polling`, { agent }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
        res.on("error", reject);
      });
      req.on("error", reject);
    });

  const rss = [];
  for (let round = 1; round <= 2; round++) {
    const started = Date.now();
    const statuses = await pool(FLOOD, 64, () => handshake());
    const floodMs = Date.now() - started;
    const counts = {};
    for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
    assert.deepEqual(counts, { 200: FLOOD }, `round ${round}: every handshake of the flood is admitted`);
    const peak = memoryKiB(app.proc.pid).rss;
    // All closed by the connect timeout ...
    await waitUntil(async () => openConnections(await metrics(app)) === 1, { timeoutMs: 5000, label: `round ${round}: only the witness connected` });
    const closedMs = Date.now() - started;
    await assertAlive(w, `the witness after flood ${round}`);
    // ... and then forgotten.
    const mark = outputLines(app);
    await waitUntil(() => statsConnections(app, mark).at(-1) === 1, { timeoutMs: 5000, label: `round ${round}: a stats line with connections=1` });
    const forgottenMs = Date.now() - started;
    const settled = memoryKiB(app.proc.pid).rss;
    rss.push(settled);
    t.diagnostic(`round ${round}: flood ${floodMs} ms, all closed ${closedMs} ms, all forgotten ${forgottenMs} ms after it began; RSS baseline ${baseline} KiB, peak ${peak} KiB, settled ${settled} KiB`);
  }
  agent.destroy();
  const m = await metrics(app);
  assert.deepEqual(allRejections(m), {}, "no handshake was refused");
  // 2,000 sessions cost a few MiB while they live; the allocator may keep that memory, but a second
  // flood reuses it: no growth per flood.
  assert.ok(rss[0] - baseline < 16 * MiB, `RSS ${rss[0] - baseline} KiB over the baseline after the first flood`);
  assert.ok(rss[1] - rss[0] < 3 * MiB, `RSS grew by ${rss[1] - rss[0]} KiB more with the second flood (a leak per session?)`);
  await assertAlive(w);
});
