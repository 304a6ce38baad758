// Hostile clients at the HTTP layer of `ioscale serve`: too many connections (from the node's view
// and from one IP), overlong request targets, oversized headers and slowloris. Each refusal is
// checked on the wire, in the metric that counts it and in the `limit reached` log lines, and a
// client connected before keeps working (a round trip through the application).
import assert from "node:assert/strict";
import { test } from "node:test";
import { closeSocket, connectError, harness } from "./lib/harness.mjs";
import {
  allRejections,
  assertAlive,
  assertLimitLogged,
  httpRequest,
  metrics,
  openConnections,
  pollingHandshake,
  pollingUrl,
  rawTcp,
  rejections,
  serveApp,
  waitUntil,
  websocketUrl,
  within,
  witness,
  wsAttempt,
} from "./lib/hostile-util.mjs";

const T = { timeout: 20_000 };

test("--max-connections: handshakes past the limit get 503 (polling) or a refused upgrade; a freed slot is usable again", T, async (t) => {
  const h = harness(t);
  const app = await serveApp(h, ["--max-connections", "3"]);
  const w = await witness(h, app); // session 1
  const a = await pollingHandshake(app); // session 2
  const b = await pollingHandshake(app); // session 3
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);

  const refused = await pollingHandshake(app);
  assert.equal(refused.status, 503, `polling handshake past the limit: ${refused.status} ${refused.body}`);
  assert.equal(refused.body, "");
  const upgrade = await wsAttempt(h, websocketUrl(app));
  assert.equal(upgrade.status, 503, `WebSocket handshake past the limit: ${JSON.stringify(upgrade)}`);
  // The official client reports it as a connect_error.
  const client = h.client(app.url, { transports: ["websocket"] });
  const error = await connectError(client, 5000);
  assert.equal(error.message, "websocket error");
  closeSocket(client);

  let m = await metrics(app);
  assert.equal(rejections(m, "connections"), 3);
  assert.equal(openConnections(m), 3, "the refused handshakes opened nothing");
  await assertLimitLogged(app, "connections", 3);
  await assertAlive(w);

  // A client that leaves frees its slot: the next handshake is admitted. (The session is forgotten
  // right after it is closed; a handshake racing that is refused, and counted.)
  const close = await httpRequest(pollingUrl(app, `&sid=${a.sid}`), { method: "POST", body: "1" });
  assert.equal(close.status, 200);
  let raced = 0;
  const again = await waitUntil(
    async () => {
      const res = await pollingHandshake(app);
      if (res.status === 503) raced++;
      return res.status === 200 && res;
    },
    { timeoutMs: 3000, label: "a handshake admitted after a client left" },
  );
  assert.ok(again.sid);
  assert.equal((await pollingHandshake(app)).status, 503, "the freed slot is taken again");
  m = await metrics(app);
  assert.equal(rejections(m, "connections"), 4 + raced);
  assert.deepEqual(allRejections(m), { connections: 4 + raced });
  await assertAlive(w);
});

