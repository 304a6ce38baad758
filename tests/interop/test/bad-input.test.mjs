// Bad input: every malformed request, packet or misbehaving client gets Node's answer (an
// Engine.IO HTTP error, a CONNECT_ERROR or a closed connection), and a second client that was
// already connected to the same server keeps working (a round trip after the bad client was
// handled). Expected bytes and statuses were checked against Node's socket.io 4.8 / engine.io 6.6.
//
// Most cases run on the `conformance socketio` example shared by the file; cases that need
// other settings start their own `ioscale serve` with flags.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startServer } from "./lib/server.mjs";
import { ERR, assertHttpError, assertUpgradeRejected, assertWsRefused } from "./lib/engine-cases.mjs";
import {
  PollingSession,
  WsPeer,
  delay,
  eioUrl,
  openPacket,
  pollAnswer,
  request,
  sioConnect,
  track,
  within,
  wsHandshake,
  wsUrl,
} from "./lib/raw.mjs";

const PATH = "/socket.io/";
const T = { timeout: 10_000 };
let server;

before(async () => {
  server = await startServer("conformance", ["socketio"]);
});
after(async () => {
  await server?.stop();
});

/** A well-behaved client of the conformance server, connected to "/" over WebSocket. */
async function witness(t) {
  const c = await sioConnect(server, { expectAuth: true });
  return track(t, c.peer);
}

let rounds = 0;
/** The witness still gets its event echoed. */
async function assertAlive(peer) {
  const tag = `still-alive-${++rounds}`;
  peer.send(`42["message","${tag}"]`);
  assert.equal(await peer.next(), `42["message-back","${tag}"]`, "the already-connected client keeps working");
}

/**
 * A witness for an `ioscale serve` instance (which has no echo handler): an Engine.IO
 * WebSocket session opened before the bad input, pings answered. With `join` it joins "/"
 * at once (so that a connect timeout does not apply to it).
 */
async function appWitness(t, app, { join = false, path = PATH } = {}) {
  const { peer } = track(t, await wsHandshake(app, path, { autoPong: true }));
  if (join) await assertAppAlive(peer);
  return peer;
}
/**
 * Round trip of an `ioscale serve` witness: the first time it joins "/" (answer `40{"sid":...}`,
 * with a `pid` when connection state recovery is on, the default);
 * later it asks for another namespace and must get an answer for it (CONNECT or CONNECT_ERROR).
 */
async function assertAppAlive(peer) {
  if (!peer.joinedMain) {
    peer.send("40");
    assert.match(await nextNonEvent(peer), /^40\{"sid":"[A-Za-z0-9_-]{20}"(,"pid":"[A-Za-z0-9_-]{20}")?\}$/, "the already-connected client keeps working");
    peer.joinedMain = true;
    return;
  }
  const ns = `/probe-${++rounds}`;
  peer.send(`40${ns},`);
  const answer = await nextNonEvent(peer);
  assert.ok(answer.startsWith(`40${ns},{`) || answer.startsWith(`44${ns},{`), `answer for ${ns}: ${answer}`);
}

