// Socket.IO v5 conformance, over raw HTTP and WebSocket, against the `conformance socketio`
// example: namespaces "/" and "/custom" on /socket.io/, `auth` emitted on connection,
// `message` -> `message-back`, `message-with-ack` acked with the same args, pingInterval 300,
// pingTimeout 200, maxPayload 1e6, connectTimeout 1000, CORS for any origin. Covers every
// behaviour of the official Socket.IO v5 test suite (socketio/socket.io
// docs/socket.io-protocol/v5-test-suite), with the byte-exact answers of Node's socket.io 4.8.
// One server is shared by the whole file.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startServer } from "./lib/server.mjs";
import { ERR, assertHttpError, defineEngineTransportTests } from "./lib/engine-cases.mjs";
import { PollingSession, SID_RE, openPacket, pollAnswer, sioConnect, track, wsHandshake } from "./lib/raw.mjs";

const PATH = "/socket.io/";
const T = { timeout: 10_000 };
const SIO_SID = /^\{"sid":"[A-Za-z0-9_-]{20}"\}$/;
let server;

before(async () => {
  server = await startServer("conformance", ["socketio"]);
});
after(async () => {
  await server?.stop();
});

/** Connects a raw WebSocket session (pings answered) to "/" and consumes the `auth` event. */
async function connected(t) {
  const c = await sioConnect(server, { expectAuth: true });
  track(t, c.peer);
  return c.peer;
}

/** Joins "/" on a raw WebSocket session and checks the answer bytes. */
async function connectMain(peer) {
  peer.send("40");
  const ack = await peer.next();
  assert.ok(ack.startsWith("40"), ack);
  assert.match(ack.slice(2), SIO_SID);
  assert.equal(await peer.next(), '42["auth",{}]');
}

/** Proves a WebSocket session works: joins "/" the first time, then an event round trip. */
async function sioRoundTrip(peer) {
  if (!peer.joinedMain) {
    await connectMain(peer);
    peer.joinedMain = true;
  }
  peer.send('42["message","round-trip"]');
  assert.equal(await peer.next(), '42["message-back","round-trip"]');
}

describe("Engine.IO transports under Socket.IO", () => {
  defineEngineTransportTests({
    getServer: () => server,
    path: PATH,
    roundTrip: sioRoundTrip,
    connectWs: async (peer) => {
      await connectMain(peer);
    },
    connectPolling: async (s) => {
      assert.equal((await s.post("40")).body, "ok");
      const poll = await s.get();
      const [ack, auth] = poll.body.split("\x1e");
      assert.match(ack.slice(2), SIO_SID);
      assert.equal(auth, '42["auth",{}]');
    },
  });
});

describe("connect", () => {
  it("allows connection to the main namespace", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40");
    const data = await peer.next();
    assert.ok(data.startsWith("40"), data);
    const handshake = JSON.parse(data.slice(2));
    assert.deepEqual(Object.keys(handshake), ["sid"]);
    assert.match(handshake.sid, SID_RE);
    assert.equal(data, `40{"sid":"${handshake.sid}"}`);
    assert.equal(await peer.next(), '42["auth",{}]');
  });

  it("gives the Socket.IO socket an id different from the Engine.IO session id", T, async (t) => {
    const { peer, sid: eioSid } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40");
    const sid = JSON.parse((await peer.next()).slice(2)).sid;
    assert.match(sid, SID_RE);
    assert.notEqual(sid, eioSid);
  });

  it("allows connection to the main namespace with a payload", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send('40{"token":"123"}');
    const data = await peer.next();
    assert.ok(data.startsWith("40"), data);
    assert.match(data.slice(2), SIO_SID);
    assert.equal(await peer.next(), '42["auth",{"token":"123"}]');
  });

  it("allows connection to a custom namespace", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40/custom,");
    const data = await peer.next();
    assert.ok(data.startsWith("40/custom,"), data);
    assert.match(data.slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{}]');
  });

  it("allows connection to a custom namespace written without the trailing comma", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40/custom");
    const data = await peer.next();
    assert.ok(data.startsWith("40/custom,"), data);
    assert.match(data.slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{}]');
  });

  it("allows connection to a custom namespace with a payload", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send('40/custom,{"token":"abc"}');
    const data = await peer.next();
    assert.ok(data.startsWith("40/custom,"), data);
    assert.match(data.slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{"token":"abc"}]');
  });

  it("allows the main and a custom namespace on one connection", T, async (t) => {
    const peer = await connected(t);
    peer.send("40/custom,");
    assert.match((await peer.next()).slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{}]');
    await sioRoundTrip(Object.assign(peer, { joinedMain: true }));
  });

  it("disallows connection to an unknown namespace", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40/random");
    assert.equal(await peer.next(), '44/random,{"message":"Invalid namespace"}');
    peer.send("40/random,");
    assert.equal(await peer.next(), '44/random,{"message":"Invalid namespace"}');
    // the Engine.IO session survives: the main namespace can still be joined
    await sioRoundTrip(peer);
  });

  it("disallows connection with an invalid handshake", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("4abc");
    const info = await peer.waitClose(2000);
    assert.equal(info.code, 1005);
    assert.deepEqual(peer.queue, []);
  });

  it("closes the connection if no handshake is received within connectTimeout (1000 ms)", T, async (t) => {
    // pings are answered, so only the connect timeout can end this session
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    const start = Date.now();
    const info = await peer.waitClose(4000);
    const elapsed = info.at - start;
    assert.ok(elapsed >= 900, `closed after ${elapsed} ms, before connectTimeout`);
    assert.ok(peer.pings >= 2, "the session answered pings until then");
    assert.equal(info.code, 1005);
    assert.deepEqual(peer.queue, []);
  });

  it("closes the connection after connectTimeout when only an unknown namespace was tried", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    const start = Date.now();
    peer.send("40/random,");
    assert.equal(await peer.next(), '44/random,{"message":"Invalid namespace"}');
    const info = await peer.waitClose(4000);
    assert.ok(info.at - start >= 900, `closed after ${info.at - start} ms`);
  });
});

