// What reaches the workers of `ioscale cluster`: exactly the options meant for them. The cluster's
// environment and the `.env` of its working directory do not (OPS_PORT used to make every worker
// crash-loop on the cluster's own ops port); options after `--` reach every worker; an option the
// cluster sets itself, or an invalid one, is refused at startup with exit code 2.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { freePort, openClient } from "./lib/lb-util.mjs";
import { exitWithin, request } from "./lib/ops-util.mjs";
import { startRedis } from "./lib/redis.mjs";
import { spawnCluster, startCluster, workerStarts } from "./lib/cluster-command.mjs";

/** The workers as the cluster's /workers lists them. */
async function workersOf(cluster) {
  const res = await request(`${cluster.opsUrl}/workers`);
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body);
}

/** A polling handshake straight to a worker: { status, open (the parsed open packet, if any) }. */
async function handshake(address, headers = {}) {
  const res = await request(`http://${address}/socket.io/?EIO=4&transport=polling`, { headers });
  return { status: res.status, headers: res.headers, open: res.status === 200 ? JSON.parse(res.body.slice(1)) : null, body: res.body };
}

test("serve variables in the cluster's environment and its .env do not reach the workers; it serves at once", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const dir = mkdtempSync(path.join(tmpdir(), "ioscale-cluster-env-"));
  h.defer(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, ".env"), "MAX_CONNECTIONS=1\nTRANSPORTS=polling\nPING_TIMEOUT=1111\nALLOWED_ORIGINS=http://dotenv.example\n");
  const opsPort = await freePort();
  const env = { OPS_PORT: String(opsPort), PING_INTERVAL: "2222", MAX_CONNECTIONS_PER_IP: "1", SERVER_ID: "intruder", SOCKETIO_PATH: "/elsewhere/" };
  const since = Date.now();
  // OPS_PORT is the cluster's own --ops-port: it must serve it, and no worker may try to bind it.
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-url", redis.url, "--workers", "2"], { env, cwd: dir });
  await cluster.waitFor((out) => /server_id=cluster\s+INFO listening on/.test(out), { label: "the cluster's listening line", timeoutMs: 10000 });
  const ms = Date.now() - since;
  t.diagnostic(`listening after ${ms} ms`);
  assert.ok(ms < 8000, `the cluster serves promptly (${ms} ms)`);
  const workers = await workersOf({ opsUrl: `http://127.0.0.1:${opsPort}` });
  assert.deepEqual(workers.map((w) => w.serverId), ["worker-0", "worker-1"], "the ops port of OPS_PORT is the cluster's");
  for (const worker of workers) {
    const first = await handshake(worker.address);
    assert.equal(first.status, 200, `${worker.serverId}: ${first.body}`);
    assert.equal(first.open.pingInterval, 25000, `${worker.serverId}: PING_INTERVAL of the cluster's environment does not reach it`);
    assert.equal(first.open.pingTimeout, 20000, `${worker.serverId}: PING_TIMEOUT of .env does not reach it`);
    assert.deepEqual(first.open.upgrades, ["websocket"], `${worker.serverId}: TRANSPORTS of .env does not reach it`);
    const second = await handshake(worker.address);
    assert.equal(second.status, 200, `${worker.serverId}: neither MAX_CONNECTIONS (.env) nor MAX_CONNECTIONS_PER_IP (environment) limits it: ${second.body}`);
    const foreign = await handshake(worker.address, { origin: "http://dotenv.example" });
    assert.equal(foreign.status, 403, `${worker.serverId}: ALLOWED_ORIGINS of .env does not reach it`);
  }
  const client = await openClient(h, `http://127.0.0.1:${cluster.stderr().match(/server_id=cluster\s+INFO listening on \S+:(\d+)/)[1]}`, "websocket");
  assert.match(client.serverId(), /^worker-[01]$/, "SERVER_ID of the environment does not name a worker");
  assert.doesNotMatch(cluster.output(), /worker exited/, "no worker crashed");
  assert.equal(workerStarts(cluster.output()).length, 2, "each worker started once");
});

test("options after `--` reach every worker (--allowed-origins, --max-connections)", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const cluster = await startCluster(h, ["--redis-url", redis.url, "--", "--allowed-origins", "http://app.example", "--max-connections", "1"]);
  const workers = await workersOf(cluster);
  assert.equal(workers.length, 2);
  for (const worker of workers) {
    const refused = await handshake(worker.address, { origin: "http://other.example" });
    assert.equal(refused.status, 403, `${worker.serverId} refuses another origin`);
    const allowed = await handshake(worker.address, { origin: "http://app.example" });
    assert.equal(allowed.status, 200, `${worker.serverId} allows http://app.example: ${allowed.body}`);
    assert.equal(allowed.headers["access-control-allow-origin"], "http://app.example");
    const beyond = await handshake(worker.address, { origin: "http://app.example" });
    assert.equal(beyond.status, 503, `${worker.serverId}: --max-connections 1 refuses a second connection`);
  }
});

for (const [args, pattern] of [
  [["--ops-port", "9101"], /--ops-port after `--` is set by the cluster itself/],
  [["--redis-url", "redis://127.0.0.1:1"], /--redis-url after `--` is set by the cluster itself/],
  [["--port=4000"], /--port after `--` is set by the cluster itself/],
  [["--ping-interval", "soon"], /invalid worker option after `--`[\s\S]*--ping-interval/],
  [["--no-such-option"], /invalid worker option after `--`[\s\S]*--no-such-option/],
]) {
  test(`a worker option ${args.join(" ")} is refused at startup: exit 2 and a clear message`, { timeout: 10000 }, async (t) => {
    const h = harness(t);
    const cluster = spawnCluster(h, ["--port", "0", "--redis-url", "redis://127.0.0.1:1", "--", ...args]);
    const { code, signal } = await exitWithin(cluster, 5000);
    assert.equal(signal, null);
    assert.equal(code, 2, cluster.output());
    assert.match(cluster.stderr(), pattern);
    assert.doesNotMatch(cluster.output(), /worker started|listening on|waiting/, "nothing was started");
  });
}