/** Next message that is not a Socket.IO event (the application server may emit its own events on connect). */
async function nextNonEvent(peer) {
  for (;;) {
    const m = await peer.next();
    if (typeof m === "string" && /^42[/[]/.test(m)) continue;
    return m;
  }
}

/**
 * Asserts that the server closed this WebSocket (Node: close frame without status code) and sent
 * nothing before, or exactly `allowed` (answers to valid packets that preceded the bad one).
 */
async function assertClosedByServer(peer, { ms = 2000, allowed } = {}) {
  const info = await peer.waitClose(ms);
  assert.equal(info.code, 1005, `close code (reason ${JSON.stringify(info.reason)})`);
  if (allowed && peer.queue.length) assert.deepEqual(peer.queue, allowed);
  else assert.deepEqual(peer.queue, [], "nothing may be sent before the close");
}

describe("HTTP requests the Engine.IO server refuses", () => {
  it("answers every malformed handshake and unknown session with Node's exact error", T, async (t) => {
    const w = await witness(t);
    const u = (q) => eioUrl(server, PATH, q);
    assertHttpError(await request(u({ EIO: 4 })), ERR.transport);
    assertHttpError(await request(u({ EIO: 4, transport: "flash" })), ERR.transport);
    assertHttpError(await request(u({ EIO: 4, transport: "webtransport" })), ERR.transport);
    assertHttpError(await request(u({ transport: "polling" })), ERR.protocol);
    assertHttpError(await request(u({ EIO: "3", transport: "polling" })), ERR.protocol);
    assertHttpError(await request(u({ EIO: 4, transport: "polling" }), { method: "POST", body: "40" }), ERR.method);
    assertHttpError(await request(u({ EIO: 4, transport: "polling" }), { method: "DELETE" }), ERR.method);
    assertHttpError(await request(u({ EIO: 4, transport: "websocket" })), ERR.bad);
    assertHttpError(await request(u({ EIO: 4, transport: "polling", sid: "AAAAAAAAAAAAAAAAAAAA" })), ERR.sid);
    assertHttpError(await request(u({ EIO: 4, transport: "polling", sid: "AAAAAAAAAAAAAAAAAAAA" }), { method: "POST", body: "40" }), ERR.sid);
    await assertAlive(w);
  });

  it("forgets a closed session: its sid gets 400 code 1 on GET, POST and a WebSocket upgrade", T, async (t) => {
    const w = await witness(t);
    const s = await PollingSession.open(server, PATH);
    const pending = track(t, s.startGet());
    await delay(50);
    assert.equal((await s.post("1")).body, "ok");
    assert.equal((await pending.response).body, "6");
    assertHttpError(await pollAnswer(s), ERR.sid);
    assertHttpError(await s.post("40"), ERR.sid);
    const ws = track(t, new WsPeer(wsUrl(server, PATH, { EIO: 4, transport: "websocket", sid: s.sid })));
    await assertUpgradeRejected(ws, "Session ID unknown");
    await assertAlive(w);
  });

  it("closes the session on overlapping polling GETs (second: 400 empty body; first: '1')", T, async (t) => {
    const w = await witness(t);
    const s = await PollingSession.open(server, PATH);
    const first = track(t, s.startGet());
    await delay(20);
    const second = await s.get();
    assert.equal(second.status, 400);
    assert.equal(second.body, "");
    assert.equal((await first.response).body, "1");
    assertHttpError(await pollAnswer(s), ERR.sid);
    await assertAlive(w);
  });

  it("closes the session on a second POST while one is in flight (400 empty body; the first fails)", T, async (t) => {
    const w = await witness(t);
    const s = await PollingSession.open(server, PATH);
    const first = track(t, s.startPost({ headers: { "content-type": "text/plain;charset=UTF-8", "content-length": "100" }, end: false }));
    first.req.write("40"); // 2 of the announced 100 bytes: the POST stays in flight
    await delay(50);
    const second = await s.post("40");
    assert.equal(second.status, 400);
    assert.equal(second.body, "");
    // Node destroys the first POST's connection; ioscale answers it 400 (documented
    // deviation: hyper cannot reset a connection from a handler). Either way it fails.
    const outcome = await within(first.response, 2000, "the first POST to end").then(
      (res) => `status ${res.status}`,
      (e) => e.code,
    );
    assert.ok(["ECONNRESET", "EPIPE", "status 400"].includes(outcome), `first POST: ${outcome}`);
    assertHttpError(await pollAnswer(s), ERR.sid);
    await assertAlive(w);
  });

  it("refuses a binary (application/octet-stream) POST with 400 and closes the session", T, async (t) => {
    const w = await witness(t);
    const s = await PollingSession.open(server, PATH);
    const res = await s.post(Buffer.from("40"), { headers: { "content-type": "application/octet-stream" } });
    assert.equal(res.status, 400);
    assert.equal(res.body, "");
    assertHttpError(await pollAnswer(s), ERR.sid);
    await assertAlive(w);
  });

  for (const [label, body] of [
    ["an unknown packet type", "9"],
    ["a letter as packet type", "x"],
    ["an empty body", ""],
    ["a ping from the client (wrong heartbeat direction)", "2"],
    ["an empty packet between two separators", "40\x1e\x1e40/custom,"],
  ]) {
    it(`closes the polling session on ${label} (Node answers the POST 'ok')`, T, async (t) => {
      const w = await witness(t);
      const s = await PollingSession.open(server, PATH);
      const res = await s.post(body);
      assert.equal(res.status, 200);
      assert.equal(res.body, "ok");
      assertHttpError(await pollAnswer(s), ERR.sid);
      await assertAlive(w);
    });
  }

  it("closes the polling session on an invalid Socket.IO packet (next poll '6\\x1e1', then 400)", T, async (t) => {
    const w = await witness(t);
    for (const body of ["4abc", "bAQID", "4\x1e", '42["message"']) {
      const s = await PollingSession.open(server, PATH);
      assert.equal((await s.post(body)).body, "ok");
      const poll = await pollAnswer(s);
      assert.equal(`${poll.status} ${JSON.stringify(poll.body)}`, `200 ${JSON.stringify("6\x1e1")}`, `poll after ${JSON.stringify(body)}`);
      assertHttpError(await pollAnswer(s), ERR.sid);
    }
    await assertAlive(w);
  });

  it("refuses WebSocket upgrades that name an unknown transport or none", T, async (t) => {
    const w = await witness(t);
    await assertUpgradeRejected(track(t, new WsPeer(wsUrl(server, PATH, { EIO: 4 }))), "Transport unknown");
    await assertUpgradeRejected(track(t, new WsPeer(wsUrl(server, PATH, { EIO: 4, transport: "flash" }))), "Transport unknown");
    await assertWsRefused(track(t, new WsPeer(wsUrl(server, PATH, { EIO: "3", transport: "websocket" }))));
    await assertAlive(w);
  });
});

describe("malformed Engine.IO packets over WebSocket", () => {
  for (const [label, frame] of [
    ["an unknown packet type", "9"],
    ["a letter as packet type", "x"],
    ["an empty text frame", ""],
    ["a ping from the client (wrong heartbeat direction)", "2"],
    ["a record separator inside a frame", "4\x1e4"],
  ]) {
    it(`closes the connection on ${label}`, T, async (t) => {
      const w = await witness(t);
      const bad = await witness(t);
      bad.send(frame);
      await assertClosedByServer(bad);
      await assertAlive(w);
    });
  }

  it("ignores stray open, pong, upgrade and noop packets on an open WebSocket session", T, async (t) => {
    const peer = await witness(t);
    for (const frame of ["0", "3", "5", "6"]) peer.send(frame);
    await assertAlive(peer);
  });
});

describe("malformed Socket.IO packets", () => {
  const closing = [
    ["invalid JSON", ['42["message"']],
    ["an event that is not an array", ["42{}"]],
    ["an empty event array", ["42[]"]],
    ["a reserved event name", ['42["disconnect"]']],
    ["an unknown packet type", ["47"]],
    ["a letter as packet type", ["4abc"]],
    ["a message packet without data", ["4"]],
    ["an invalid ack id", ['42abc["message-with-ack",1]']],
    ["a negative ack id", ['42-1["message-with-ack",1]']],
    ["a binary event without the attachment count's dash", ['452["message",{"_placeholder":true,"num":0}]']],
    ["a non-numeric attachment count", ['45x-["message",{"_placeholder":true,"num":0}]']],
    ["zero attachments", ['450-["message"]']],
    ["11 attachments (more than 10)", ['4511-["message",{"_placeholder":true,"num":0}]']],
    ["a huge attachment count", ['4599999999999999999999-["message",{"_placeholder":true,"num":0}]']],
    // Node answers the complete packet or not, depending on whether the frames came in one read
    ["more binary frames than announced", ['451-["message",{"_placeholder":true,"num":0}]', Buffer.from([1]), Buffer.from([2])],
      ['451-["message-back",{"_placeholder":true,"num":0}]', Buffer.from([1])]],
    ["a binary frame when none is expected", [Buffer.from([1, 2, 3])]],
    ["a placeholder index out of range", ['451-["message",{"_placeholder":true,"num":5}]', Buffer.from([1])]],
    ["a text packet while awaiting attachments", ['452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', Buffer.from([1]), '42["message","x"]']],
    ["an event to an unknown namespace", ['42/random,["message","x"]']],
    ["an event to a namespace it did not join", ['42/custom,["message","x"]']],
    ["a connect to a namespace it already joined", ["40"]],
    ["a connect with a non-object payload", ['40/custom,"abc"']],
    ["a connect with an array payload", ["40/custom,[1]"]],
    ["a CONNECT_ERROR from the client", ['44{"message":"nope"}']],
    ["a DISCONNECT with a payload", ["41[1]"]],
  ];
  for (const [label, frames, allowed] of closing) {
    it(`closes the connection on ${label}`, T, async (t) => {
      const w = await witness(t);
      const bad = await witness(t);
      for (const f of frames) bad.send(f);
      await assertClosedByServer(bad, { allowed });
      await assertAlive(w);
    });
  }

  for (const [label, frame] of [
    ["an event", '42["message","x"]'],
    ["a disconnect", "41"],
    ["an ack", '430["x"]'],
    ["garbage", "4abc"],
  ]) {
    it(`closes a connection whose first Socket.IO packet is ${label} instead of a CONNECT`, T, async (t) => {
      const w = await witness(t);
      const { peer } = track(t, await wsHandshake(server, PATH, { autoPong: true }));
      peer.send(frame);
      await assertClosedByServer(peer);
      await assertAlive(w);
    });
  }

  it("answers a connect to an unknown namespace with CONNECT_ERROR and keeps the connection", T, async (t) => {
    const w = await witness(t);
    const bad = await witness(t);
    bad.send("40/random,");
    assert.equal(await bad.next(), '44/random,{"message":"Invalid namespace"}');
    await assertAlive(bad);
    await assertAlive(w);
  });

  it("closes the connection on an event to the main namespace after leaving it", T, async (t) => {
    const w = await witness(t);
    const bad = await witness(t);
    bad.send("41");
    // a round trip on another namespace makes sure "41" was handled before the event
    bad.send("40/custom,");
    assert.match(await bad.next(), /^40\/custom,\{"sid":/);
    assert.equal(await bad.next(), '42/custom,["auth",{}]');
    bad.send('42["message","x"]');
    await assertClosedByServer(bad);
    await assertAlive(w);
  });

  it("does not crash on an overflowing ack id (Node acks with the rounded number)", T, async (t) => {
    const w = await witness(t);
    const bad = await witness(t);
    bad.send('4299999999999999999999["message-with-ack",1]');
    // Node parses the id as a JS number and answers 43100000000000000000000[1]; closing the
    // connection instead is an acceptable protocol error. Anything else is not.
    const outcome = await Promise.race([bad.next(2000).then((m) => ({ m })), bad.closed.then((c) => ({ c }))]);
    if (outcome.m !== undefined) assert.match(outcome.m, /^43\d+\[1\]$/);
    else assert.deepEqual(bad.queue, []);
    await assertAlive(w);
  });
});

describe("clients that stop following the protocol", () => {
  it("closes a WebSocket client that never joins a namespace after --connect-timeout", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--connect-timeout", "300"], { t });
    const w = await appWitness(t, app, { join: true }); // joined: the connect timeout does not apply to it
    const { peer } = track(t, await wsHandshake(app, PATH, { autoPong: true }));
    const start = Date.now();
    const info = await peer.waitClose(3000);
    assert.ok(info.at - start >= 250, `closed after ${info.at - start} ms, before connectTimeout`);
    assert.equal(info.code, 1005);
    assert.deepEqual(peer.queue, []);
    await assertAppAlive(w);
  });

  it("closes a polling client that never joins a namespace after --connect-timeout (pending GET gets '1')", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--connect-timeout", "300"], { t });
    const w = await appWitness(t, app, { join: true });
    const s = await PollingSession.open(app, PATH);
    const start = Date.now();
    const poll = await within(s.get(), 3000, "the pending GET to end at the connect timeout");
    assert.ok(Date.now() - start >= 250, "not before the connect timeout");
    assert.equal(poll.status, 200);
    assert.equal(poll.body, "1");
    assertHttpError(await pollAnswer(s), ERR.sid);
    await assertAppAlive(w);
  });

  it("closes a WebSocket client that stops answering pings after pingInterval+pingTimeout", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--ping-interval", "200", "--ping-timeout", "100"], { t });
    const w = await appWitness(t, app);
    const { peer, raw, sid } = track(t, await wsHandshake(app, PATH));
    assert.equal(raw, openPacket({ sid, upgrades: [], pingInterval: 200, pingTimeout: 100, maxPayload: 1000000 }));
    const start = Date.now();
    assert.equal(await peer.next(), "2");
    const info = await peer.waitClose(3000);
    assert.ok(info.at - start >= 200, `closed after ${info.at - start} ms`);
    assert.equal(info.code, 1005);
    assert.deepEqual(peer.queue, []);
    assert.ok(w.pings >= 1, "the witness was pinged and answered");
    await assertAppAlive(w);
  });

  it("closes a polling client that stops answering pings (pending GET gets '1', then 400)", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--ping-interval", "200", "--ping-timeout", "100"], { t });
    const w = await appWitness(t, app);
    const s = await PollingSession.open(app, PATH);
    assert.equal((await s.get()).body, "2");
    const start = Date.now();
    const poll = await within(s.get(), 3000, "the pending GET to end at the ping timeout");
    assert.ok(Date.now() - start >= 50, "not before the ping timeout");
    assert.equal(poll.body, "1");
    assertHttpError(await pollAnswer(s), ERR.sid);
    await assertAppAlive(w);
  });
});

