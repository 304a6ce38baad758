// `ioscale cluster` and signals: a signal sent to its whole process group (a terminal's Ctrl-C,
// `timeout`, `kill -- -PGID`) drains every worker once (clients see "transport close", every worker
// exits 0, the cluster exits 0); a SIGKILLed supervisor leaves no worker behind; a signal during the
// startup (waiting for Redis) stops it at once.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { freePort, openClient, processAlive, spread, waitUntil } from "./lib/lb-util.mjs";
import { exitWithin, request } from "./lib/ops-util.mjs";
import { startRedis } from "./lib/redis.mjs";
import { redisOnPort, spawnCluster, startCluster, workerExits, workerStarts } from "./lib/cluster-command.mjs";

const MODES = ["websocket", "polling", "upgrade"];

for (const signal of ["SIGINT", "SIGTERM"]) {
  test(`${signal} to the cluster's process group: every worker drains once, clients see "transport close", exit 0`, { timeout: 40000 }, async (t) => {
    const h = harness(t);
    const redis = await startRedis({ h });
    const cluster = await startCluster(h, ["--redis-url", redis.url, "--health-interval", "200", "--shutdown-timeout", "5"]);
    await waitUntil(async () => {
      const res = await request(`${cluster.opsUrl}/health`);
      return res.status === 200 && JSON.parse(res.body).backendsUp === 2;
    }, { timeoutMs: 10000, label: "both workers up in the balancer" });
    const clients = [];
    for (let i = 0; i < 6; i++) clients.push(await openClient(h, cluster.url, MODES[i % 3], {}, `${MODES[i % 3]} #${i}`));
    assert.deepEqual(Object.keys(spread(clients)).sort(), ["worker-0", "worker-1"], "both workers hold clients");
    const closes = clients.map((c) => new Promise((resolve) => c.socket.once("disconnect", resolve)));
    const pids = cluster.workers.map((w) => w.pid);
    const since = Date.now();
    // As a terminal does: the signal goes to every process of the foreground group.
    process.kill(-cluster.pid, signal);
    const { code, signal: killedBy, ms } = await exitWithin(cluster, 15000, since);
    t.diagnostic(`cluster exited ${ms} ms after ${signal} to its group`);
    const twice = cluster.output().split("\n").filter((l) => /second signal/.test(l));
    assert.deepEqual(twice, [], "no process takes the signal twice (a worker would exit 130 without draining)");
    const exits = workerExits(cluster.output());
    assert.deepEqual(
      exits.map(({ worker, code: exit, line }) => ({ worker, exit, stopped: /worker stopped/.test(line) })).sort((a, b) => a.worker - b.worker),
      [{ worker: 0, exit: "0", stopped: true }, { worker: 1, exit: "0", stopped: true }],
      `each worker is stopped once and exits 0 (not 130: a second signal):\n${exits.map((e) => e.line).join("\n")}`,
    );
    const reasons = await Promise.all(closes);
    assert.deepEqual(reasons, clients.map(() => "transport close"), `every client is closed by its drained worker: ${clients.map((c) => c.describe()).join("; ")}`);
    assert.equal(killedBy, null, cluster.output().slice(-3000));
    assert.equal(code, 0, cluster.output().slice(-3000));
    assert.deepEqual(pids.filter(processAlive), [], "no worker is left");
  });
}

test("a SIGKILLed supervisor leaves no worker behind: each drains and exits", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const cluster = await startCluster(h, ["--redis-url", redis.url, "--shutdown-timeout", "3"]);
  const pids = cluster.workers.map((w) => w.pid);
  assert.deepEqual(pids.filter(processAlive), pids, "the workers run");
  process.kill(cluster.pid, "SIGKILL");
  await cluster.exited;
  await waitUntil(() => pids.every((pid) => !processAlive(pid)), { timeoutMs: 8000, label: `workers ${pids.join(", ")} exit after their supervisor died` });
  assert.match(cluster.output(), /server_id=worker-0\s+INFO shutting down/, "worker-0 shut down gracefully");
  assert.match(cluster.output(), /server_id=worker-1\s+INFO shutting down/, "worker-1 shut down gracefully");
});

test("SIGTERM while the cluster waits for Redis stops it at once, without starting a worker", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const port = await freePort(); // nothing listens there
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-url", `redis://127.0.0.1:${port}`, "--redis-wait", "60"]);
  await cluster.waitFor((out) => /waiting up to 60 s/.test(out), { label: "the waiting-for-Redis line", timeoutMs: 8000 });
  const since = Date.now();
  cluster.proc.kill("SIGTERM");
  const { code, signal, ms } = await exitWithin(cluster, 3000, since);
  t.diagnostic(`exited ${ms} ms after SIGTERM`);
  assert.equal(signal, null);
  assert.equal(code, 0, cluster.output());
  assert.deepEqual(workerStarts(cluster.output()), [], "no worker was started");
});

test("SIGTERM while the workers crash-loop at startup stops the cluster at once", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const dir = mkdtempSync(path.join(tmpdir(), "ioscale-cluster-loop-"));
  h.defer(() => rmSync(dir, { recursive: true, force: true }));
  const key = path.join(dir, "key.pem");
  writeFileSync(key, generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "pem" }));
  const port = await freePort();
  // The key is checked at startup, then removed while the cluster waits for Redis: every worker
  // then fails to start (exit 2), again and again.
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-url", `redis://127.0.0.1:${port}`, "--redis-wait", "30", "--", "--auth-jwt-public-key", key]);
  await cluster.waitFor((out) => /waiting up to 30 s/.test(out), { label: "the waiting-for-Redis line" });
  rmSync(key);
  await redisOnPort(h, port);
  await cluster.waitFor((out) => (out.match(/worker exited: restarting/g) ?? []).length >= 4, { label: "a crash loop", timeoutMs: 15000 });
  const since = Date.now();
  cluster.proc.kill("SIGTERM");
  const { code, signal, ms } = await exitWithin(cluster, 3000, since);
  t.diagnostic(`exited ${ms} ms after SIGTERM`);
  assert.equal(signal, null);
  assert.equal(code, 0, cluster.output().slice(-3000));
  const pids = workerStarts(cluster.output()).map((s) => s.pid);
  await waitUntil(() => pids.every((pid) => !processAlive(pid)), { timeoutMs: 2000, label: "no worker left" });
});

test("a second signal during the drain exits at once (130); the workers still stop", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const cluster = await startCluster(h, ["--redis-url", redis.url, "--shutdown-timeout", "20"]);
  const pids = cluster.workers.map((w) => w.pid);
  const frozen = cluster.workers.find((w) => w.worker === 0).pid;
  // A frozen worker holds the drain (its supervisor waits up to --shutdown-timeout for it).
  process.kill(frozen, "SIGSTOP");
  h.defer(() => process.kill(frozen, "SIGCONT"));
  cluster.proc.kill("SIGTERM");
  await cluster.waitFor((out) => /worker stopped worker=1/.test(out), { label: "worker 1 stopped" });
  const since = Date.now();
  cluster.proc.kill("SIGTERM");
  const { code, ms } = await exitWithin(cluster, 2000, since);
  t.diagnostic(`exited ${ms} ms after the second signal`);
  assert.equal(code, 130, cluster.output().slice(-3000));
  process.kill(frozen, "SIGCONT");
  await waitUntil(() => pids.every((pid) => !processAlive(pid)), { timeoutMs: 5000, label: "the frozen worker exits once resumed" });
});
