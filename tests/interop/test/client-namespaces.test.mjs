// Namespaces: a middleware-protected namespace, dynamic namespaces, unknown namespaces, and several
// namespaces multiplexed on one Engine.IO connection.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connectError, connected, harness, next, waitFor } from "./lib/harness.mjs";

for (const mode of ["websocket", "polling"]) {
  test(`${mode}: /admin accepts the right token`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const admin = h.client(srv.url, { ...MODES[mode], nsp: "/admin", auth: { token: "secret" } });
    const welcome = next(admin, "welcome");
    await connected(admin);
    assert.deepEqual(await welcome, { id: admin.id, nsp: "/admin", auth: { token: "secret" } });
    assert.equal(await admin.timeout(3000).emitWithAck("echo-ack", "admin ack"), "admin ack");
    const echoed = waitFor(admin, "echo");
    admin.emit("echo", "admin echo", Buffer.from([1, 2, 3]));
    assert.deepEqual(await echoed, ["admin echo", Buffer.from([1, 2, 3])]);
  });

  test(`${mode}: /admin middleware rejects a wrong or missing token with message and data`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    for (const auth of [{ token: "wrong" }, undefined, { token: 123 }]) {
      const admin = h.client(srv.url, { ...MODES[mode], nsp: "/admin", ...(auth ? { auth } : {}) });
      const welcomes = [];
      admin.on("welcome", (w) => welcomes.push(w));
      const err = await connectError(admin);
      assert.equal(err.message, "unauthorized", `auth ${JSON.stringify(auth)}`);
      assert.deepEqual(err.data, { reason: "invalid token" });
      assert.equal(admin.connected, false);
      assert.deepEqual(welcomes, []);
    }
  });

  test(`${mode}: dynamic namespaces are created on demand`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    for (const nsp of ["/dyn-1", "/dyn-42", "/dyn-0007"]) {
      const s = h.client(srv.url, { ...MODES[mode], nsp });
      const welcome = next(s, "welcome");
      await connected(s);
      assert.deepEqual(await welcome, { id: s.id, nsp, auth: {} });
      assert.equal(await s.timeout(3000).emitWithAck("echo-ack", nsp), nsp);
    }
  });

  test(`${mode}: unknown namespaces get "Invalid namespace"`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    for (const nsp of ["/nope", "/dyn-", "/dyn-12a", "/dyn-x", "/admin2", "/dyn-1/sub"]) {
      const s = h.client(srv.url, { ...MODES[mode], nsp });
      const err = await connectError(s);
      assert.equal(err.message, "Invalid namespace", nsp);
      assert.equal(s.connected, false);
    }
  });

  test(`${mode}: several namespaces multiplexed on one connection`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const manager = h.manager(srv.url, MODES[mode]);
    let opens = 0;
    manager.on("open", () => opens++);
    const root = manager.socket("/", { auth: { who: "root" } });
    const admin = manager.socket("/admin", { auth: { token: "secret" } });
    const dyn = manager.socket("/dyn-5");
    const welcomes = {
      root: next(root, "welcome"),
      admin: next(admin, "welcome"),
      dyn: next(dyn, "welcome"),
    };
    await Promise.all([connected(root), connected(admin), connected(dyn)]);
    assert.deepEqual(await welcomes.root, { id: root.id, nsp: "/", auth: { who: "root" } });
    assert.deepEqual(await welcomes.admin, { id: admin.id, nsp: "/admin", auth: { token: "secret" } });
    assert.deepEqual(await welcomes.dyn, { id: dyn.id, nsp: "/dyn-5", auth: {} });
    assert.equal(opens, 1, "one Engine.IO connection");
    assert.equal(new Set([root.id, admin.id, dyn.id]).size, 3, "one Socket.IO id per namespace");
    for (const s of [root, admin, dyn]) assert.equal(s.io.engine, manager.engine);

    // Each namespace's events go to its own socket only.
    const log = [];
    for (const [name, s] of Object.entries({ root, admin, dyn })) s.on("echo", (v) => log.push(`${name}:${v}`));
    const rootDone = waitFor(root, "echo", { filter: (v) => v === "r" });
    const adminDone = waitFor(admin, "echo", { filter: (v) => v === "a" });
    const dynDone = waitFor(dyn, "echo", { filter: (v) => v === "d" });
    admin.emit("echo", "a");
    dyn.emit("echo", "d");
    root.emit("echo", "r");
    await Promise.all([rootDone, adminDone, dynDone]);
    assert.deepEqual(log.sort(), ["admin:a", "dyn:d", "root:r"]);

    // A broadcast to everyone in "/" does not leak into the other namespaces on the same connection.
    const leaked = [];
    admin.on("nsp-cast", () => leaked.push("admin"));
    dyn.on("nsp-cast", () => leaked.push("dyn"));
    const rootCast = next(root, "nsp-cast");
    assert.equal(await root.timeout(3000).emitWithAck("broadcast", { event: "nsp-cast", data: "hello /" }), true);
    assert.equal(await rootCast, "hello /");
    // Acks on the other namespaces travel the same connection after the broadcast.
    assert.equal(await admin.timeout(3000).emitWithAck("echo-ack", 1), 1);
    assert.equal(await dyn.timeout(3000).emitWithAck("echo-ack", 2), 2);
    assert.deepEqual(leaked, []);

    // Leaving one namespace leaves the others connected.
    const dynGone = next(dyn, "disconnect");
    dyn.disconnect();
    assert.equal(await dynGone, "io client disconnect");
    assert.equal(await root.timeout(3000).emitWithAck("echo-ack", "root alive"), "root alive");
    assert.equal(await admin.timeout(3000).emitWithAck("echo-ack", "admin alive"), "admin alive");
    assert.equal(opens, 1);
  });

  test(`${mode}: a rejected namespace does not disturb the others on the connection`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const manager = h.manager(srv.url, MODES[mode]);
    const root = manager.socket("/");
    await connected(root);
    const admin = manager.socket("/admin", { auth: { token: "bad" } });
    const unknown = manager.socket("/unknown");
    const [adminErr, unknownErr] = await Promise.all([connectError(admin), connectError(unknown)]);
    assert.equal(adminErr.message, "unauthorized");
    assert.deepEqual(adminErr.data, { reason: "invalid token" });
    assert.equal(unknownErr.message, "Invalid namespace");
    assert.ok(root.connected);
    assert.equal(await root.timeout(3000).emitWithAck("echo-ack", "still here"), "still here");
    // The same connection can then join another namespace successfully.
    const dyn = manager.socket("/dyn-9");
    const welcome = next(dyn, "welcome");
    await connected(dyn);
    assert.equal((await welcome).nsp, "/dyn-9");
  });
}

test("rooms are per namespace", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const manager = h.manager(srv.url, MODES.websocket);
  const root = manager.socket("/");
  const dyn = manager.socket("/dyn-3");
  await Promise.all([connected(root), connected(dyn)]);
  assert.equal(await root.emitWithAck("join", "shared-name"), true);
  assert.deepEqual(await root.emitWithAck("get-rooms"), [root.id, "shared-name"].sort());
  assert.deepEqual(await dyn.emitWithAck("get-rooms"), [dyn.id]);
  const dynGot = [];
  dyn.on("room-cast", (d) => dynGot.push(d));
  const rootGot = next(root, "room-cast");
  // Broadcast from /dyn-3 to its "shared-name" room: nobody there (root joined it in "/").
  assert.equal(await dyn.emitWithAck("broadcast", { to: ["shared-name"], event: "room-cast", data: "dyn" }), true);
  assert.equal(await root.emitWithAck("broadcast", { to: ["shared-name"], event: "room-cast", data: "root" }), true);
  assert.equal(await rootGot, "root");
  assert.equal(await dyn.emitWithAck("echo-ack", "sync"), "sync");
  assert.deepEqual(dynGot, []);
});