describe("disconnect", () => {
  it("disconnects from the main namespace and keeps the Engine.IO session (next packet is a ping)", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH));
    peer.send("40");
    assert.match((await peer.next()).slice(2), SIO_SID);
    assert.equal(await peer.next(), '42["auth",{}]');
    peer.send("41");
    assert.equal(await peer.next(), "2");
    peer.send("3");
    assert.ok(peer.isOpen);
  });

  it("can join the main namespace again after leaving it (with a new socket id)", T, async (t) => {
    const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
    peer.send("40");
    const first = JSON.parse((await peer.next()).slice(2)).sid;
    assert.equal(await peer.next(), '42["auth",{}]');
    peer.send("41");
    // a round trip on another namespace makes sure "41" was handled: Node handles packets of one
    // read together, and a "40" for a namespace still joined closes the connection
    peer.send("40/custom,");
    assert.match((await peer.next()).slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{}]');
    peer.send("40");
    const second = JSON.parse((await peer.next()).slice(2)).sid;
    assert.equal(await peer.next(), '42["auth",{}]');
    assert.notEqual(second, first);
  });

  it("connects then disconnects from a custom namespace; the main namespace still works", T, async (t) => {
    const peer = await connected(t);
    peer.send("40/custom");
    assert.match((await peer.next()).slice("40/custom,".length), SIO_SID);
    assert.equal(await peer.next(), '42/custom,["auth",{}]');
    peer.send("41/custom");
    peer.send('42["message","message to main namespace"]');
    assert.equal(await peer.next(), '42["message-back","message to main namespace"]');
  });
});

