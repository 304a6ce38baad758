// Helpers of the cluster-command-*.test.mjs files: `ioscale cluster` spawned as its own process-group
// leader (so a test can signal the whole group, as a terminal's Ctrl-C or `timeout` does), with a
// chosen environment and working directory, its output awaitable line by line, and every process it
// started (itself and each worker pid it logged) stopped at the end of the test.
import { spawn } from "node:child_process";
import { binaryPath } from "./server.mjs";
import { waitForPong } from "./redis.mjs";
import { IOSCALE_ENV, freePort, processAlive } from "./lb-util.mjs";

/** Every "worker started worker=I port=P pid=N" line so far: [{ worker, port, pid }]. */
export function workerStarts(output) {
  return [...output.matchAll(/worker started worker=(\d+) port=(\d+) pid=(\d+)/g)].map((m) => ({
    worker: Number(m[1]),
    port: Number(m[2]),
    pid: Number(m[3]),
  }));
}

/**
 * `ioscale cluster ...args` (detached: its own process group). `env` is added to the test's
 * environment without the ioscale variables; `cwd` defaults to the test's. Returns
 *   { proc, pid, exited, output(), stderr(), waitFor(pred, opts) }
 * At the end of the test: SIGTERM then SIGKILL if it still runs, and SIGKILL for every worker it
 * logged that is still alive.
 */
export function spawnCluster(h, args, { env = {}, cwd } = {}) {
  const fullEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" };
  for (const k of IOSCALE_ENV) delete fullEnv[k];
  Object.assign(fullEnv, env);
  const proc = spawn(binaryPath("ioscale"), ["cluster", ...args], { env: fullEnv, cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  let stderr = "";
  const listeners = new Set();
  const notify = () => {
    for (const fn of listeners) fn();
  };
  proc.stdout.on("data", (c) => {
    output += c.toString();
    notify();
  });
  proc.stderr.on("data", (c) => {
    output += c.toString();
    stderr += c.toString();
    notify();
  });
  const exited = new Promise((resolve) => {
    proc.on("error", (error) => resolve({ code: null, signal: null, error }));
    proc.on("exit", (code, signal) => resolve({ code, signal }));
  });
  let ended = false;
  exited.then(() => {
    ended = true;
    notify();
  });
  const run = {
    proc,
    pid: proc.pid,
    exited,
    output: () => output,
    stderr: () => stderr,
    running: () => !ended,
    /** Resolves with `pred(output)` once truthy (checked on every chunk); rejects on timeout or exit. */
    waitFor(pred, { timeoutMs = 10000, label = String(pred) } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const value = pred(output);
          if (value) {
            done();
            resolve(value);
          } else if (ended) {
            done();
            reject(new Error(`cluster exited before ${label}:\n${output.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${label} within ${timeoutMs} ms:\n${output.slice(-4000)}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
  };
  h.defer(async () => {
    if (!ended) {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 8000);
      await exited;
      clearTimeout(timer);
    }
    for (const { pid } of workerStarts(output)) {
      if (processAlive(pid)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
    }
  });
  return run;
}

/** The port of the balancer's "listening on" line (the workers log one too, with their own id). */
export function clusterPort(output) {
  return Number(/server_id=cluster\s+INFO listening on \S+:(\d+)/.exec(output)?.[1]);
}

/**
 * `ioscale cluster --host 127.0.0.1 --port 0 --ops-port <free> ...args` until it listens (another
 * ops port if that one was taken meanwhile). Adds port, url, opsPort, opsUrl, workers (the "worker
 * started" lines once all `count` workers logged one).
 */
export async function startCluster(h, args, { env, cwd, count = 2, timeoutMs = 15000 } = {}) {
  for (let attempt = 0; ; attempt++) {
    const opsPort = await freePort();
    const run = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--ops-port", String(opsPort), "--workers", String(count), ...args], { env, cwd });
    let port;
    try {
      port = await run.waitFor(clusterPort, { label: "the cluster's listening line", timeoutMs });
    } catch (error) {
      if (run.running()) run.proc.kill("SIGKILL");
      if (attempt < 4 && /cannot listen/.test(error.message)) continue;
      throw error;
    }
    const workers = await run.waitFor((out) => {
      const s = workerStarts(out);
      return s.length >= count && s;
    }, { label: `${count} "worker started" lines` });
    return Object.assign(run, { port, url: `http://127.0.0.1:${port}`, opsPort, opsUrl: `http://127.0.0.1:${opsPort}`, workers });
  }
}

/** Every "worker stopped" / "worker exited" line: [{ worker, code, signal, line }]. */
export function workerExits(output) {
  return output
    .split("\n")
    .filter((line) => /worker (stopped|exited)/.test(line))
    .map((line) => ({
      worker: Number(/worker=(\d+)/.exec(line)?.[1]),
      code: /code=(-?\d+)/.exec(line)?.[1],
      signal: /signal=(-?\d+)/.exec(line)?.[1],
      line,
    }));
}

/** `redis-server` on a given port (one a cluster already waits for), stopped at the end of the test. */
export async function redisOnPort(h, port) {
  const redis = spawn(process.env.REDIS_SERVER || "redis-server", ["--port", String(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"], { stdio: "ignore" });
  h.defer(async () => {
    if (redis.exitCode === null && redis.signalCode === null) {
      redis.kill("SIGKILL");
      await new Promise((resolve) => redis.once("exit", resolve));
    }
  });
  await waitForPong(`redis://127.0.0.1:${port}`);
  return redis;
}
