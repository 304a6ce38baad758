// Connection state recovery on one node (`ioscale serve --connection-state-recovery MS`), with the
// official socket.io-client: a client whose TCP connection is cut (no close frame, no Engine.IO
// close) comes back with `recovered === true`, its id and its room, and receives every message it
// missed exactly once, in order; a client that disconnects itself, or comes back after its session
// expired, gets a fresh connection.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { connected, harness, next, waitFor } from "./lib/harness.mjs";

/**
 * A TCP proxy to the server whose `cut()` destroys every current connection (both sides), and
 * whose `block()` also refuses new ones until `unblock()`.
 */
async function cuttableProxy(h, targetPort) {
  const pairs = new Set();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const up = net.connect({ port: targetPort, host: "127.0.0.1" });
    const pair = { client, up };
    pairs.add(pair);
    const destroy = () => {
      client.destroy();
      up.destroy();
      pairs.delete(pair);
    };
    for (const s of [client, up]) {
      s.on("error", destroy);
      s.on("close", destroy);
    }
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const proxy = {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      for (const { client, up } of pairs) {
        client.destroy();
        up.destroy();
      }
      pairs.clear();
    },
    block() {
      blocked = true;
      proxy.cut();
    },
    unblock() {
      blocked = false;
    },
    close() {
      proxy.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  h.defer(() => proxy.close());
  return proxy;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once the server's log matches `pattern`. */
async function logged(srv, pattern, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(srv.output())) {
    if (Date.now() > deadline) throw new Error(`server did not log ${pattern}:\n${srv.output()}`);
    await pause(20);
  }
}

// WebSocket: the server sees the TCP connection close at once. Polling: it learns that the client
// is gone only by the ping timeout, so the proxy refuses connections until the server logged the
// disconnect (a client back earlier would find its old socket still there).
const CASES = {
  websocket: { client: { transports: ["websocket"] }, args: [], disconnect: /transport (close|error)/ },
  polling: {
    client: { transports: ["polling"] },
    args: ["--ping-interval", "300", "--ping-timeout", "300"],
    disconnect: /ping timeout/,
  },
};

for (const [mode, { client: clientOpts, args, disconnect }] of Object.entries(CASES)) {
  test(`${mode}: a client cut without a close recovers its id, its room and every missed message once, in order`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.app(["serve", "--server-id", "node-a", "--connection-state-recovery", "60000", ...args]);
    const proxy = await cuttableProxy(h, srv.port);
    const receiver = h.client(proxy.url, { ...clientOpts, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    await connected(receiver);
    assert.equal(receiver.recovered, false);
    const firstId = receiver.id;
    const joined = await receiver.timeout(5000).emitWithAck("join", "r");
    assert.deepEqual(joined, { ok: true, room: "r" });

    let infos = 0;
    receiver.on("server-info", () => infos++);
    const got = [];
    const offsets = [];
    receiver.on("message", (msg, offset) => {
      got.push(msg.message);
      offsets.push(offset);
    });
    const publisher = h.client(srv.url, { transports: ["websocket"] });
    await connected(publisher);

    const total = 40;
    const send = (i) => publisher.emit("message", { message: String(i), room: "r" });
    // Some messages before the cut, so that the receiver holds an offset.
    for (let i = 0; i < 5; i++) send(i);
    await waitFor(receiver, "message", { filter: (msg) => msg.message === "4" });

    const disconnected = waitFor(receiver, "disconnect", { timeoutMs: 10000 });
    proxy.block();
    await disconnected;
    // Messages while the receiver is away (and around its return).
    for (let i = 5; i < 20; i++) send(i);
    await logged(srv, new RegExp(`socket_id=${firstId}.*reason=${disconnect.source}|reason=${disconnect.source}.*socket_id=${firstId}`));
    const reconnected = waitFor(receiver, "connect", { timeoutMs: 15000 });
    proxy.unblock();
    for (let i = 20; i < total; i++) {
      send(i);
      await pause(10);
    }
    await reconnected;
    assert.equal(receiver.recovered, true, "recovered");
    assert.equal(receiver.id, firstId, "same socket id");
    const end = waitFor(receiver, "message", { timeoutMs: 10000, filter: (msg) => msg.message === "end" });
    publisher.emit("message", { message: "end", room: "r" });
    await end;
    assert.deepEqual(got, [...Array.from({ length: total }, (_, i) => String(i)), "end"]);
    assert.equal(infos, 0, "the app does not greet a recovered socket again");
    // Every eligible packet carries an offset (`<epoch>-<n>`), increasing.
    assert.ok(offsets.every((o) => typeof o === "string" && /^.+-\d+$/.test(o)), `offsets ${offsets}`);
    const numeric = offsets.map((o) => Number(o.slice(o.lastIndexOf("-") + 1)));
    assert.deepEqual([...numeric].sort((a, b) => a - b), numeric);
    assert.equal(new Set(numeric).size, numeric.length);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(metrics, /^ioscale_recoveries_total\{result="attempted"\} 1$/m);
    assert.match(metrics, /^ioscale_recoveries_total\{result="recovered"\} 1$/m);
  });
}

test("a client that disconnects itself is not recovered", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "node-a", "--connection-state-recovery", "60000"]);
  const socket = h.client(srv.url, { transports: ["websocket"] });
  const info = next(socket, "server-info");
  await connected(socket);
  await info;
  const firstId = socket.id;
  socket.disconnect();
  const infoAgain = next(socket, "server-info");
  socket.connect();
  await connected(socket);
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, firstId);
  // A fresh connection gets the app's greeting again.
  await infoAgain;
});

test("a session past its expiry gives a fresh connection", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "node-a", "--connection-state-recovery", "300"]);
  const proxy = await cuttableProxy(h, srv.port);
  const socket = h.client(proxy.url, {
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 1500,
    reconnectionDelayMax: 1500,
  });
  const info = next(socket, "server-info");
  await connected(socket);
  await info;
  const firstId = socket.id;
  const disconnected = waitFor(socket, "disconnect");
  proxy.cut();
  await disconnected;
  const reconnected = waitFor(socket, "connect", { timeoutMs: 10000 });
  await reconnected;
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, firstId);
});
