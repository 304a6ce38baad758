// A node that drains (SIGTERM) keeps serving its own sessions and answers new handshakes with 503
// until its last session has its close. Behind `ioscale lb` those handshakes must land on another
// node: the balancer retries a handshake that a node refuses with 503 (nginx's
// `proxy_next_upstream http_503`), as it retries one that fails or times out.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { openClient, startLb, startNode, waitUntil } from "./lib/lb-util.mjs";

/** One request on its own connection: { status, body }. */
function once(port, method, target, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: target, agent: false, headers: { connection: "close" } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

test("ioscale lb: handshakes routed to a draining node (503) are retried on another node; its own session still gets its close", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const quiet = ["--ping-interval", "600000", "--ping-timeout", "20000", "--shutdown-timeout", "10"];
  const draining = await startNode(h, { serverId: "drain-a", args: quiet });
  const healthy = await startNode(h, { serverId: "drain-b", args: quiet });
  // Round-robin, no health checks: every second new session is routed to the draining node.
  const lb = await startLb(h, [draining.address, healthy.address], ["--policy", "round-robin", "--health-interval", "0"]);

  // A session of the draining node that has polled once and is between two polls: the drain
  // waits for its next poll, so the node stays up (and refuses handshakes) meanwhile.
  const open = await once(draining.port, "GET", "/socket.io/?EIO=4&transport=polling");
  assert.equal(open.status, 200);
  const target = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(JSON.parse(open.body.slice(1)).sid)}`;
  assert.equal((await once(draining.port, "POST", target, "40")).status, 200);
  assert.match((await once(draining.port, "GET", target)).body, /^40/);

  draining.kill("SIGTERM");
  await waitUntil(async () => (await once(draining.port, "GET", "/socket.io/?EIO=4&transport=polling")).status === 503, {
    label: "the draining node refuses handshakes",
  });

  const clients = [];
  for (let i = 0; i < 6; i++) clients.push(await openClient(h, lb.url, i % 2 ? "polling" : "websocket", {}, `client #${i}`));
  assert.deepEqual(clients.map((c) => c.serverId()), clients.map(() => "drain-b"), "every new session on the healthy node");
  assert.deepEqual(clients.flatMap((c) => c.errors.map((e) => e.message)), [], "no connect_error");
  assert.ok(draining.running(), "the node was still draining while the handshakes were retried");

  // The draining node's own session still gets its close, and then the node exits.
  const last = await once(draining.port, "GET", target);
  assert.equal(last.status, 200);
  assert.match(last.body, /(^|\x1e)1$/, `the close packet: ${JSON.stringify(last.body)}`);
  await waitUntil(() => !draining.running(), { label: "the drained node exits" });
});
