// The operations view of `ioscale cluster` on its --ops-port: /health and /ready of the balancer
// (ready while a worker is available), /metrics with the balancer's families, the supervisor's and
// every worker's relabelled worker="worker-<i>" (one OpenMetrics exposition: each family once),
// /workers listing each worker's address and pid, /stats the cluster view. Through the public port,
// ops paths reach one worker, as any other non-Socket.IO path (documented).
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { openClient, spread, waitUntil } from "./lib/lb-util.mjs";
import { parseMetrics, request } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";
import { startCluster } from "./lib/cluster-command.mjs";

test("the cluster's ops port: /workers, /health, /ready, /metrics of every worker, /stats", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const cluster = await startCluster(h, ["--redis-url", redis.url, "--health-interval", "200"]);
  await waitForSubscribers(admin, 2);

  const list = await request(`${cluster.opsUrl}/workers`);
  assert.equal(list.status, 200, list.body);
  const workers = JSON.parse(list.body);
  assert.deepEqual(
    workers.map(({ serverId, address, pid }) => ({ serverId, address, pid })),
    cluster.workers.sort((a, b) => a.worker - b.worker).map((w) => ({ serverId: `worker-${w.worker}`, address: `127.0.0.1:${w.port}`, pid: w.pid })),
    "each worker with its internal address and pid, as logged",
  );

  await waitUntil(async () => {
    const res = await request(`${cluster.opsUrl}/health`);
    return res.status === 200 && JSON.parse(res.body).backendsUp === 2;
  }, { timeoutMs: 10000, label: "both workers up in the balancer" });
  const health = JSON.parse((await request(`${cluster.opsUrl}/health`)).body);
  assert.equal(health.status, "ok");
  assert.equal(health.workers, 2);
  assert.equal(health.workersRunning, 2);
  const ready = await request(`${cluster.opsUrl}/ready`);
  assert.equal(ready.status, 200, ready.body);
  assert.equal(JSON.parse(ready.body).ready, true);

  const modes = ["websocket", "polling", "upgrade", "websocket", "websocket"];
  const clients = [];
  for (const [i, mode] of modes.entries()) clients.push(await openClient(h, cluster.url, mode, {}, `${mode} #${i}`));
  const sessions = spread(clients);
  t.diagnostic(`sessions per worker: ${JSON.stringify(sessions)}`);

  const res = await request(`${cluster.opsUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^application\/openmetrics-text/);
  assert.match(res.body, /# EOF\n$/, "one exposition, ended once");
  const types = res.body.split("\n").filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2]);
  assert.deepEqual(types.filter((name, i) => types.indexOf(name) !== i), [], "every family is described once");
  const metrics = parseMetrics(res.body);
  assert.equal(metrics.value("ioscale_lb_backends_up"), 2, "the balancer's families");
  for (const id of ["worker-0", "worker-1"]) {
    assert.equal(metrics.value("ioscale_cluster_worker_up", { worker: id }), 1);
    assert.equal(metrics.value("ioscale_cluster_worker_restarts_total", { worker: id }), 0);
    const connections = ["polling", "websocket"].reduce((sum, transport) => sum + metrics.value("ioscale_connections", { worker: id, transport }), 0);
    assert.equal(connections, sessions[id] ?? 0, `${id}'s own connections, labelled with its id`);
  }

  const stats = await request(`${cluster.opsUrl}/stats`);
  assert.equal(stats.status, 200, stats.body);
  const view = JSON.parse(stats.body);
  assert.equal(view.serversOnline, 2);
  assert.equal(view.totalConnections, clients.length);

  // The public port forwards ops paths to a worker, like any path outside Socket.IO.
  const publicHealth = await request(`${cluster.url}/health`);
  assert.equal(publicHealth.status, 200);
  assert.match(JSON.parse(publicHealth.body).serverId, /^worker-[01]$/);
  assert.equal((await request(`${cluster.opsUrl}/nothing-here`)).status, 404);
});

test("the cluster's /ready: 503 while no worker answers the balancer, and while it shuts down", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const cluster = await startCluster(h, ["--redis-url", redis.url, "--health-interval", "200", "--shutdown-timeout", "5"]);
  const pids = cluster.workers.map((w) => w.pid);
  const ready = async () => {
    const res = await request(`${cluster.opsUrl}/ready`);
    return { status: res.status, ...JSON.parse(res.body) };
  };
  await waitUntil(async () => (await ready()).status === 200, { timeoutMs: 10000, label: "/ready 200" });
  // Frozen workers (SIGSTOP) fail the balancer's health checks.
  const resume = () => pids.forEach((pid) => process.kill(pid, "SIGCONT"));
  h.defer(resume);
  pids.forEach((pid) => process.kill(pid, "SIGSTOP"));
  await waitUntil(async () => (await ready()).status === 503, { timeoutMs: 10000, label: "/ready 503 with every worker frozen" });
  assert.deepEqual(await ready(), { status: 503, ready: false, reason: "no worker available" });
  const metrics = parseMetrics((await request(`${cluster.opsUrl}/metrics`)).body);
  assert.equal(metrics.value("ioscale_lb_backends_up"), 0);
  for (const id of ["worker-0", "worker-1"]) assert.equal(metrics.value("ioscale_cluster_worker_up", { worker: id }), 0, `${id} did not answer the scrape`);
  resume();
  await waitUntil(async () => (await ready()).status === 200, { timeoutMs: 10000, label: "/ready 200 again" });

  // A worker that does not stop at once keeps the cluster in its shutdown: /ready says so.
  process.kill(pids[0], "SIGSTOP");
  cluster.proc.kill("SIGTERM");
  await waitUntil(async () => (await ready()).status === 503, { timeoutMs: 5000, label: "/ready 503 during the shutdown" });
  assert.deepEqual(await ready(), { status: 503, ready: false, reason: "shutting down" });
  process.kill(pids[0], "SIGCONT");
  const { code } = await cluster.exited;
  assert.equal(code, 0, cluster.output().slice(-3000));
});
