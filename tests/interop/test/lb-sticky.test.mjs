// Every stickiness mode of `ioscale lb` (sid, cookie, ip) keeps HTTP long-polling sessions on their
// node, with and without the upgrade to WebSocket, in front of three `ioscale serve` nodes on Redis.
// Each mode is checked with sessions spread over at least two nodes (else a broken stickiness
// would go unnoticed), one broadcast that every client must get exactly once, and the mode's own
// contract on the wire (unknown sid → 400, the node cookie, the client IP).
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { agentFrom, broadcastExactlyOnce, openClient, spread, startLb, startNodes } from "./lib/lb-util.mjs";
import { request } from "./lib/raw.mjs";
import { startRedis } from "./lib/redis.mjs";

const UNKNOWN_SID = { code: 1, message: "Session ID unknown" };
const MODES = ["polling", "upgrade", "websocket"];
const PER_MODE = 4;

/** GET of the Engine.IO polling endpoint (handshake without sid) through the balancer. */
function pollingUrl(lb, sid) {
  return `${lb.url}/socket.io/?EIO=4&transport=polling${sid ? `&sid=${encodeURIComponent(sid)}` : ""}`;
}

async function handshake(lb, headers = {}) {
  const res = await request(pollingUrl(lb), { headers });
  assert.equal(res.status, 200, `handshake through the balancer: ${res.status} ${res.body}`);
  assert.equal(res.body[0], "0", `open packet: ${res.body}`);
  return { sid: JSON.parse(res.body.slice(1)).sid, res };
}

/** Opens PER_MODE clients of each transport mode one after the other; `extra(i)` adds client options. */
async function openAll(h, lb, extra = () => ({})) {
  const clients = [];
  let i = 0;
  for (const mode of MODES) {
    for (let k = 0; k < PER_MODE; k++, i++) clients.push(await openClient(h, lb.url, mode, extra(i), `${mode} #${k}`));
  }
  return clients;
}

/** The common checks of a mode: transports as asked, spread over >= 2 nodes, a broadcast to all, no session lost. */
async function checkSessions(t, clients) {
  for (const c of clients) {
    const expected = c.label.startsWith("polling") ? "polling" : "websocket";
    assert.equal(c.transport(), expected, c.describe());
  }
  const polling = clients.filter((c) => !c.label.startsWith("websocket"));
  const counts = spread(clients);
  t.diagnostic(`sessions per node: ${JSON.stringify(counts)}; polling/upgrade ones: ${JSON.stringify(spread(polling))}`);
  assert.ok(Object.keys(spread(polling)).length >= 2, `polling sessions must be spread over >= 2 nodes to test stickiness: ${JSON.stringify(spread(polling))}`);
  await broadcastExactlyOnce(clients[0], clients, { tag: "polling-sender" });
  await broadcastExactlyOnce(clients[PER_MODE], clients, { tag: "upgraded-sender" });
  await broadcastExactlyOnce(clients.at(-1), clients, { tag: "websocket-sender" });
  for (const c of clients) {
    assert.equal(c.connects, 1, `one connection per client: ${c.describe()}`);
    assert.deepEqual(c.disconnects, [], `no session lost: ${c.describe()}`);
    assert.equal(c.infos.length, 1, `one server-info per client: ${c.describe()}`);
  }
}

test("ioscale lb stickiness modes keep polling sessions on their node", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const backends = nodes.map((n) => n.address);

  await t.test("sid (default): sessions learned from handshakes; an unknown sid gets 400 Session ID unknown", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--sticky", "sid"]);
    const clients = await openAll(hc, lb);
    await checkSessions(st, clients);

    const res = await request(pollingUrl(lb, "AAAAAAAAAAAAAAAAAAAA"));
    assert.equal(res.status, 400, res.body);
    assert.deepEqual(JSON.parse(res.body), UNKNOWN_SID);
    const health = await lb.health();
    assert.ok(health.trackedSessions >= 2 * PER_MODE, `the balancer tracks the polling sessions: ${JSON.stringify(health)}`);
  });

  await t.test("cookie: the handshake sets ioscale_node=<index>; clients that keep cookies stay on their node", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--sticky", "cookie"]);

    const first = await handshake(lb);
    const cookies = [first.res.headers["set-cookie"] ?? []].flat();
    const node = cookies.map((c) => /^ioscale_node=(\d+)(;|$)/.exec(c)).find(Boolean);
    assert.ok(node, `handshake answer sets the ioscale_node cookie: ${JSON.stringify(cookies)}`);
    assert.ok(Number(node[1]) < 3, `cookie names one of the 3 nodes: ${node[0]}`);
    assert.match(cookies.find((c) => c.startsWith("ioscale_node=")), /Path=\//i);
    // The cookie, not a learned sid, routes the session: without it the session is not found.
    const again = await handshake(lb);
    const withoutCookie = await request(pollingUrl(lb, again.sid));
    assert.equal(withoutCookie.status, 400, `a sid request without the cookie: ${withoutCookie.status} ${withoutCookie.body}`);
    assert.deepEqual(JSON.parse(withoutCookie.body), UNKNOWN_SID);

    const clients = await openAll(hc, lb, () => ({ withCredentials: true }));
    await checkSessions(st, clients);
  });

  await t.test("ip: the client address picks the node; one address always lands on the same node", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--sticky", "ip"]);
    // Each client connects from its own loopback address (127.0.7.1, 127.0.7.2, ...), so the hash
    // has something to spread; a second client from the same address must land on the same node.
    const addressOf = (i) => `127.0.7.${i + 1}`;
    const clients = await openAll(hc, lb, (i) => ({ agent: agentFrom(hc, addressOf(i)) }));
    await checkSessions(st, clients);
    const twins = [];
    for (let i = 0; i < clients.length; i += 3) {
      const mode = MODES[(i / 3) % MODES.length];
      twins.push([clients[i], await openClient(hc, lb.url, mode, { agent: agentFrom(hc, addressOf(i)) }, `${mode} twin of ${addressOf(i)}`)]);
    }
    for (const [original, twin] of twins) {
      assert.equal(twin.serverId(), original.serverId(), `${twin.label} lands where ${original.label} is`);
    }
  });
});