test("--max-connections-per-ip: the third connection from one IP gets 429; other IPs are admitted", T, async (t) => {
  const h = harness(t);
  const app = await serveApp(h, ["--max-connections-per-ip", "2"]);
  const w = await witness(h, app); // from 127.0.0.1
  const hostile = "127.0.0.2";
  for (let i = 0; i < 2; i++) {
    const ok = await pollingHandshake(app, { localAddress: hostile });
    assert.equal(ok.status, 200, `connection ${i + 1} from ${hostile}: ${ok.status}`);
  }
  const refused = await pollingHandshake(app, { localAddress: hostile });
  assert.equal(refused.status, 429, `third polling handshake from ${hostile}: ${refused.status} ${refused.body}`);
  assert.equal(refused.body, "");
  const upgrade = await wsAttempt(h, websocketUrl(app), { localAddress: hostile });
  assert.equal(upgrade.status, 429, `third connection (WebSocket) from ${hostile}: ${JSON.stringify(upgrade)}`);

  // Another address is another IP, with its own budget.
  const other = await wsAttempt(h, websocketUrl(app), { localAddress: "127.0.0.3" });
  assert.match(other.open ?? "", /^0\{"sid":/, `WebSocket from 127.0.0.3: ${JSON.stringify(other.status ?? other.open)}`);
  assert.equal((await pollingHandshake(app, { localAddress: "127.0.0.3" })).status, 200);
  assert.equal((await pollingHandshake(app, { localAddress: "127.0.0.3" })).status, 429, "127.0.0.3 has two connections now");

  const m = await metrics(app);
  assert.equal(rejections(m, "connections_per_ip"), 3);
  assert.deepEqual(allRejections(m), { connections_per_ip: 3 });
  assert.equal(openConnections(m), 5, "witness + 2 from 127.0.0.2 + 2 from 127.0.0.3");
  await assertLimitLogged(app, "connections_per_ip", 3);
  await assertAlive(w);
});

test("--max-url-length: a request target one byte over gets 414 (polling and upgrade); one of exactly the limit is served", T, async (t) => {
  const h = harness(t);
  const LIMIT = 1024;
  const app = await serveApp(h, ["--max-url-length", String(LIMIT)]);
  const w = await witness(h, app);
  const base = "/socket.io/?EIO=4&transport=polling&pad=";
  const exact = base + "a".repeat(LIMIT - base.length);
  assert.equal(exact.length, LIMIT);
  const ok = await httpRequest(app.url + exact);
  assert.equal(ok.status, 200, `target of exactly ${LIMIT} bytes: ${ok.status} ${ok.body}`);
  assert.match(ok.body, /^0\{"sid":/);

  const over = await httpRequest(app.url + exact + "a");
  assert.equal(over.status, 414, `target of ${LIMIT + 1} bytes: ${over.status} ${over.body}`);
  assert.equal(over.body, "");
  const wsTarget = "/socket.io/?EIO=4&transport=websocket&pad=";
  const upgrade = await wsAttempt(h, app.url.replace(/^http/, "ws") + wsTarget + "b".repeat(LIMIT + 1 - wsTarget.length));
  assert.equal(upgrade.status, 414, `WebSocket handshake with a ${LIMIT + 1}-byte target: ${JSON.stringify(upgrade)}`);
  // Much longer (but under hyper's own bound): the same answer.
  assert.equal((await httpRequest(app.url + base + "c".repeat(60_000))).status, 414);

  const m = await metrics(app);
  assert.equal(rejections(m, "url_length"), 3);
  assert.deepEqual(allRejections(m), { url_length: 3 });
  assert.equal(openConnections(m), 2, "the witness and the exact-length handshake");
  await assertLimitLogged(app, "url_length", 3);
  await assertAlive(w);
});

test("--max-header-bytes: request headers over the limit get 431 and the connection is closed; under it they are served", T, async (t) => {
  const h = harness(t);
  const app = await serveApp(h, ["--max-header-bytes", "16384"]);
  const w = await witness(h, app);
  const head = (pad, target = "/socket.io/?EIO=4&transport=polling") =>
    `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ${"a".repeat(pad)}\r\n\r\n`;

  const small = rawTcp(h, app);
  small.write(head(12_000));
  const smallEnd = await within(small.closed, 5000, "the answer to 12 KB of headers");
  assert.match(smallEnd.data, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n0\{"sid":/, "12 KB of headers (under 16 KiB) are served");

  for (const [label, pad, target] of [
    ["a 20 KB header on a polling handshake", 20_000],
    ["a 20 KB header on a WebSocket handshake", 20_000, "/socket.io/?EIO=4&transport=websocket"],
    ["100 KB of headers", 100_000],
  ]) {
    const big = rawTcp(h, app);
    const sent = await big.connected.then(() => Date.now());
    big.write(target ? head(pad, target).replace("\r\n\r\n", "\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").replace("Connection: close", "Connection: Upgrade") : head(pad));
    const end = await within(big.closed, 5000, `the server closing the connection after ${label}`);
    t.diagnostic(`${label}: answer ${JSON.stringify(end.data.split("\r\n")[0])}, client error ${end.error ?? "none"}, closed after ${end.at - sent} ms`);
    assert.match(end.data, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/, `${label}: answer ${JSON.stringify(end.data.slice(0, 80))} (error ${end.error})`);
    assert.ok(end.at - sent < 2000, `${label}: closed after ${end.at - sent} ms, not at once`);
  }

  // The server counts a refusal as it closes the connection: the client may see the close first.
  const m = await waitUntil(async () => {
    const m = await metrics(app);
    return rejections(m, "header_bytes") >= 3 && m;
  }, { timeoutMs: 3000, label: "3 header_bytes refusals counted" });
  assert.equal(openConnections(m), 2, "the witness and the 12 KB handshake: the refused requests opened nothing");
  assert.deepEqual(allRejections(m), { header_bytes: 3 });
  await assertLimitLogged(app, "header_bytes", 3);
  await assertAlive(w);
});

test("--header-read-timeout: slowloris clients (partial headers, then nothing or a trickle) are disconnected after the timeout", T, async (t) => {
  const h = harness(t);
  const TIMEOUT = 500;
  const app = await serveApp(h, ["--header-read-timeout", String(TIMEOUT)]);
  const w = await witness(h, app);
  const start = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n";

  // 20 clients send the start of a request, then nothing.
  const silent = Array.from({ length: 20 }, () => rawTcp(h, app));
  await Promise.all(silent.map((c) => c.connected));
  const sentAt = Date.now();
  for (const c of silent) c.write(start);
  // 5 clients keep sending a header line every 100 ms and never end the headers.
  const trickling = Array.from({ length: 5 }, () => rawTcp(h, app));
  await Promise.all(trickling.map((c) => c.connected));
  const trickleAt = Date.now();
  for (const c of trickling) c.write(start);
  let line = 0;
  const trickle = setInterval(() => {
    line++;
    for (const c of trickling) c.write(`X-Slow-${line}: ${"z".repeat(10)}\r\n`);
  }, 100);
  h.defer(() => clearInterval(trickle));
  // A client whose headers arrive in pieces well within the timeout is served.
  const patient = rawTcp(h, app);
  await patient.connected;
  patient.write(start);
  const rest = (async () => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    patient.write("Connection: close\r\n");
    await new Promise((resolve) => setTimeout(resolve, 100));
    patient.write("\r\n");
  })();

  // While they are pending, the witness works.
  await assertAlive(w, "the witness while slowloris connections are pending");

  const ends = await within(Promise.all(silent.map((c) => c.closed)), 5000, "the silent slowloris connections to be closed");
  for (const end of ends) {
    assert.equal(end.data, "", "nothing is answered to a slowloris client");
    const after = end.at - sentAt;
    assert.ok(after >= TIMEOUT - 100 && after < TIMEOUT + 2000, `silent client closed ${after} ms after its partial headers (timeout ${TIMEOUT})`);
  }
  const trickled = await within(Promise.all(trickling.map((c) => c.closed)), 5000, "the trickling slowloris connections to be closed");
  clearInterval(trickle);
  for (const end of trickled) {
    assert.equal(end.data, "");
    const after = end.at - trickleAt;
    assert.ok(after >= TIMEOUT - 100 && after < TIMEOUT + 2000, `trickling client closed ${after} ms after it began (timeout ${TIMEOUT}), though it kept sending`);
  }
  await rest;
  const served = await within(patient.closed, 5000, "the patient client's answer");
  assert.match(served.data, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n0\{"sid":/, "headers sent in pieces within the timeout are served");

  const m = await waitUntil(async () => {
    const m = await metrics(app);
    return rejections(m, "header_read_timeout") >= 25 && m;
  }, { timeoutMs: 3000, label: "25 header_read_timeout refusals counted" });
  assert.equal(openConnections(m), 2, "the witness and the patient client");
  // The patient client was served: it is not a refusal.
  assert.deepEqual(allRejections(m), { header_read_timeout: 25 });
  await assertLimitLogged(app, "header_read_timeout", 25);
  await assertAlive(w);
});
