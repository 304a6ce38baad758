// Engine.IO v4 transport behaviours shared by the Engine.IO and the Socket.IO conformance
// servers (the official suites test them on both): handshake, bad query parameters, heartbeat,
// ping timeout, forced close and the polling -> websocket upgrade.
//
// Expected bytes and statuses are those of Node's `engine.io` 6.6 (socket.io 4.8), checked
// against it. Both servers run with pingInterval 300, pingTimeout 200, maxPayload 1e6.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  SID_RE,
  PollingSession,
  WsPeer,
  delay,
  eioUrl,
  openPacket,
  pollAnswer,
  request,
  track,
  within,
  wsHandshake,
  wsUrl,
} from "./raw.mjs";

export const PING_INTERVAL = 300;
export const PING_TIMEOUT = 200;
const T = { timeout: 10_000 };

/** Node's JSON error body for an Engine.IO HTTP error. */
export const ERR = {
  transport: '{"code":0,"message":"Transport unknown"}',
  sid: '{"code":1,"message":"Session ID unknown"}',
  method: '{"code":2,"message":"Bad handshake method"}',
  bad: '{"code":3,"message":"Bad request"}',
  forbidden: '{"code":4,"message":"Forbidden"}',
  protocol: '{"code":5,"message":"Unsupported protocol version"}',
};

/** Asserts an Engine.IO HTTP error response exactly as Node sends it (status, JSON content type, body). */
export function assertHttpError(res, body, status = 400) {
  if (res.status !== status || res.body !== body) {
    assert.fail(`expected HTTP ${status} ${body}, got HTTP ${res.status} ${JSON.stringify(res.body)}`);
  }
  assert.equal(res.status, status, `status (body ${JSON.stringify(res.body)})`);
  assert.equal(res.headers["content-type"], "application/json");
  assert.equal(res.body, body);
}

/** Asserts that a WebSocket attempt never got an Engine.IO session: no message, and the connection ended. */
export async function assertWsRefused(peer, ms = 3000) {
  const info = await peer.waitClose(ms);
  assert.deepEqual(peer.queue, [], "no packet may be received on a refused WebSocket");
  return info;
}

/** Asserts a WebSocket upgrade was answered with Node's plain-text HTTP 400 (`abortUpgrade`). */
export async function assertUpgradeRejected(peer, message) {
  const res = await within(peer.rejected, 3000, "an HTTP answer to the upgrade request");
  const got = `HTTP ${res.status} [${res.headers["content-type"]}] ${JSON.stringify(res.body)}`;
  assert.equal(got, `HTTP 400 [text/html] ${JSON.stringify(message)}`, "Node answers a refused upgrade with a plain-text 400");
  await assertWsRefused(peer);
}

/**
 * Defines the shared tests. `getServer()` returns the running server, `path` is the
 * Engine.IO path, `roundTrip(peer)` proves an upgraded WebSocket session still works.
 * `connectWs(peer)` / `connectPolling(session)` run right after an Engine.IO handshake in the
 * heartbeat tests (the Socket.IO server joins the main namespace there, so that its
 * connectTimeout cannot be what closes the session).
 */
