// Hostile clients at the Socket.IO layer of `ioscale serve`: namespace spam, room spam, event
// floods and invalid UTF-8 in WebSocket text frames. Each refusal is checked on the wire, in the
// metric that counts it and in the `limit reached` log lines, and a client connected before keeps
// working (a round trip through the application).
//
// (`--max-pending-acks` is not tested: the application never waits for an ack from a client.)
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connected, harness } from "./lib/harness.mjs";
import { WsPeer, sioConnect, wsUrl } from "./lib/raw.mjs";
import {
  allRejections,
  assertAlive,
  assertLimitLogged,
  metrics,
  openConnections,
  rejections,
  serveApp,
  waitUntil,
  within,
  witness,
} from "./lib/hostile-util.mjs";

const T = { timeout: 20_000 };
const RATE_ERROR = { message: "rate limit exceeded", data: { limit: "event_rate" } };
const RATE_ERROR_PACKET = `42["error",${JSON.stringify(RATE_ERROR)}]`;

/** A raw WebSocket client joined to "/" (its `server-info` event consumed), closed before the server stops. */
async function rawClient(h, app) {
  const c = await sioConnect(app);
  h.defer(() => c.peer.close());
  const info = await c.peer.next();
  assert.match(info, /^42\["server-info",/);
  return c;
}

/** A raw client's round trip through the application: `join` with an ack. */
async function assertRawAlive(peer, room, label = "the client keeps working") {
  const id = 900 + Math.floor(Math.random() * 99);
  peer.send(`42${id}["join",${JSON.stringify(room)}]`);
  assert.equal(await peer.next(), `43${id}[${JSON.stringify({ ok: true, room })}]`, label);
}

const disconnects = (m, reason) => m.value("ioscale_disconnects_total", { reason });

describe("namespaces", () => {
  it("--max-namespaces-per-connection 1: a second namespace CONNECT gets 'too many namespaces'", T, async (t) => {
    const h = harness(t);
    const app = await serveApp(h, ["--max-namespaces-per-connection", "1"]);
    const w = await witness(h, app);
    const { peer } = await rawClient(h, app); // in "/": its one namespace
    peer.send("40/other,");
    const answer = await peer.next();
    assert.equal(answer, '44/other,{"message":"too many namespaces"}', "CONNECT past the namespace limit");
    const m = await metrics(app);
    assert.equal(rejections(m, "namespaces_per_connection"), 1);
    assert.deepEqual(allRejections(m), { namespaces_per_connection: 1 });
    await assertLimitLogged(app, "namespaces_per_connection", 1);
    await assertRawAlive(peer, "after-refusal", "the refused connection keeps its namespace");
    await assertAlive(w);
  });

  it("namespace spam: 300 CONNECTs to random namespaces on one connection are each refused, nothing is created, the connection keeps working", T, async (t) => {
    const h = harness(t);
    const app = await serveApp(h, ["--max-namespaces-per-connection", "2"]);
    const w = await witness(h, app);
    const { peer } = await rawClient(h, app);
    const names = Array.from({ length: 300 }, (_, i) => `/spam-${i}-${Math.random().toString(36).slice(2, 10)}`);
    for (const ns of names) peer.send(`40${ns},`);
    const answers = await peer.take(names.length, 5000);
    let overLimit = 0;
    const messages = {};
    names.forEach((ns, i) => {
      const m = new RegExp(`^44${ns},\\{"message":"(.*)"\\}$`).exec(answers[i]);
      assert.ok(m, `answer ${i} to CONNECT ${ns}: ${JSON.stringify(answers[i])}`);
      assert.ok(["Invalid namespace", "too many namespaces"].includes(m[1]), `refusal of ${ns}: ${m[1]}`);
      messages[m[1]] = (messages[m[1]] ?? 0) + 1;
      if (m[1] === "too many namespaces") overLimit++;
    });
    t.diagnostic(`refusals: ${JSON.stringify(messages)}`);
    const m = await metrics(app);
    assert.equal(rejections(m, "namespaces_per_connection"), overLimit, "every 'too many namespaces' is counted");
    assert.deepEqual(allRejections(m), overLimit ? { namespaces_per_connection: overLimit } : {});
    await assertLimitLogged(app, "namespaces_per_connection", overLimit);
    const namespaces = [...m.samples.keys()].filter((k) => k.startsWith("ioscale_sockets{"));
    assert.deepEqual(namespaces, ['ioscale_sockets{namespace="/"}'], "no namespace was created");
    assert.equal(m.value("ioscale_sockets", { namespace: "/" }), 2);
    assert.equal(openConnections(m), 2);
    await assertRawAlive(peer, "after-spam", "the spamming connection keeps its namespace");
    await assertAlive(w);
  });
});

describe("rooms", () => {
  it("--max-rooms-per-socket 4: room spam (300 joins at once) gets 'too many rooms' past the limit; the room count stays bounded", T, async (t) => {
    const h = harness(t);
    const app = await serveApp(h, ["--max-rooms-per-socket", "4"]);
    const w = await witness(h, app);
    await assertAlive(w); // the witness is in its own room and "witness"
    const spammer = h.client(app.url, { transports: ["websocket"] });
    await connected(spammer);
    const m0 = await metrics(app);
    const rooms0 = m0.value("ioscale_rooms");

    const N = 300;
    const replies = await Promise.all(Array.from({ length: N }, (_, i) => spammer.timeout(10_000).emitWithAck("join", `r${i}`)));
    // Its own room counts: three more fit.
    assert.deepEqual(replies.slice(0, 3), [0, 1, 2].map((i) => ({ ok: true, room: `r${i}` })));
    replies.slice(3).forEach((reply, i) => assert.deepEqual(reply, { ok: false, error: "too many rooms" }, `join of r${i + 3}`));
    let m = await metrics(app);
    assert.equal(m.value("ioscale_rooms"), rooms0 + 3, "only the three admitted rooms were created");
    assert.equal(rejections(m, "rooms_per_socket"), N - 3);

    // At the limit, a room it is in can be joined again; a left room frees a place.
    assert.deepEqual(await spammer.timeout(5000).emitWithAck("join", "r1"), { ok: true, room: "r1" });
    assert.deepEqual(await spammer.timeout(5000).emitWithAck("leave", "r0"), { ok: true, room: "r0" });
    assert.deepEqual(await spammer.timeout(5000).emitWithAck("join", "r-new"), { ok: true, room: "r-new" });
    assert.deepEqual(await spammer.timeout(5000).emitWithAck("join", "r-more"), { ok: false, error: "too many rooms" });

    m = await metrics(app);
    assert.equal(m.value("ioscale_rooms"), rooms0 + 3);
    assert.equal(rejections(m, "rooms_per_socket"), N - 3 + 1);
    assert.deepEqual(allRejections(m), { rooms_per_socket: N - 2 }, "no other limit counted anything");
    await assertLimitLogged(app, "rooms_per_socket", N - 2);
    assert.ok(spammer.connected, "a refused join does not disconnect");
    await assertAlive(w);
  });
});

describe("event rate", () => {
  it("--event-rate: one event over the burst gets the `error` event, then a DISCONNECT of the namespace", T, async (t) => {
    const h = harness(t);
    const app = await serveApp(h, ["--event-rate", "1", "--event-burst", "10"]);
    const w = await witness(h, app);
    const { peer } = await rawClient(h, app);
    const m0 = await metrics(app);
    for (let i = 0; i < 11; i++) peer.send(`42["spam",${i}]`);
    assert.deepEqual(await peer.take(2), [RATE_ERROR_PACKET, "41"]);
    const m = await waitUntil(
      async () => {
        const m = await metrics(app);
        return m.value("ioscale_sockets", { namespace: "/" }) === 1 && m;
      },
      { timeoutMs: 3000, label: "the rate-limited socket gone" },
    );
    assert.equal(rejections(m, "event_rate") - rejections(m0, "event_rate"), 1);
    assert.equal(disconnects(m, "server namespace disconnect") - disconnects(m0, "server namespace disconnect"), 1);
    assert.deepEqual(allRejections(m), { event_rate: 1 });
    await assertLimitLogged(app, "event_rate", 1);
    await assertAlive(w);
  });

  for (const transport of ["websocket", "polling"]) {
    it(`--event-rate: a socket.io-client (${transport}) flooding events gets the \`error\` event and "io server disconnect"`, T, async (t) => {
      const h = harness(t);
      const app = await serveApp(h, ["--event-rate", "5", "--event-burst", "10"]);
      const w = await witness(h, app);
      const flooder = h.client(app.url, { transports: [transport] });
      await connected(flooder);
      const m0 = await metrics(app);
      const errorEvent = new Promise((resolve) => flooder.once("error", resolve));
      const reason = new Promise((resolve) => flooder.once("disconnect", (r) => resolve(r)));
      // It keeps sending, 20 events a turn of the event loop, until it is disconnected (at most 1,000).
      let sent = 0;
      let stopped = false;
      reason.then(() => (stopped = true));
      while (!stopped && sent < 1000) {
        for (let k = 0; k < 20; k++) flooder.emit("spam", sent++);
        await new Promise((resolve) => setImmediate(resolve));
      }
      const got = {
        reason: await within(reason, 5000, "the flooding client's disconnect"),
        error: await within(errorEvent, 500, "the error event").catch(() => "(no error event)"),
      };
      assert.deepEqual(got, { reason: "io server disconnect", error: RATE_ERROR });
      const m = await metrics(app);
      assert.equal(rejections(m, "event_rate") - rejections(m0, "event_rate"), 1);
      assert.deepEqual(allRejections(m), { event_rate: 1 });
      await assertLimitLogged(app, "event_rate", 1);
      await assertAlive(w);
    });
  }
});

describe("invalid UTF-8 in a WebSocket text frame", () => {
  const event = (bytes) => Buffer.concat([Buffer.from('42["join","x'), Buffer.from(bytes), Buffer.from('"]')]);
  const cases = [
    ["a 0xFF byte", event([0xff])],
    ["a truncated 3-byte sequence", event([0xe2, 0x82])],
    ["an overlong encoding of '/'", event([0xc0, 0xaf])],
    ["a UTF-16 surrogate half", event([0xed, 0xa0, 0x80])],
    ["a code point past U+10FFFF", event([0xf4, 0x90, 0x80, 0x80])],
    ["a sequence truncated at the end of the frame", Buffer.from([0x34, 0x32, 0x5b, 0x22, 0x6a, 0xf0, 0x9f, 0x9a])],
  ];

  it("closes the connection at once, sends nothing, counts a transport error; valid UTF-8 (also split across fragments) is served", T, async (t) => {
    const h = harness(t);
    const app = await serveApp(h);
    const w = await witness(h, app);
    const m0 = await metrics(app);
    const codes = {};
    for (const [label, frame] of cases) {
      const { peer } = await rawClient(h, app);
      peer.ws.send(frame, { binary: false });
      const info = await peer.waitClose(3000).catch(() => assert.fail(`${label}: the connection is still open 3 s later`));
      assert.deepEqual(peer.queue, [], `${label}: nothing is answered`);
      codes[label] = info.code;
      // A close frame was sent (Node's ws sends 1007; a close frame without status is 1005).
      assert.ok([1005, 1007].includes(info.code), `${label}: close code ${info.code}`);
    }
    t.diagnostic(`close codes: ${JSON.stringify(codes)}`);

    // Before joining a namespace, in the CONNECT packet itself.
    const early = new WsPeer(wsUrl(app, "/socket.io/", { EIO: 4, transport: "websocket" }));
    h.defer(() => early.close());
    assert.match(await early.next(), /^0\{"sid":/);
    early.ws.send(Buffer.from([0x34, 0x30, 0x2f, 0xff, 0x2c]), { binary: false });
    await early.waitClose(3000);
    assert.deepEqual(early.queue, []);

    const m = await waitUntil(
      async () => {
        const m = await metrics(app);
        return openConnections(m) === 1 && m;
      },
      { timeoutMs: 3000, label: "only the witness connected" },
    );
    assert.equal(disconnects(m, "transport error") - disconnects(m0, "transport error"), cases.length, "each joined socket ends with a transport error");
    assert.equal(m.value("ioscale_sockets", { namespace: "/" }), 1);
    assert.deepEqual(allRejections(m), {});

    // Valid 4-byte UTF-8, whole and split across two continuation fragments in the middle of a character.
    const { peer } = await rawClient(h, app);
    await assertRawAlive(peer, "🚀", "a valid 4-byte character is served");
    const bytes = Buffer.from('421["join","a🚀b"]');
    const cut = bytes.indexOf(0xf0) + 2;
    peer.ws.send(bytes.subarray(0, cut), { binary: false, fin: false });
    peer.ws.send(bytes.subarray(cut), { binary: false, fin: true });
    assert.equal(await peer.next(), '431[{"ok":true,"room":"a🚀b"}]', "a character split across fragments is reassembled");
    await assertAlive(w);
  });
});
