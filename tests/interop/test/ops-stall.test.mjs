// A node whose process stalls longer than --header-read-timeout (a VM pause, a swap storm; here
// SIGSTOP, then SIGCONT) serves the requests that arrived during the stall: the header timers that
// expired meanwhile do not cut connections whose request is already in the socket buffer.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { scrape, serve } from "./lib/ops-util.mjs";

const TIMEOUT_MS = 2000;
const REQUEST = "GET /health HTTP/1.1\r\nHost: stall\r\n\r\n";
const LAST_REQUEST = "GET /health HTTP/1.1\r\nHost: stall\r\nConnection: close\r\n\r\n";

/** A raw TCP connection: write(), responses() (complete HTTP responses so far), ended: Promise<{ error }>. */
function rawConnection(h, port) {
  const socket = net.connect({ port, host: "127.0.0.1" });
  h.defer(() => socket.destroy());
  let data = "";
  socket.on("data", (chunk) => (data += chunk.toString("latin1")));
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const ended = new Promise((resolve) => {
    socket.on("error", (error) => resolve({ error: error.code ?? error.message }));
    socket.on("close", () => resolve({ error: null }));
  });
  return {
    connected,
    ended,
    write: (text) => socket.write(text),
    responses: () => data.split("HTTP/1.1 ").slice(1).map((r) => Number(r.slice(0, 3))),
  };
}

test("a stall of the node longer than --header-read-timeout: every request sent during the stall is answered (keep-alive, fresh and new connections), nothing counted as a slowloris", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-stall", "--header-read-timeout", String(TIMEOUT_MS), "--stats-interval", "0"]);
  // Kept-alive connections that had a request answered (the header timer runs while they wait for
  // the next one), and fresh connections that sent nothing yet (it runs since their accept).
  const kept = Array.from({ length: 20 }, () => rawConnection(h, node.port));
  const fresh = Array.from({ length: 10 }, () => rawConnection(h, node.port));
  await Promise.all([...kept, ...fresh].map((c) => c.connected));
  for (const c of kept) c.write(REQUEST);
  await Promise.all(
    kept.map(async (c) => {
      while (c.responses().length < 1) await new Promise((resolve) => setTimeout(resolve, 10));
    }),
  );

  node.signal("SIGSTOP");
  h.defer(() => node.signal("SIGCONT"));
  const stoppedAt = Date.now();
  for (const c of [...kept, ...fresh]) c.write(LAST_REQUEST);
  // Connections made during the stall wait in the accept queue.
  const late = Array.from({ length: 5 }, () => rawConnection(h, node.port));
  await Promise.all(late.map((c) => c.connected));
  for (const c of late) c.write(LAST_REQUEST);
  // The stall itself: real time has to pass, past the timeout (nothing to await in a stopped process).
  await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 1500));
  node.signal("SIGCONT");
  t.diagnostic(`stalled ${Date.now() - stoppedAt} ms (--header-read-timeout ${TIMEOUT_MS} ms)`);

  const all = [...kept.map((c) => ["kept-alive", c]), ...fresh.map((c) => ["fresh", c]), ...late.map((c) => ["new", c])];
  const ends = await Promise.all(all.map(([, c]) => c.ended));
  const outcome = {};
  for (const [i, [kind, c]] of all.entries()) {
    const expected = kind === "kept-alive" ? 2 : 1;
    const answered = c.responses().filter((status) => status === 200).length === expected;
    const key = `${kind} ${answered ? "answered" : `not answered (${ends[i].error ?? "closed"})`}`;
    outcome[key] = (outcome[key] ?? 0) + 1;
  }
  t.diagnostic(JSON.stringify(outcome));
  assert.deepEqual(outcome, { "kept-alive answered": 20, "fresh answered": 10, "new answered": 5 }, "every request sent during the stall is answered");
  const m = await scrape(node.url);
  assert.equal(m.value("ioscale_limit_rejections_total", { limit: "header_read_timeout" }), 0, "no request counted as a slowloris");
});