describe("maxHttpBufferSize", () => {
  const LIMIT = 100;
  const limited = (t) => startServer("ioscale", ["serve", "--max-http-buffer-size", String(LIMIT)], { t });

  it("announces the limit as maxPayload in the handshake", T, async (t) => {
    const app = await limited(t);
    const s = await PollingSession.open(app, PATH);
    assert.equal(
      s.handshake.body,
      openPacket({ sid: s.sid, upgrades: ["websocket"], pingInterval: 25000, pingTimeout: 20000, maxPayload: LIMIT }),
    );
  });

  it("accepts a polling POST of exactly the limit", T, async (t) => {
    const app = await limited(t);
    const s = await PollingSession.open(app, PATH);
    const body = `40{"pad":"${"x".repeat(LIMIT - 12)}"}`;
    assert.equal(Buffer.byteLength(body), LIMIT);
    assert.equal((await s.post(body)).body, "ok");
    // the join answer (the application may add its own events after it)
    assert.match((await s.get()).body, /^40\{"sid":"[A-Za-z0-9_-]{20}"(,"pid":"[A-Za-z0-9_-]{20}")?\}(\x1e|$)/);
  });

  it("answers a polling POST over the limit with 413 (empty body) and closes the session", T, async (t) => {
    const app = await limited(t);
    const w = await appWitness(t, app);
    for (const size of [LIMIT + 1, 100_000]) {
      const s = await PollingSession.open(app, PATH);
      const res = await s.post(`40{"pad":"${"x".repeat(size - 12)}"}`);
      assert.equal(res.status, 413, `POST of ${size} bytes`);
      assert.equal(res.body, "");
      assertHttpError(await pollAnswer(s), ERR.sid);
    }
    await assertAppAlive(w);
  });

  it("accepts a WebSocket message of exactly the limit", T, async (t) => {
    const app = await limited(t);
    const { peer } = track(t, await wsHandshake(app, PATH, { autoPong: true }));
    const msg = `40{"pad":"${"x".repeat(LIMIT - 12)}"}`;
    assert.equal(Buffer.byteLength(msg), LIMIT);
    peer.send(msg);
    assert.match(await peer.next(), /^40\{"sid":"[A-Za-z0-9_-]{20}"(,"pid":"[A-Za-z0-9_-]{20}")?\}$/);
  });

  for (const [label, msg] of [
    ["text", `42["x","${"y".repeat(LIMIT)}"]`],
    ["binary", Buffer.alloc(LIMIT + 1, 7)],
  ]) {
    it(`closes a WebSocket with 1009 on a ${label} message over the limit`, T, async (t) => {
      const app = await limited(t);
      const w = await appWitness(t, app);
      const { peer } = track(t, await wsHandshake(app, PATH, { autoPong: true }));
      peer.send(msg);
      const info = await peer.waitClose(2000);
      assert.equal(info.code, 1009);
      assert.deepEqual(peer.queue, []);
      await assertAppAlive(w);
    });
  }
});

