// `ioscale cluster`: N `ioscale serve` workers plus the balancer in one command. Clients connect
// through its public port; a worker killed with SIGKILL is restarted and its clients reconnect and
// keep receiving broadcasts; SIGTERM stops everything (exit 0, no worker left); without a Redis URL
// it refuses to start (exit 2, a clear message).
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { IOSCALE_ENV, broadcastExactlyOnce, cancellable, freePort, openClient, processAlive, spread, waitUntil } from "./lib/lb-util.mjs";
import { exitWithin, parseMetrics, request } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0.2 };
const MODES = ["polling", "upgrade", "websocket"];
const WORKERS = 3;

/** Every "worker started worker=I port=P pid=N" line so far: [{ worker, port, pid }]. */
function workerStarts(output) {
  return [...output.matchAll(/worker started worker=(\d+) port=(\d+) pid=(\d+)/g)].map((m) => ({
    worker: Number(m[1]),
    port: Number(m[2]),
    pid: Number(m[3]),
  }));
}

/** Resolves once `pred(output)` holds, checked on every output chunk; rejects on timeout or exit. */
function waitForOutput(run, pred, { timeoutMs = 10000, label = String(pred) } = {}) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const value = pred(run.output());
      if (value) {
        done();
        resolve(value);
      }
      return value;
    };
    const onExit = () => {
      if (!check()) {
        done();
        reject(new Error(`cluster exited before ${label}:\n${run.output().slice(-4000)}`));
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no ${label} within ${timeoutMs} ms:\n${run.output().slice(-4000)}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      run.proc.stdout.off("data", check);
      run.proc.stderr.off("data", check);
      run.proc.off("exit", onExit);
    };
    run.proc.stdout.on("data", check);
    run.proc.stderr.on("data", check);
    run.proc.on("exit", onExit);
    check();
  });
}

/**
 * `ioscale cluster --workers 3 ...` on free ports. At the end of the test: SIGTERM (then SIGKILL),
 * and every worker pid it ever logged is SIGKILLed if still alive (a SIGKILLed supervisor would
 * leave them behind).
 */
async function startCluster(h, redisUrl, args = []) {
  for (let attempt = 0; ; attempt++) {
    const opsPort = await freePort();
    const argv = ["cluster", "--workers", String(WORKERS), "--host", "127.0.0.1", "--port", "0", "--redis-url", redisUrl, "--ops-port", String(opsPort), ...args];
    const run = h.spawn("ioscale", argv, { unsetEnv: IOSCALE_ENV });
    h.defer(async () => {
      if (run.proc.exitCode === null && run.proc.signalCode === null) {
        run.proc.kill("SIGTERM");
        const timer = setTimeout(() => run.proc.kill("SIGKILL"), 8000);
        await run.exited;
        clearTimeout(timer);
      }
      for (const { pid } of workerStarts(run.output())) {
        if (processAlive(pid)) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {}
        }
      }
    });
    let port;
    try {
      // The balancer's line (the workers log "listening on" too, with their own server_id).
      port = await waitForOutput(run, (out) => Number(/server_id=cluster\s+INFO listening on \S+:(\d+)/.exec(out)?.[1]), {
        label: "the cluster's listening line",
      });
    } catch (error) {
      await run.kill();
      if (attempt < 4 && /cannot listen/.test(error.message)) continue;
      throw error;
    }
    return Object.assign(run, { port, url: `http://127.0.0.1:${port}`, opsUrl: `http://127.0.0.1:${opsPort}` });
  }
}

test("ioscale cluster without --redis-url exits with code 2 and says Redis is needed", { timeout: 10000 }, async (t) => {
  const h = harness(t);
  const run = h.spawn("ioscale", ["cluster", "--workers", "2", "--port", "0"], { unsetEnv: IOSCALE_ENV });
  const { code, signal } = await exitWithin(run, 5000);
  assert.equal(signal, null);
  assert.equal(code, 2, run.output());
  assert.match(run.stderr(), /--redis-url|REDIS_URL/, "the message names the missing option");
  assert.match(run.stderr(), /redis/i);
  assert.doesNotMatch(run.output(), /worker started|listening on/, "nothing was started");
});

