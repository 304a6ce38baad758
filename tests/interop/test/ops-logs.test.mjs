// `ioscale serve` logs on stderr: every line carries the server id, in text (`server_id=<id>` right
// after the timestamp) and JSON (one object per line with server_id, level, timestamp, message and
// the fields); with --stats-interval 1 a stats line with connections, sockets and rooms appears.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { ISO_8601, MODES, closeSocket, connected, harness, next } from "./lib/harness.mjs";
import { exitWithin, request, serve, waitUntil, scrape } from "./lib/ops-util.mjs";

const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
const TEXT_LINE = (id) => new RegExp(`^(\\S+) server_id=${id} +(${LEVELS.join("|")}) (.*)$`);

/** Traffic for the log: a WebSocket and a polling client, a room, a message, then they leave. */
async function traffic(h, node) {
  const ws = h.client(node.url, MODES.websocket);
  const polling = h.client(node.url, MODES.polling);
  await Promise.all([connected(ws), connected(polling)]);
  assert.deepEqual(await ws.timeout(5000).emitWithAck("join", "ops-log-room"), { ok: true, room: "ops-log-room" });
  const got = next(polling, "message");
  ws.emit("message", { message: "hello log" });
  await got;
  return [ws, polling];
}

/** SIGTERM, exit 0, then the complete stderr lines (the last line ends with a newline too). */
async function stopAndCollect(node) {
  node.signal("SIGTERM");
  const exit = await exitWithin(node, 10000);
  assert.equal(exit.code, 0);
  const err = node.stderr();
  assert.ok(err.endsWith("\n"), "stderr ends with a complete line");
  return err.slice(0, -1).split("\n");
}

for (const level of ["info", "debug"]) {
  test(`text logs (RUST_LOG=${level}): every stderr line has server_id=<id> after the timestamp; stats lines every second`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const id = `ops-log-text-${level}`;
    const node = await serve(h, ["--server-id", id, "--stats-interval", "1", "--log-format", "text", "--ping-interval", "600000"], { env: { RUST_LOG: level } });
    const clients = await traffic(h, node);
    // 2 connections, 2 sockets, 3 rooms (each socket's own room and ops-log-room).
    const stats = await node.waitForLine((l) => / stats connections=2 sockets=2 rooms=3$/.test(l), { timeoutMs: 5000, label: "stats line 2/2/3" });
    for (const s of clients) closeSocket(s);
    await waitUntil(async () => (await scrape(node.url)).value("ioscale_sockets", { namespace: "/" }) === 0, { label: "0 sockets" });
    await node.waitForLine((l) => / stats connections=0 sockets=0 rooms=0$/.test(l), { from: stats.index + 1, timeoutMs: 5000, label: "stats line 0/0/0" });
    const lines = await stopAndCollect(node);
    t.diagnostic(`${lines.length} lines`);
    assert.ok(lines.length >= 8);
    for (const line of lines) {
      const m = TEXT_LINE(id).exec(line);
      assert.ok(m, `line without "<timestamp> server_id=${id} <LEVEL>": ${JSON.stringify(line)}`);
      assert.match(m[1], ISO_8601);
    }
    for (const expected of [/listening on /, /client connected/, /join-room/, /client disconnected/, /shutting down/, / shut down$/]) {
      assert.ok(lines.some((l) => expected.test(l)), `a line matching ${expected}`);
    }
    assert.equal(node.output().length, node.stderr().length, "nothing on stdout");
  });

  test(`JSON logs (RUST_LOG=${level}): every stderr line is one object with server_id, level, timestamp, message; stats lines with numeric fields`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const id = `ops-log-json-${level}`;
    const node = await serve(h, ["--server-id", id, "--stats-interval", "1", "--log-format", "json", "--ping-interval", "600000"], { env: { RUST_LOG: level } });
    const parse = (l) => {
      try {
        return JSON.parse(l);
      } catch {
        return null;
      }
    };
    const clients = await traffic(h, node);
    await node.waitForLine((l) => {
      const o = parse(l);
      return o?.message === "stats" && o.connections === 2 && o.sockets === 2 && o.rooms === 3;
    }, { timeoutMs: 5000, label: "stats object 2/2/3" });
    for (const s of clients) closeSocket(s);
    const lines = await stopAndCollect(node);
    t.diagnostic(`${lines.length} lines`);
    assert.ok(lines.length >= 8);
    for (const line of lines) {
      const o = parse(line);
      assert.ok(o && typeof o === "object" && !Array.isArray(o), `not a JSON object: ${JSON.stringify(line)}`);
      assert.equal(o.server_id, id, line);
      assert.ok(LEVELS.includes(o.level), `level ${o.level}`);
      assert.match(o.timestamp, ISO_8601);
      assert.equal(typeof o.message, "string", line);
    }
    const objects = lines.map(parse);
    const listening = objects.find((o) => o.message.startsWith("listening on "));
    assert.equal(listening.level, "INFO");
    const connectedLine = objects.find((o) => o.message === "client connected");
    assert.ok(connectedLine && typeof connectedLine.socket_id === "string" && typeof connectedLine.connections === "number", JSON.stringify(connectedLine));
    assert.ok(objects.some((o) => o.message === "join-room" && o.room === "ops-log-room"));
    assert.ok(objects.some((o) => o.message === "shutting down"));
    assert.equal(node.output().length, node.stderr().length, "nothing on stdout");
  });
}