export function defineEngineTransportTests({ getServer, path, roundTrip, connectWs = async () => {}, connectPolling = async () => {} }) {
  const url = (query) => eioUrl(getServer(), path, query);
  const wurl = (query) => wsUrl(getServer(), path, query);

  describe("handshake over HTTP long-polling", () => {
    it("opens a session with exactly Node's open packet", T, async () => {
      const res = await request(url({ EIO: 4, transport: "polling" }));
      assert.equal(res.status, 200);
      assert.equal(res.headers["content-type"], "text/plain; charset=UTF-8");
      assert.ok(res.body.startsWith("0"), res.body);
      const value = JSON.parse(res.body.slice(1));
      assert.deepEqual(Object.keys(value), ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
      assert.match(value.sid, SID_RE);
      assert.equal(
        res.body,
        openPacket({ sid: value.sid, upgrades: ["websocket"], pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, maxPayload: 1000000 }),
      );
    });

    it("gives every session a different 20-character url-safe base64 id", T, async () => {
      const sids = [];
      for (let i = 0; i < 20; i++) {
        const res = await request(url({ EIO: 4, transport: "polling" }));
        sids.push(JSON.parse(res.body.slice(1)).sid);
      }
      for (const sid of sids) assert.match(sid, SID_RE);
      assert.equal(new Set(sids).size, sids.length);
    });

    it("answers CORS for any origin (Access-Control-Allow-Origin: *)", T, async () => {
      const res = await request(url({ EIO: 4, transport: "polling" }), { headers: { origin: "http://anywhere.example" } });
      assert.equal(res.status, 200);
      assert.equal(res.headers["access-control-allow-origin"], "*");
    });

    it("fails with a missing or invalid 'EIO' query parameter (400, code 5)", T, async () => {
      for (const EIO of [undefined, "abc", "3", "5"]) {
        assertHttpError(await request(url({ EIO, transport: "polling" })), ERR.protocol);
      }
    });

    it("fails with a missing or unknown 'transport' query parameter (400, code 0)", T, async () => {
      assertHttpError(await request(url({ EIO: 4 })), ERR.transport);
      assertHttpError(await request(url({ EIO: 4, transport: "abc" })), ERR.transport);
    });

    it("fails with an invalid handshake method (400, code 2)", T, async () => {
      assertHttpError(await request(url({ EIO: 4, transport: "polling" }), { method: "POST", body: "" }), ERR.method);
      assertHttpError(await request(url({ EIO: 4, transport: "polling" }), { method: "PUT", body: "" }), ERR.method);
    });

    it("fails with a websocket handshake that is not an upgrade request (400, code 3)", T, async () => {
      assertHttpError(await request(url({ EIO: 4, transport: "websocket" })), ERR.bad);
    });

    it("rejects an unknown sid on GET and POST (400, code 1)", T, async () => {
      assertHttpError(await request(url({ EIO: 4, transport: "polling", sid: "AAAAAAAAAAAAAAAAAAAA" })), ERR.sid);
      assertHttpError(
        await request(url({ EIO: 4, transport: "polling", sid: "AAAAAAAAAAAAAAAAAAAA" }), { method: "POST", body: "40" }),
        ERR.sid,
      );
    });

    it("rejects a polling request naming another transport than the session's (400, code 3)", T, async () => {
      const s = await PollingSession.open(getServer(), path);
      assertHttpError(await request(url({ EIO: 4, transport: "websocket", sid: s.sid })), ERR.bad);
    });
  });

  describe("handshake over WebSocket", () => {
    it("opens a session with exactly Node's open packet (no upgrades)", T, async (t) => {
      const peer = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket" })));
      const data = await peer.next();
      assert.equal(typeof data, "string");
      const value = JSON.parse(data.slice(1));
      assert.deepEqual(Object.keys(value), ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
      assert.match(value.sid, SID_RE);
      assert.equal(
        data,
        openPacket({ sid: value.sid, upgrades: [], pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, maxPayload: 1000000 }),
      );
    });

    it("fails with a missing or invalid 'EIO' query parameter (no session, connection closed)", T, async (t) => {
      // Node accepts the upgrade, then writes an HTTP 400 into the stream and drops it: the
      // client sees an abnormal close (1006). Refusing the upgrade outright is equivalent.
      for (const EIO of [undefined, "abc", "3"]) {
        const peer = track(t, new WsPeer(wurl({ EIO, transport: "websocket" })));
        await assertWsRefused(peer);
      }
    });

    it("fails with a missing or unknown 'transport' query parameter (HTTP 400 'Transport unknown')", T, async (t) => {
      await assertUpgradeRejected(track(t, new WsPeer(wurl({ EIO: 4 }))), "Transport unknown");
      await assertUpgradeRejected(track(t, new WsPeer(wurl({ EIO: 4, transport: "abc" }))), "Transport unknown");
    });

    it("refuses a WebSocket upgrade for transport=polling (no session, connection closed)", T, async (t) => {
      await assertWsRefused(track(t, new WsPeer(wurl({ EIO: 4, transport: "polling" }))));
    });

    it("rejects an unknown sid (HTTP 400 'Session ID unknown')", T, async (t) => {
      const peer = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket", sid: "AAAAAAAAAAAAAAAAAAAA" })));
      await assertUpgradeRejected(peer, "Session ID unknown");
    });
  });

  describe("heartbeat", () => {
    it("sends ping packets over polling and keeps the session while pongs come back", T, async () => {
      const s = await PollingSession.open(getServer(), path);
      await connectPolling(s);
      const start = Date.now();
      for (let i = 0; i < 3; i++) {
        const poll = await s.get();
        assert.equal(poll.status, 200);
        assert.equal(poll.body, "2");
        const push = await s.post("3");
        assert.equal(push.status, 200);
        assert.equal(push.body, "ok");
      }
      assert.ok(Date.now() - start >= 3 * PING_INTERVAL - 100, "pings come every pingInterval, not sooner");
    });

    it("closes a polling session upon ping timeout (pending GET gets '1', then 400 code 1)", T, async () => {
      const s = await PollingSession.open(getServer(), path);
      await connectPolling(s);
      const start = Date.now();
      const ping = await s.get();
      assert.equal(ping.body, "2");
      const pending = await s.get(); // no pong: the server closes the session while this poll waits
      const elapsed = Date.now() - start;
      assert.equal(pending.status, 200);
      assert.equal(pending.body, "1");
      assert.ok(elapsed >= PING_INTERVAL + PING_TIMEOUT - 100, `closed after ${elapsed} ms, before pingInterval+pingTimeout`);
      assert.ok(elapsed < PING_INTERVAL + PING_TIMEOUT + 1000, `closed only after ${elapsed} ms`);
      assertHttpError(await pollAnswer(s), ERR.sid);
    });

    it("closes a polling session upon ping timeout (official: sleep past it, then 400)", T, async () => {
      const s = await PollingSession.open(getServer(), path);
      await connectPolling(s);
      await delay(PING_INTERVAL + PING_TIMEOUT + 100);
      assertHttpError(await pollAnswer(s), ERR.sid);
    });

    it("sends ping packets over WebSocket every pingInterval and keeps the session while pongs come back", T, async (t) => {
      const { peer } = track(t, await wsHandshake(getServer(), path));
      await connectWs(peer);
      const start = Date.now();
      for (let i = 0; i < 3; i++) {
        assert.equal(await peer.next(), "2");
        peer.send("3");
      }
      assert.ok(Date.now() - start >= 3 * PING_INTERVAL - 100, "pings come every pingInterval, not sooner");
      assert.equal(await peer.next(), "2", "the session is still alive after three pongs");
      assert.ok(peer.isOpen);
    });

    it("closes a WebSocket session upon ping timeout", T, async (t) => {
      const { peer } = track(t, await wsHandshake(getServer(), path));
      await connectWs(peer);
      const start = Date.now();
      assert.equal(await peer.next(), "2");
      const info = await peer.waitClose(PING_INTERVAL + PING_TIMEOUT + 2000);
      const elapsed = info.at - start;
      assert.ok(elapsed >= PING_INTERVAL + PING_TIMEOUT - 100, `closed after ${elapsed} ms, before pingInterval+pingTimeout`);
      assert.equal(info.code, 1005, "Node closes with a close frame carrying no status code");
      assert.deepEqual(peer.queue, []);
    });
  });

  describe("close", () => {
    it("forcefully closes a polling session: the pending GET gets '6', then 400 code 1", T, async (t) => {
      const s = await PollingSession.open(getServer(), path);
      const pending = track(t, s.startGet());
      await delay(50); // let the GET reach the server before the close packet
      const push = await s.post("1");
      assert.equal(push.status, 200);
      assert.equal(push.body, "ok");
      const poll = await pending.response;
      assert.equal(poll.status, 200);
      assert.equal(poll.body, "6");
      assertHttpError(await pollAnswer(s), ERR.sid);
    });

    it("ends a WebSocket session after a close packet (Node: at the latest by the ping timeout)", T, async (t) => {
      // Node's engine.io ignores a "1" received over WebSocket; the official test passes because
      // the client never answers the ping. Either way the connection must end, with no data.
      const { peer } = track(t, await wsHandshake(getServer(), path));
      peer.send("1");
      await peer.waitClose(PING_INTERVAL + PING_TIMEOUT + 2000);
      assert.ok(peer.queue.every((m) => m === "2"), `only pings may follow: ${JSON.stringify(peer.queue)}`);
    });
  });

  describe("upgrade", () => {
    // Node never sends a noop over the WebSocket; the test "sends no noop over the WebSocket"
    // checks that. The other upgrade tests ignore stray noops so they can check their own point.
    async function upgradeProbe(t, { ignoreNoop = true } = {}) {
      const s = await PollingSession.open(getServer(), path);
      const peer = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket", sid: s.sid }), { autoPong: true }));
      peer.ignoreNoop = ignoreNoop;
      await peer.opened;
      return { s, peer };
    }

    it("sends no noop over the WebSocket: the first frame after 3probe and 5 is the session's own", T, async (t) => {
      const { peer } = await upgradeProbe(t, { ignoreNoop: false });
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      peer.send("5");
      await roundTrip(peer);
    });

    it("upgrades from polling to WebSocket: 2probe/3probe, noop '6' to the pending GET, then 5", T, async (t) => {
      const s = await PollingSession.open(getServer(), path);
      const pending = track(t, s.startGet());
      const peer = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket", sid: s.sid }), { autoPong: true }));
      peer.ignoreNoop = true;
      await peer.opened;
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      const poll = await within(pending.response, 2000, "the pending GET to be flushed");
      assert.equal(poll.status, 200);
      assert.equal(poll.body, "6");
      peer.send("5");
      await roundTrip(peer);
    });

    it("answers a GET sent after the probe with a noop '6' (official variant)", T, async (t) => {
      const { s, peer } = await upgradeProbe(t);
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      const poll = await within(s.get(), 2000, "the noop answer to a GET during the upgrade");
      assert.equal(poll.status, 200);
      assert.equal(poll.body, "6");
      peer.send("5");
      await roundTrip(peer);
    });

    it("rejects HTTP requests with the same sid after the upgrade (400, code 3)", T, async (t) => {
      const { s, peer } = await upgradeProbe(t);
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      peer.send("5");
      await roundTrip(peer); // the upgrade is complete once the session answers over WebSocket
      assertHttpError(await pollAnswer(s), ERR.bad);
      assertHttpError(await s.post("40"), ERR.bad);
      await roundTrip(peer);
    });

    it("refuses a second WebSocket with the same sid after the upgrade", T, async (t) => {
      const { s, peer } = await upgradeProbe(t);
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      peer.send("5");
      await roundTrip(peer);
      const second = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket", sid: s.sid })));
      await assertWsRefused(second);
      await roundTrip(peer);
    });

    it("refuses a second WebSocket with the same sid while an upgrade is in progress", T, async (t) => {
      const { s, peer } = await upgradeProbe(t);
      peer.send("2probe");
      assert.equal(await peer.next(), "3probe");
      const second = track(t, new WsPeer(wurl({ EIO: 4, transport: "websocket", sid: s.sid })));
      await assertWsRefused(second);
      peer.send("5");
      await roundTrip(peer);
    });
  });
}