test("ioscale cluster --workers 3: clients through it, a killed worker is restarted, SIGTERM stops everything", { timeout: 45000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const cluster = await startCluster(h, redis.url, ["--health-interval", "200", "--fail-timeout", "2", "--shutdown-timeout", "3"]);

  const starts = await waitForOutput(cluster, (out) => {
    const s = workerStarts(out);
    return s.length >= WORKERS && s;
  }, { label: `${WORKERS} "worker started" lines` });
  assert.deepEqual(starts.map((s) => s.worker).sort(), [0, 1, 2], JSON.stringify(starts));
  for (const s of starts) assert.ok(processAlive(s.pid), `worker ${s.worker} (pid ${s.pid}) runs`);
  await waitForSubscribers(admin, WORKERS);
  // Ready when the balancer sees every worker up (its health checks run every 200 ms).
  await waitUntil(async () => {
    const res = await request(`${cluster.opsUrl}/health`);
    return res.status === 200 && JSON.parse(res.body).backendsUp === WORKERS;
  }, { timeoutMs: 10000, label: `balancer /health backendsUp == ${WORKERS}` });

  const clients = [];
  for (let i = 0; i < 9; i++) clients.push(await openClient(h, cluster.url, MODES[i % 3], RECONNECT, `${MODES[i % 3]} #${i}`));
  const before = spread(clients);
  t.diagnostic(`sessions per worker: ${JSON.stringify(before)}`);
  assert.deepEqual(Object.keys(before).sort(), ["worker-0", "worker-1", "worker-2"], "the workers' server ids are worker-0..2 and all get sessions");
  await broadcastExactlyOnce(clients[0], clients, { tag: "cluster" });

  // Kill worker 1 (SIGKILL, its pid from the log).
  const victim = starts.find((s) => s.worker === 1);
  const orphans = clients.filter((c) => c.serverId() === "worker-1");
  const others = clients.filter((c) => !orphans.includes(c));
  // Each of its clients reconnects and gets a server-info again (from any live worker).
  const moved = orphans.map((c) =>
    cancellable(c.socket, "server-info", { timeoutMs: 10000, label: `${c.label} reconnected` }),
  );
  const logBefore = cluster.output().length;
  process.kill(victim.pid, "SIGKILL");
  const restarted = await waitForOutput(cluster, (out) => {
    const tail = out.slice(logBefore);
    if (!/worker exited: restarting/.test(tail)) return null;
    return workerStarts(tail).find((s) => s.worker === 1);
  }, { label: '"worker exited: restarting" and a new "worker started worker=1"' });
  assert.match(cluster.output().slice(logBefore), /worker=1 .*worker exited: restarting|worker exited: restarting.*worker=1/, "the exit is logged for worker 1");
  assert.notEqual(restarted.pid, victim.pid, "a new process");
  assert.equal(restarted.port, victim.port, "on the same internal port");
  assert.ok(!processAlive(victim.pid), `the killed worker (pid ${victim.pid}) is gone`);
  assert.ok(processAlive(restarted.pid), `the restarted worker (pid ${restarted.pid}) runs`);

  const settled = await Promise.allSettled(moved.map((m) => m.promise));
  assert.deepEqual(orphans.filter((_, i) => settled[i].status === "rejected").map((c) => c.describe()), [], "the killed worker's clients reconnect");
  for (const c of orphans) assert.ok(c.socket.connected && c.connects === 2 && c.infos.length === 2, c.describe());
  for (const c of others) assert.deepEqual(c.disconnects, [], `clients of the other workers keep their session: ${c.describe()}`);
  t.diagnostic(`after the restart: ${JSON.stringify(spread(clients))}`);
  await waitForSubscribers(admin, WORKERS); // the restarted worker is back on Redis
  await broadcastExactlyOnce(others[0], clients, { tag: "after-restart" });
  await broadcastExactlyOnce(orphans[0], clients, { tag: "after-restart" });

  // The restarted worker serves new sessions again.
  await waitUntil(async () => {
    const res = await request(`${cluster.opsUrl}/metrics`);
    return parseMetrics(res.body).value("ioscale_lb_backends_up") === WORKERS;
  }, { timeoutMs: 8000, label: "all workers up again in the balancer" });
  const late = [];
  for (let i = 0; i < 3; i++) late.push(await openClient(h, cluster.url, MODES[i], {}, `late ${MODES[i]}`));
  assert.ok(
    late.some((c) => c.serverId() === "worker-1"),
    `new sessions reach the restarted worker: ${JSON.stringify(late.map((c) => c.serverId()))} (sessions ${JSON.stringify(spread(clients))})`,
  );
  await broadcastExactlyOnce(late.find((c) => c.serverId() === "worker-1") ?? late[0], [...clients, ...late], { tag: "late" });

  // SIGTERM: exit code 0 and no worker process left (clients still connected).
  const pids = workerStarts(cluster.output()).map((s) => s.pid);
  const logAtTerm = cluster.output().length;
  cluster.proc.kill("SIGTERM");
  const { code, signal, ms } = await exitWithin(cluster, 12000);
  t.diagnostic(`cluster exited ${ms} ms after SIGTERM`);
  if (ms > 2000) t.diagnostic(`shutdown log:\n${cluster.output().slice(logAtTerm).split("\n").filter((l) => !/client (dis)?connected/.test(l)).join("\n")}`);
  assert.equal(signal, null, cluster.output().slice(-3000));
  assert.equal(code, 0, cluster.output().slice(-3000));
  const alive = pids.filter(processAlive);
  assert.deepEqual(alive, [], `no worker process remains after the cluster exited (pids ${pids.join(", ")})`);
  assert.match(cluster.output(), /cluster stopped/);
});

test("ioscale cluster serves clients as soon as it logs listening (default health interval)", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const cluster = await startCluster(h, redis.url);
  // No readiness wait: the "listening on" line is what a supervisor or a test waits for.
  const res = await request(`${cluster.url}/socket.io/?EIO=4&transport=polling`);
  const attempts = await Promise.allSettled(MODES.map((mode) => openClient(h, cluster.url, mode, { timeout: 5000 }, `${mode} right after listening`)));
  const failed = attempts.filter((a) => a.status === "rejected").map((a) => a.reason.message);
  const log = cluster.output().split("\n").filter((l) => /server_id=cluster/.test(l)).slice(0, 12).join("\n");
  assert.equal(res.status, 200, `a polling handshake right after "listening on" answers ${res.status} ${JSON.stringify(res.body)}; cluster log:\n${log}`);
  assert.deepEqual(failed, [], `clients connecting right after "listening on" must get through; cluster log:\n${log}`);
});