for (const format of ["text", "json"]) {
  test(`${format} logs: a startup failure (ops port taken) is logged with the server id as well`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    // Hold a port so that --ops-port cannot bind it.
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, "0.0.0.0", resolve));
    h.defer(() => new Promise((resolve) => blocker.close(resolve)));
    const id = `ops-log-fail-${format}`;
    const run = h.spawn("ioscale", ["serve", "--port", "0", "--server-id", id, "--ops-port", String(blocker.address().port), "--log-format", format]);
    const exit = await exitWithin(run, 10000);
    assert.notEqual(exit.code, 0, "it cannot serve: non-zero exit");
    const lines = run.stderr().trimEnd().split("\n");
    t.diagnostic(`stderr: ${JSON.stringify(lines)}`);
    assert.ok(lines.some((l) => /cannot listen/.test(l)), "the failure is logged");
    for (const line of lines) {
      if (format === "text") assert.match(line, TEXT_LINE(id), `line without the server id: ${JSON.stringify(line)}`);
      else {
        let o = null;
        try {
          o = JSON.parse(line);
        } catch {}
        assert.equal(o?.server_id, id, `not a JSON line with server_id: ${JSON.stringify(line)}`);
      }
    }
  });
}

test("a page from an origin not in --allowed-origins: 403, logged at INFO with the origin and the hint (the first time, then at powers of two), counted as handshake error 4", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-log-origin", "--allowed-origins", "https://app.example", "--stats-interval", "0"], { env: { RUST_LOG: "info" } });
  const handshake = `${node.url}/socket.io/?EIO=4&transport=polling`;
  const allowed = await request(handshake, { headers: { origin: "https://app.example" } });
  assert.equal(allowed.status, 200);
  // 5 refusals: polling handshakes from a page of another origin, and a WebSocket upgrade.
  for (let i = 0; i < 4; i++) assert.equal((await request(handshake, { headers: { origin: "https://evil.example" } })).status, 403);
  const upgrade = await request(`${node.url}/socket.io/?EIO=4&transport=websocket`, {
    headers: { origin: "https://evil.example", connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
  });
  assert.equal(upgrade.status, 400, "a refused upgrade: 400, as the reference server");
  const m = await waitUntil(async () => {
    const m = await scrape(node.url);
    return m.value("ioscale_handshake_errors_total", { code: "4" }) === 5 && m;
  }, { label: "5 handshake errors with code 4 (Forbidden)" });
  assert.equal(m.value("ioscale_handshake_errors_total", { code: "4" }), 5);
  await node.waitForLine((l) => /origin not allowed/.test(l) && /count=4\b/.test(l), { label: "the 4th refusal's line" });
  const lines = node.lines().filter((l) => /origin not allowed/.test(l));
  t.diagnostic(JSON.stringify(lines));
  // Counts 1, 2 and 4: a flood cannot flood the log.
  assert.deepEqual(lines.map((l) => /count=(\d+)/.exec(l)?.[1]), ["1", "2", "4"]);
  for (const line of lines) {
    assert.match(line, / WARN /);
    assert.match(line, /origin=https:\/\/evil\.example/);
    assert.match(line, /--allowed-origins/);
    assert.match(line, /remote=127\.0\.0\.1:\d+/);
  }
});