describe("CORS with --allowed-origins", () => {
  const ALLOWED = "http://a.example";
  const OTHER = "http://evil.example";
  let app;
  before(async () => {
    app = await startServer("ioscale", ["serve", "--allowed-origins", ALLOWED]);
  });
  after(async () => {
    await app?.stop();
  });
  const hs = () => eioUrl(app, PATH, { EIO: 4, transport: "polling" });

  it("answers a preflight from an allowed origin: 204, origin echoed, credentials true", T, async () => {
    const res = await request(hs(), {
      method: "OPTIONS",
      headers: { origin: ALLOWED, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers["access-control-allow-origin"], ALLOWED);
    assert.equal(res.headers["access-control-allow-credentials"], "true");
    assert.equal(res.headers["access-control-allow-methods"], "GET,HEAD,PUT,PATCH,POST,DELETE");
    assert.equal(res.headers["access-control-allow-headers"], "content-type");
    assert.match(res.headers.vary ?? "", /Origin/);
  });

  it("answers the handshake from an allowed origin with the origin echoed and credentials true", T, async () => {
    const res = await request(hs(), { headers: { origin: ALLOWED } });
    assert.equal(res.status, 200);
    assert.ok(res.body.startsWith('0{"sid":'), res.body);
    assert.equal(res.headers["access-control-allow-origin"], ALLOWED);
    assert.equal(res.headers["access-control-allow-credentials"], "true");
  });

  it("refuses the handshake from another origin with 403 code 4 and no Access-Control-Allow-Origin", T, async () => {
    const res = await request(hs(), { headers: { origin: OTHER } });
    assertHttpError(res, ERR.forbidden, 403);
    assert.equal(res.headers["access-control-allow-origin"], undefined);
  });

  it("gives a preflight from another origin no Access-Control-Allow-Origin (Node: still 204)", T, async () => {
    const res = await request(hs(), { method: "OPTIONS", headers: { origin: OTHER, "access-control-request-method": "POST" } });
    assert.equal(res.headers["access-control-allow-origin"], undefined);
    assert.equal(`${res.status} ${JSON.stringify(res.body)}`, '204 ""', "Node's cors middleware answers every preflight");
  });

  it("accepts a handshake without an Origin header (non-browser clients)", T, async () => {
    const res = await request(hs());
    assert.equal(res.status, 200);
    assert.ok(res.body.startsWith('0{"sid":'), res.body);
  });

  it("refuses a WebSocket upgrade from another origin (HTTP 400 'Forbidden') and accepts the allowed one", T, async (t) => {
    const w = await appWitness(t, app);
    const bad = track(t, new WsPeer(wsUrl(app, PATH, { EIO: 4, transport: "websocket" }), { headers: { origin: OTHER } }));
    await assertUpgradeRejected(bad, "Forbidden");
    const good = track(t, new WsPeer(wsUrl(app, PATH, { EIO: 4, transport: "websocket" }), { headers: { origin: ALLOWED } }));
    assert.match(await good.next(), /^0\{"sid":/);
    await assertAppAlive(w);
  });
});

describe("--cookie", () => {
  it("sets io=<sid>; Path=/; HttpOnly; SameSite=Lax on the polling handshake only", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--cookie"], { t });
    const s = await PollingSession.open(app, PATH);
    assert.deepEqual(s.handshake.res.headers["set-cookie"], [`io=${s.sid}; Path=/; HttpOnly; SameSite=Lax`]);
    const post = await s.post("40");
    assert.equal(post.body, "ok");
    assert.equal(post.headers["set-cookie"], undefined);
    const poll = await s.get();
    assert.match(poll.body, /^40\{"sid":/);
    assert.equal(poll.headers["set-cookie"], undefined);
  });

  it("sets no cookie without --cookie", T, async (t) => {
    const app = await startServer("ioscale", ["serve"], { t });
    const s = await PollingSession.open(app, PATH);
    assert.equal(s.handshake.res.headers["set-cookie"], undefined);
  });
});

describe("--transports and --path", () => {
  it("with --transports websocket, refuses polling (400 code 0) and announces no upgrades", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--transports", "websocket"], { t });
    assertHttpError(await request(eioUrl(app, PATH, { EIO: 4, transport: "polling" })), ERR.transport);
    const { raw, sid } = track(t, await wsHandshake(app, PATH));
    assert.equal(raw, openPacket({ sid, upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 }));
  });

  it("with --transports polling, announces no upgrades and refuses WebSocket (400 code 0)", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--transports", "polling"], { t });
    const s = await PollingSession.open(app, PATH);
    assert.equal(s.handshake.body, openPacket({ sid: s.sid, upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 }));
    const ws = track(t, new WsPeer(wsUrl(app, PATH, { EIO: 4, transport: "websocket" })));
    const res = await ws.rejected;
    assert.equal(res.status, 400);
    assert.equal(res.body, ERR.transport);
    await assertWsRefused(ws);
    const up = track(t, new WsPeer(wsUrl(app, PATH, { EIO: 4, transport: "websocket", sid: s.sid })));
    assert.equal((await up.rejected).body, ERR.transport);
  });

  it("serves Engine.IO on the --path given", T, async (t) => {
    const app = await startServer("ioscale", ["serve", "--path", "/rt/"], { t });
    const s = await PollingSession.open(app, "/rt/");
    assert.equal((await s.post("40")).body, "ok");
    assert.match((await s.get()).body, /^40\{"sid":/);
    const { peer } = track(t, await wsHandshake(app, "/rt/", { autoPong: true }));
    await assertAppAlive(peer);
  });
});
