// Engine.IO v4 conformance, over raw HTTP and WebSocket, against the `conformance engineio`
// example: Engine.IO on /engine.io/, echoing every message, pingInterval 300, pingTimeout 200,
// maxPayload 1e6, CORS for any origin. Covers every behaviour of the official Engine.IO v4
// test suite (socketio/socket.io docs/engine.io-protocol/v4-test-suite) plus the byte-exact
// answers of Node's engine.io. One server is shared by the whole file.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startServer } from "./lib/server.mjs";
import { ERR, assertHttpError, defineEngineTransportTests } from "./lib/engine-cases.mjs";
import { PollingSession, WsPeer, delay, pollAnswer, track, wsHandshake, wsUrl } from "./lib/raw.mjs";

const PATH = "/engine.io/";
const T = { timeout: 10_000 };
let server;

before(async () => {
  server = await startServer("conformance", ["engineio"]);
});
after(async () => {
  await server?.stop();
});

/** An upgraded session still echoes. */
async function echoRoundTrip(peer) {
  peer.send("4hello");
  assert.equal(await peer.next(), "4hello");
}

describe("Engine.IO transports", () => {
  defineEngineTransportTests({ getServer: () => server, path: PATH, roundTrip: echoRoundTrip });
});

describe("messages over HTTP long-polling", () => {
  it("sends and receives a payload containing one plain text packet", T, async () => {
    const s = await PollingSession.open(server, PATH);
    const push = await s.post("4hello");
    assert.equal(push.status, 200);
    assert.equal(push.headers["content-type"], "text/html");
    assert.equal(push.body, "ok");
    const poll = await s.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.headers["content-type"], "text/plain; charset=UTF-8");
    assert.equal(poll.body, "4hello");
  });

  it("sends and receives a payload containing several plain text packets separated by \\x1e", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("4test1\x1e4test2\x1e4test3")).body, "ok");
    const poll = await s.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.body, "4test1\x1e4test2\x1e4test3");
  });

  it("sends and receives a payload containing plain text and binary (b<base64>) packets", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("4hello\x1ebAQIDBA==")).body, "ok");
    const poll = await s.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.body, "4hello\x1ebAQIDBA==");
  });

  it("keeps UTF-8 text intact and counts Content-Length in bytes", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("4h\u00e9\u20ac\u{1F600}")).body, "ok");
    const poll = await s.get();
    assert.equal(poll.body, "4h\u00e9\u20ac\u{1F600}");
    assert.equal(poll.headers["content-length"], String(Buffer.byteLength("4h\u00e9\u20ac\u{1F600}")));
  });

  it("delivers a message posted while a GET is pending to that GET", T, async (t) => {
    const s = await PollingSession.open(server, PATH);
    const pending = track(t, s.startGet());
    await delay(50); // let the GET reach the server first
    assert.equal((await s.post("4late")).body, "ok");
    const poll = await pending.response;
    assert.equal(poll.status, 200);
    assert.equal(poll.body, "4late");
  });

  it("closes the session upon an invalid packet format (Node answers the POST 'ok')", T, async () => {
    const s = await PollingSession.open(server, PATH);
    const push = await s.post("abc");
    assert.equal(push.status, 200);
    assert.equal(push.body, "ok");
    assertHttpError(await pollAnswer(s), ERR.sid);
  });

  it("closes the session upon duplicate poll requests (first gets '1', second 400 with empty body)", T, async (t) => {
    const s = await PollingSession.open(server, PATH);
    const first = track(t, s.startGet());
    await delay(20); // the official suite waits 5 ms: the second GET must arrive second
    const second = await s.get();
    assert.equal(second.status, 400);
    assert.equal(second.body, "");
    const poll = await first.response;
    assert.equal(poll.status, 200);
    assert.equal(poll.body, "1");
    assertHttpError(await pollAnswer(s), ERR.sid);
  });

  it("closes the session upon a cancelled polling request", T, async () => {
    const s = await PollingSession.open(server, PATH);
    const pending = s.startGet();
    await delay(20);
    pending.req.destroy();
    await pending.response.catch(() => {});
    await delay(100); // the server notices the closed connection asynchronously
    assertHttpError(await pollAnswer(s), ERR.sid);
  });
});

describe("messages over WebSocket", () => {
  it("sends and receives a plain text packet", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("4hello");
    assert.equal(await peer.next(), "4hello");
  });

  it("sends and receives a binary packet as a raw binary frame", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send(Buffer.from([1, 2, 3, 4]));
    const data = await peer.next();
    assert.ok(Buffer.isBuffer(data), "a binary frame");
    assert.deepEqual([...data], [1, 2, 3, 4]);
  });

  it("echoes a burst of text and binary messages in order", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    const sent = [];
    for (let i = 0; i < 50; i++) {
      const m = i % 5 === 0 ? Buffer.from([i, 255 - i]) : `4msg-${i}`;
      sent.push(m);
      peer.send(m);
    }
    const got = await peer.take(50);
    assert.deepEqual(
      got.map((m) => (Buffer.isBuffer(m) ? `bin:${m.toString("hex")}` : m)),
      sent.map((m) => (Buffer.isBuffer(m) ? `bin:${m.toString("hex")}` : m)),
    );
  });

  it("keeps UTF-8 text intact", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("4h\u00e9\u20ac\u{1F600}");
    assert.equal(await peer.next(), "4h\u00e9\u20ac\u{1F600}");
  });

  it("closes the session upon an invalid packet format", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("abc");
    const info = await peer.waitClose(2000);
    assert.equal(info.code, 1005);
    assert.deepEqual(peer.queue, []);
  });
});

describe("messages during the upgrade", () => {
  it("polling keeps carrying messages until the upgrade packet, then WebSocket does", T, async (t) => {
    const s = await PollingSession.open(server, PATH);
    const peer = track(t, new WsPeer(wsUrl(server, PATH, { EIO: 4, transport: "websocket", sid: s.sid }), { autoPong: true }));
    peer.ignoreNoop = true; // checked by "sends no noop over the WebSocket"
    await peer.opened;
    peer.send("2probe");
    assert.equal(await peer.next(), "3probe");
    assert.equal((await s.post("4before")).body, "ok");
    // the poll after the probe carries the echo; noops the server adds around it do not matter
    // (Node sends either "4before" or, if a noop went first, "6" and then "4before")
    let packets = (await s.get()).body.split("\x1e").filter((p) => p !== "6");
    if (packets.length === 0) packets = (await s.get()).body.split("\x1e").filter((p) => p !== "6");
    assert.deepEqual(packets, ["4before"]);
    peer.send("5");
    peer.send("4after");
    assert.equal(await peer.next(), "4after");
  });
});
