// `ioscale lb` in front of three `ioscale serve` nodes on one real Redis: 60 polling-only and 60
// WebSocket-only clients connect through the balancer, are spread over the three nodes by
// least-connection, and one broadcast reaches every one of them exactly once. The same balancer
// with `--sticky none` must break polling clients: the negative control that shows the first test
// depends on the stickiness.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { broadcastExactlyOnce, openClient, openClients, spread, startLb, startNodes, waitUntil } from "./lib/lb-util.mjs";
import { startRedis } from "./lib/redis.mjs";

const PER_TRANSPORT = 60;

test("ioscale lb over three nodes on Redis", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const ids = nodes.map((n) => n.serverId);

  await t.test(`${PER_TRANSPORT} polling + ${PER_TRANSPORT} WebSocket clients: least-connection spread, a broadcast reaches each exactly once`, async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, nodes.map((n) => n.address));
    const [polling, ws] = await Promise.all([
      openClients(hc, lb.url, "polling", PER_TRANSPORT),
      openClients(hc, lb.url, "websocket", PER_TRANSPORT),
    ]);
    const all = [...polling, ...ws];
    for (const c of polling) assert.equal(c.transport(), "polling", c.describe());
    for (const c of ws) assert.equal(c.transport(), "websocket", c.describe());

    const counts = spread(all);
    st.diagnostic(`sessions per node: ${JSON.stringify(counts)} (polling ${JSON.stringify(spread(polling))}, websocket ${JSON.stringify(spread(ws))})`);
    const warnings = lb.output().split("\n").filter((l) => /WARN|ERROR/.test(l));
    if (warnings.length) st.diagnostic(`balancer warnings:\n${warnings.slice(0, 10).join("\n")}`);
    assert.deepEqual(Object.keys(counts).sort(), ids, "every node gets sessions");
    for (const id of ids) assert.ok(counts[id] <= all.length / 2, `${id} holds ${counts[id]}/${all.length} sessions (least-connection allows at most 50%)`);
    for (const id of ids) assert.ok(spread(polling)[id] > 0 && spread(ws)[id] > 0, `${id} gets sessions of both transports: ${JSON.stringify({ polling: spread(polling), ws: spread(ws) })}`);

    // The balancer's own view of the same sessions (polling ones learned from handshakes, WebSocket ones tunnelled).
    await waitUntil(async () => (await lb.metrics()).value("ioscale_lb_sessions") === all.length, { timeoutMs: 3000, label: `ioscale_lb_sessions == ${all.length}` });
    const m = await lb.metrics();
    for (const n of nodes) {
      assert.equal(m.value("ioscale_lb_backend_sessions", { backend: n.address }), counts[n.serverId], `ioscale_lb_backend_sessions of ${n.serverId}`);
      assert.equal(m.value("ioscale_lb_backend_up", { backend: n.address }), 1);
    }
    assert.equal(m.value("ioscale_lb_backends_up"), 3);

    await broadcastExactlyOnce(polling[0], all, { tag: "from-polling" });
    await broadcastExactlyOnce(ws[PER_TRANSPORT - 1], all, { tag: "from-websocket" });
  });

  await t.test(`negative control: with --sticky none, ${PER_TRANSPORT} polling clients cannot connect or keep their session`, async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, nodes.map((n) => n.address), ["--sticky", "none"]);

    // WebSocket sessions are one connection each: they do not need stickiness and still work.
    const ws = await openClients(hc, lb.url, "websocket", 6);
    await broadcastExactlyOnce(ws[0], ws);

    const attempts = await Promise.allSettled(
      Array.from({ length: PER_TRANSPORT }, (_, i) => openClient(hc, lb.url, "polling", {}, `polling #${i}`)),
    );
    const opened = attempts.filter((a) => a.status === "fulfilled").map((a) => a.value);
    const refused = attempts.filter((a) => a.status === "rejected").map((a) => a.reason.message);
    // A session that did connect must survive one broadcast round trip to count as working.
    let working = [];
    if (opened.length) {
      const sender = ws[0];
      const text = `none-${Date.now()}`;
      const got = opened.map((c) =>
        new Promise((resolve) => {
          const done = (ok) => {
            c.socket.off("message", onMessage);
            c.socket.off("disconnect", onDisconnect);
            clearTimeout(timer);
            resolve(ok);
          };
          const onMessage = (msg) => msg.message === text && done(c.socket.connected);
          const onDisconnect = () => done(false);
          const timer = setTimeout(() => done(false), 3000);
          c.socket.on("message", onMessage);
          c.socket.on("disconnect", onDisconnect);
          if (!c.socket.connected) done(false);
        }),
      );
      sender.socket.emit("message", { message: text });
      const ok = await Promise.all(got);
      working = opened.filter((_, i) => ok[i]);
    }
    st.diagnostic(
      `--sticky none: ${refused.length} polling clients could not connect, ${opened.length - working.length} lost their session, ` +
        `${working.length} kept it; first errors: ${JSON.stringify(refused.slice(0, 3))}`,
    );
    const broken = PER_TRANSPORT - working.length;
    assert.ok(
      broken >= PER_TRANSPORT * 0.8,
      `without stickiness at least 80% of the polling clients must fail, but only ${broken}/${PER_TRANSPORT} did ` +
        `(${refused.length} refused, ${opened.length - working.length} dropped)`,
    );
    // The failures are the balancer sending requests of a session to a node that does not know it.
    const dropped = opened.filter((c) => !working.includes(c));
    const reasons = [...refused, ...dropped.flatMap((c) => [...c.errors.map((e) => e.message), ...c.disconnects])];
    assert.ok(
      reasons.some((r) => /xhr (poll|post) error|transport error|Session ID unknown|websocket error/i.test(r)),
      `the polling clients fail on transport errors: ${JSON.stringify(reasons.slice(0, 5))}`,
    );
  });
});