describe("message", () => {
  it("sends a plain-text packet", T, async (t) => {
    const peer = await connected(t);
    peer.send('42["message",1,"2",{"3":[true]}]');
    assert.equal(await peer.next(), '42["message-back",1,"2",{"3":[true]}]');
  });

  it("keeps UTF-8 strings intact", T, async (t) => {
    const peer = await connected(t);
    peer.send('42["message","h\u00e9\u20ac\u{1F600}"]');
    assert.equal(await peer.next(), '42["message-back","h\u00e9\u20ac\u{1F600}"]');
  });

  it("sends a packet with binary attachments", T, async (t) => {
    const peer = await connected(t);
    peer.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    peer.send(Buffer.from([1, 2, 3]));
    peer.send(Buffer.from([4, 5, 6]));
    const [header, a, b] = await peer.take(3);
    assert.equal(header, '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.ok(Buffer.isBuffer(a) && Buffer.isBuffer(b), "attachments are binary frames");
    assert.deepEqual([...a], [1, 2, 3]);
    assert.deepEqual([...b], [4, 5, 6]);
  });

  it("sends a plain-text packet with an ack", T, async (t) => {
    const peer = await connected(t);
    peer.send('42456["message-with-ack",1,"2",{"3":[false]}]');
    assert.equal(await peer.next(), '43456[1,"2",{"3":[false]}]');
  });

  it("acks with id 0 and with an empty argument list", T, async (t) => {
    const peer = await connected(t);
    peer.send('420["message-with-ack"]');
    assert.equal(await peer.next(), "430[]");
  });

  it("acks the largest safe integer id exactly", T, async (t) => {
    const peer = await connected(t);
    peer.send('429007199254740991["message-with-ack","x"]');
    assert.equal(await peer.next(), '439007199254740991["x"]');
  });

  it("sends a packet with binary attachments and an ack", T, async (t) => {
    const peer = await connected(t);
    peer.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    peer.send(Buffer.from([1, 2, 3]));
    peer.send(Buffer.from([4, 5, 6]));
    const [header, a, b] = await peer.take(3);
    assert.equal(header, '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual([...a], [1, 2, 3]);
    assert.deepEqual([...b], [4, 5, 6]);
  });

  it("accepts ten binary attachments (the parser's maximum)", T, async (t) => {
    const peer = await connected(t);
    const placeholders = Array.from({ length: 10 }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(",");
    peer.send(`4510-["message",${placeholders}]`);
    for (let i = 0; i < 10; i++) peer.send(Buffer.from([i, i]));
    const got = await peer.take(11);
    assert.equal(got[0], `4510-["message-back",${placeholders}]`);
    for (let i = 0; i < 10; i++) assert.deepEqual([...got[i + 1]], [i, i]);
  });

  it("ignores an ack for an unknown id", T, async (t) => {
    const peer = await connected(t);
    peer.send("4399[1]");
    await sioRoundTrip(Object.assign(peer, { joinedMain: true }));
  });

  it("closes the connection upon invalid format (unknown packet type)", T, async (t) => {
    const peer = await connected(t);
    peer.send("4abc");
    assert.equal((await peer.waitClose(2000)).code, 1005);
    assert.deepEqual(peer.queue, []);
  });

  it("closes the connection upon invalid format (invalid payload format)", T, async (t) => {
    const peer = await connected(t);
    peer.send("42{}");
    assert.equal((await peer.waitClose(2000)).code, 1005);
    assert.deepEqual(peer.queue, []);
  });

  it("closes the connection upon invalid format (invalid ack id)", T, async (t) => {
    const peer = await connected(t);
    peer.send('42abc["message-with-ack",1,"2",{"3":[false]}]');
    assert.equal((await peer.waitClose(2000)).code, 1005);
    assert.deepEqual(peer.queue, []);
  });
});

describe("Socket.IO over HTTP long-polling", () => {
  it("connects, then receives the connect answer and the auth event in one payload", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post('40{"token":"p"}')).body, "ok");
    const poll = await s.get();
    const parts = poll.body.split("\x1e");
    assert.equal(parts.length, 2, poll.body);
    assert.match(parts[0].slice(2), SIO_SID);
    assert.equal(parts[1], '42["auth",{"token":"p"}]');
  });

  it("carries events and acks, several packets in one POST", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("40")).body, "ok");
    await s.get();
    assert.equal((await s.post('42["message","a"]\x1e421["message-with-ack","b"]')).body, "ok");
    assert.equal((await s.get()).body, '42["message-back","a"]\x1e431["b"]');
  });

  it("carries binary attachments as b<base64> packets both ways", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("40")).body, "ok");
    await s.get();
    assert.equal((await s.post('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]\x1ebAQID\x1ebBAUG')).body, "ok");
    assert.equal(
      (await s.get()).body,
      '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]\x1ebAQID\x1ebBAUG',
    );
  });

  it("closes the session upon an invalid Socket.IO packet", T, async () => {
    const s = await PollingSession.open(server, PATH);
    assert.equal((await s.post("40")).body, "ok");
    await s.get();
    assert.equal((await s.post("42{}")).body, "ok");
    // the close was decided while no GET was pending: Node flushes noop + close to the next poll
    const poll = await pollAnswer(s);
    assert.equal(`${poll.status} ${JSON.stringify(poll.body)}`, `200 ${JSON.stringify("6\x1e1")}`);
    assertHttpError(await pollAnswer(s), ERR.sid);
  });
});

describe("application server defaults", () => {
  it("`ioscale serve` hands out Node's default handshake values", T, async (t) => {
    const app = await startServer("ioscale", ["serve"], { t });
    const s = await PollingSession.open(app, PATH);
    assert.equal(
      s.handshake.body,
      openPacket({ sid: s.sid, upgrades: ["websocket"], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 }),
    );
    const { raw, sid } = track(t, await wsHandshake(app, PATH));
    assert.equal(raw, openPacket({ sid, upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 }));
    const c = await sioConnect(app);
    track(t, c.peer);
    assert.match(c.sid, SID_RE);
  });
});
