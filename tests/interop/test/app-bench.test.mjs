// `ioscale bench`: the human report with its verdict line by default, `--json` for scripts, and
// an exit status that fails the run when a client does not connect (3) or a message is lost or
// duplicated (4).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { test } from "node:test";
import { Server } from "socket.io";
import { harness } from "./lib/harness.mjs";
import { freePort } from "./lib/redis.mjs";
import { binaryPath } from "./lib/server.mjs";

/** Runs `ioscale bench args...` to its end: { code, stdout, stderr }. */
function bench(args, timeoutMs = 60000) {
  return new Promise((resolve) => {
    execFile(binaryPath("ioscale"), ["bench", ...args], { timeout: timeoutMs, env: { ...process.env, NO_COLOR: "1" } }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, signal: error?.signal ?? null, stdout, stderr });
    });
  });
}


/**
 * A Node.js Socket.IO server with `ioscale serve`'s `server-info` and `message` relay, whose relay
 * `relay(text)` decides: how many times to send each message to everyone (0 drops it).
 */
async function fakeApp(t, relay) {
  const http = createServer();
  const io = new Server(http);
  io.on("connection", (socket) => {
    socket.emit("server-info", { serverId: "fake", timestamp: new Date().toISOString() });
    socket.on("message", (data) => {
      const out = { serverId: "fake", socketId: socket.id, message: data.message, timestamp: new Date().toISOString() };
      for (let i = 0; i < relay(data.message); i++) io.emit("message", out);
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise((resolve) => io.close(() => resolve())));
  return `http://127.0.0.1:${http.address().port}`;
}

const seqOf = (text) => Number(text.split("|")[2]);

test("a clean run prints the table and a PASS verdict, and exits 0", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "bench-node", "--stats-interval", "0"]);
  const run = await bench(["--url", srv.url, "--clients", "20", "--senders", "2", "--messages", "50", "--interval-us", "0", "--pid", String(srv.proc.pid)]);
  assert.equal(run.code, 0, `exit status; stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
  const lines = run.stdout.trimEnd().split("\n");
  // 20 clients x 2 senders x 50 messages.
  assert.match(lines.at(-1), /^PASS: 2,000 of 2,000 delivered, none lost, duplicated or reordered, p99 [\d.]+ (µs|ms|s)$/);
  for (const [row, value] of [["connected", /20 of 20 in [\d.]+ s/], ["clients per server", /1 server, 20 to 20 each: bench-node 20/], ["delivered", /2,000 of 2,000/], ["lost", /^0$/], ["duplicated", /^0$/], ["reordered", /^0$/], ["latency", /p50 [\d.]+ (µs|ms), p90 .*, p99 .*, max /], [`server pid ${srv.proc.pid}`, /RSS [\d.]+ MiB before/]]) {
    const line = lines.find((l) => l.trimStart().startsWith(`${row} `));
    assert.ok(line, `row "${row}" in:\n${run.stdout}`);
    assert.match(line.trim().slice(row.length).trim(), value, `row "${row}"`);
  }
  assert.doesNotMatch(run.stdout, /[{}]/, "no JSON in the human report");
  // Progress on stderr, for every phase.
  assert.match(run.stderr, /connecting: /);
  assert.match(run.stderr, /sending: /);
  assert.match(run.stderr, /delivering: /);
});

test("--json prints one valid JSON object with the verdict, for the bench/ scripts", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "bench-json", "--stats-interval", "0"]);
  const run = await bench(["--url", srv.url, "--clients", "10", "--messages", "20", "--interval-us", "0", "--json"]);
  assert.equal(run.code, 0, run.stderr);
  const report = JSON.parse(run.stdout);
  assert.equal(report.connected, 10);
  assert.equal(report.expected, 200);
  assert.equal(report.received, 200);
  assert.equal(report.lost, 0);
  assert.deepEqual(report.perServer, { "bench-json": 10 });
  for (const key of ["p50", "p90", "p99", "max"]) assert.equal(typeof report.latencyMicros[key], "number");
  assert.match(report.verdict, /^PASS: 200 of 200 delivered/);
  assert.equal(run.stderr, "", "no progress with --json");
});

test("nothing listening: exit 3 and a verdict saying no client connected, and why", { timeout: 30000 }, async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const run = await bench(["--url", url, "--clients", "5"]);
  assert.equal(run.code, 3, `exit status; stdout:\n${run.stdout}`);
  assert.match(run.stdout.trimEnd().split("\n").at(-1), /^FAIL: no client connected \(0 of 5\): .*refused/i);
  const json = await bench(["--url", url, "--clients", "5", "--json"]);
  assert.equal(json.code, 3);
  assert.equal(JSON.parse(json.stdout).connected, 0);
  assert.match(json.stderr, /^FAIL: no client connected/m, "the verdict on stderr with --json");
});

test("lost messages: exit 4 and a verdict counting them", { timeout: 60000 }, async (t) => {
  // Every tenth message is not relayed: 5 clients x 3 of 30 messages are lost.
  const url = await fakeApp(t, (text) => (seqOf(text) % 10 === 0 ? 0 : 1));
  const run = await bench(["--url", url, "--clients", "5", "--messages", "30", "--interval-us", "0", "--drain-timeout", "3"]);
  assert.equal(run.code, 4, `exit status; stdout:\n${run.stdout}`);
  assert.match(run.stdout.trimEnd().split("\n").at(-1), /^FAIL: 135 of 150 delivered: 15 lost, 0 duplicated, 0 reordered, p99 /);
});

test("duplicated messages: exit 4 and a verdict counting them", { timeout: 60000 }, async (t) => {
  // The fifth message is relayed twice: every client sees it twice.
  const url = await fakeApp(t, (text) => (seqOf(text) === 5 ? 2 : 1));
  const run = await bench(["--url", url, "--clients", "4", "--messages", "10", "--interval-us", "0", "--json"]);
  assert.equal(run.code, 4, `exit status; stdout:\n${run.stdout}`);
  const report = JSON.parse(run.stdout);
  assert.equal(report.duplicates, 4);
  assert.equal(report.lost, 0);
  assert.match(report.verdict, /^FAIL: 40 of 40 delivered: 0 lost, 4 duplicated, 0 reordered/);
});
