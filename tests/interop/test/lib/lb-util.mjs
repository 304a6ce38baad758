// Helpers of the load-balancing tests (lb-*.test.mjs, nginx.test.mjs): `ioscale serve` nodes on fixed
// free ports (so a killed node can be restarted on the same address), an `ioscale lb` with its
// operations port, socket.io clients that record what they receive, and broadcast checks.
//
// Everything is started through the harness (`h`), so it is stopped when the test ends.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { connected } from "./harness.mjs";
import { parseMetrics, request, waitUntil } from "./ops-util.mjs";
import { freePort, waitForSubscribers } from "./redis.mjs";

export { delay, freePort, waitUntil };

/** Environment variables `ioscale serve|lb|cluster` read: the tests set everything by flags. */
export const IOSCALE_ENV = [
  "PORT", "HOST", "SERVER_ID", "REDIS_URL", "ALLOWED_ORIGINS", "PING_INTERVAL", "PING_TIMEOUT",
  "MAX_HTTP_BUFFER_SIZE", "CONNECT_TIMEOUT", "SOCKETIO_PATH", "TRANSPORTS", "COOKIE", "MAX_BUFFERED_BYTES",
  "REDIS_KEY_PREFIX", "REDIS_REQUESTS_TIMEOUT", "REDIS_SPECIFIC_RESPONSE_CHANNEL", "OPS_PORT",
  "SHUTDOWN_TIMEOUT", "STATS_INTERVAL", "LOG_FORMAT", "BACKENDS", "WORKERS", "LB_STICKY", "LB_POLICY",
  "LB_PATH", "LB_MAX_FAILS", "LB_FAIL_TIMEOUT", "LB_HEALTH_INTERVAL", "LB_HEALTH_PATH", "LB_SESSION_TTL",
  "LB_MAX_SESSIONS", "LB_COOKIE_NAME", "LB_RESPONSE_TIMEOUT", "LB_CONNECT_TIMEOUT", "LB_POOL_IDLE_TIMEOUT",
];

const ADDR_IN_USE = /cannot listen|address already in use|os error 98/i;

/** Client transport modes of the lb tests. */
export const TRANSPORTS = {
  polling: { transports: ["polling"] },
  upgrade: { transports: ["polling", "websocket"], upgrade: true },
  websocket: { transports: ["websocket"] },
};

/**
 * An `ioscale serve` node on a fixed port of 127.0.0.1 (chosen free, or `port`), restartable on the
 * same port. Returns { serverId, port, address, url, running(), output(), kill(signal), start() }.
 * `start()` (re)launches it and resolves once it listens.
 */
export async function startNode(h, { serverId, redisUrl, port, args = [] }) {
  let run = null;
  let logs = "";
  const node = {
    serverId,
    port: port ?? 0,
    get address() {
      return `127.0.0.1:${node.port}`;
    },
    get url() {
      return `http://127.0.0.1:${node.port}`;
    },
    running: () => run !== null && run.proc.exitCode === null && run.proc.signalCode === null,
    output: () => logs + (run ? run.output() : ""),
    get pid() {
      return run?.proc.pid;
    },
    /** Starts it on its port; a fresh node (no port yet) retries on other free ports, a restart on the same one. */
    async start({ timeoutMs = 10000 } = {}) {
      assert.ok(!node.running(), `${serverId} is already running`);
      const fixed = node.port !== 0;
      const deadline = Date.now() + timeoutMs;
      let lastError;
      for (let attempt = 0; Date.now() < deadline; attempt++) {
        const onPort = fixed ? node.port : await freePort();
        const argv = ["serve", "--host", "127.0.0.1", "--port", String(onPort), "--server-id", serverId, "--stats-interval", "0"];
        if (redisUrl) argv.push("--redis-url", redisUrl);
        if (run) logs += run.output();
        run = h.spawn("ioscale", [...argv, ...args], { unsetEnv: IOSCALE_ENV });
        try {
          await run.listening(Math.max(1000, deadline - Date.now()));
          node.port = onPort;
          return node;
        } catch (error) {
          lastError = error;
          await run.kill();
          if (!ADDR_IN_USE.test(error.message)) break;
          if (fixed) await delay(100); // the old process's port is not released yet
        }
      }
      throw new Error(`cannot start ${serverId}${fixed ? ` on port ${node.port}` : ""}: ${lastError?.message}`);
    },
    /** Sends `signal` (SIGKILL by default), waits for the exit and returns its { code, signal }. */
    async kill(signal = "SIGKILL") {
      if (!node.running()) return undefined;
      const exited = run.exited;
      run.proc.kill(signal);
      return await exited;
    },
  };
  await node.start();
  return node;
}

/**
 * `count` nodes `<prefix>0..` on one Redis; resolves once every node has subscribed (so a broadcast
 * reaches all of them). `admin` is a node-redis client of that Redis.
 */
export async function startNodes(h, redis, admin, count, { prefix = "node-", args = [] } = {}) {
  const nodes = await Promise.all(
    Array.from({ length: count }, (_, i) => startNode(h, { serverId: `${prefix}${i}`, redisUrl: redis.url, args })),
  );
  await waitForSubscribers(admin, count);
  return nodes;
}

/**
 * `ioscale lb --host 127.0.0.1 --port 0 --backend ... --ops-port P ...args`, resolved once it listens
 * and its operations endpoints are up. Returns spawnBinary's fields plus { url, port, opsUrl,
 * metrics(), health(), backend(address), waitBackendUp(address, up) }.
 */
export async function startLb(h, backends, args = [], { ops = true } = {}) {
  for (let attempt = 0; ; attempt++) {
    const opsPort = ops ? await freePort() : null;
    const argv = ["lb", "--host", "127.0.0.1", "--port", "0", ...backends.flatMap((b) => ["--backend", b])];
    if (ops) argv.push("--ops-port", String(opsPort));
    const run = h.spawn("ioscale", [...argv, ...args], { unsetEnv: IOSCALE_ENV });
    let port;
    try {
      port = await run.listening();
      if (ops) {
        await waitUntil(() => run.output().includes(`balancer endpoints on 127.0.0.1:${opsPort}`), {
          timeoutMs: 5000,
          intervalMs: 10,
          label: "balancer endpoints line",
        });
      }
    } catch (error) {
      await run.kill();
      if (attempt < 4 && ADDR_IN_USE.test(error.message)) continue;
      throw error;
    }
    const opsUrl = ops ? `http://127.0.0.1:${opsPort}` : null;
    const lb = {
      ...run,
      port,
      url: `http://127.0.0.1:${port}`,
      opsUrl,
      async metrics() {
        const res = await request(`${opsUrl}/metrics`);
        assert.equal(res.status, 200, `balancer /metrics: ${res.status} ${res.body}`);
        return parseMetrics(res.body);
      },
      async health() {
        const res = await request(`${opsUrl}/health`);
        assert.equal(res.status, 200, `balancer /health: ${res.status} ${res.body}`);
        return JSON.parse(res.body);
      },
      /** ioscale_lb_backend_up / _sessions of one node. */
      async backend(address) {
        const m = await lb.metrics();
        return {
          up: m.value("ioscale_lb_backend_up", { backend: address }),
          sessions: m.value("ioscale_lb_backend_sessions", { backend: address }),
          requests: m.value("ioscale_lb_requests_total", { backend: address }),
        };
      },
      /** Waits until the balancer reports the node as up (1) or down (0). */
      async waitBackendUp(address, up, timeoutMs = 8000) {
        await waitUntil(async () => (await lb.backend(address)).up === (up ? 1 : 0), {
          timeoutMs,
          intervalMs: 25,
          label: `ioscale_lb_backend_up{backend="${address}"} == ${up ? 1 : 0}`,
        });
      },
    };
    return lb;
  }
}

/**
 * A socket.io client that records everything it receives: server-info payloads (`infos`), messages,
 * connect errors and disconnect reasons. `serverId()` is the node of its current session.
 */
export function trackedClient(h, url, opts = {}, label = "") {
  const socket = h.client(url, opts);
  const c = {
    socket,
    label,
    infos: [],
    messages: [],
    errors: [],
    disconnects: [],
    connects: 0,
    serverId: () => c.infos.at(-1)?.serverId,
    transport: () => socket.io.engine?.transport?.name,
    received: (text) => c.messages.filter((m) => m.message === text),
    describe: () =>
      `${label || socket.id} (node ${c.serverId()}, ${c.transport()}, connects ${c.connects}, ` +
      `errors [${c.errors.map((e) => e.message).join("; ")}], disconnects [${c.disconnects.join("; ")}])`,
  };
  socket.on("server-info", (info) => c.infos.push(info));
  socket.on("message", (m) => c.messages.push(m));
  socket.on("connect", () => c.connects++);
  socket.on("connect_error", (e) => c.errors.push(e));
  socket.on("disconnect", (reason) => c.disconnects.push(reason));
  return c;
}

/**
 * Opens a tracked client and waits for its connection and its server-info. With `upgrade` transports
 * it also waits for the upgrade to WebSocket (and fails if it does not happen).
 */
export async function openClient(h, url, mode, extra = {}, label = mode) {
  const opts = { ...TRANSPORTS[mode], ...extra };
  const c = trackedClient(h, url, opts, label);
  const info = cancellable(c.socket, "server-info", { timeoutMs: 10000, label: `server-info at ${label}` });
  try {
    await connected(c.socket);
    await info.promise;
    if (mode === "upgrade") await waitUpgrade(c);
  } catch (error) {
    error.message = `${label}: ${error.message} — ${c.describe()}`;
    throw error;
  } finally {
    info.cancel();
  }
  return c;
}

/**
 * Like harness `waitFor`, but `cancel()` removes the listener and the timer (so a wait that is no
 * longer needed does not keep the process alive). `promise` resolves with the first argument.
 */
export function cancellable(emitter, event, { timeoutMs = 5000, filter, label } = {}) {
  let cancel;
  const promise = new Promise((resolve, reject) => {
    const listener = (...args) => {
      if (filter && !filter(...args)) return;
      cancel();
      resolve(args[0]);
    };
    const timer = setTimeout(() => {
      cancel();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"${label ? ` (${label})` : ""}`));
    }, timeoutMs);
    cancel = () => {
      clearTimeout(timer);
      emitter.off(event, listener);
    };
    emitter.on(event, listener);
  });
  promise.catch(() => {});
  return { promise, cancel };
}

/** Resolves once the client's engine runs on WebSocket (right away if it already does). */
export function waitUpgrade(c, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const engine = c.socket.io.engine;
      if (engine?.transport?.name === "websocket" && engine.readyState === "open") {
        done();
        resolve();
        return true;
      }
      return false;
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no upgrade to websocket within ${timeoutMs} ms (transport ${c.transport()})`));
    }, timeoutMs);
    const onOpen = () => {
      if (!check()) c.socket.io.engine.once("upgrade", onUpgrade);
    };
    const onUpgrade = () => check();
    const done = () => {
      clearTimeout(timer);
      c.socket.io.off("open", onOpen);
      c.socket.io.engine?.off("upgrade", onUpgrade);
    };
    if (!check()) {
      if (c.socket.io.engine) c.socket.io.engine.once("upgrade", onUpgrade);
      else c.socket.io.once("open", onOpen);
    }
  });
}

/** Opens `count` clients of `mode` concurrently (or one after the other with `sequential`). */
export async function openClients(h, url, mode, count, { extra = {}, sequential = false, label = mode } = {}) {
  if (sequential) {
    const out = [];
    for (let i = 0; i < count; i++) out.push(await openClient(h, url, mode, typeof extra === "function" ? extra(i) : extra, `${label} #${i}`));
    return out;
  }
  return Promise.all(
    Array.from({ length: count }, (_, i) => openClient(h, url, mode, typeof extra === "function" ? extra(i) : extra, `${label} #${i}`)),
  );
}

/** Sessions per node id, counted from the clients' current server-info. */
export function spread(clients) {
  const out = {};
  for (const c of clients) {
    const id = c.serverId();
    out[id] = (out[id] ?? 0) + 1;
  }
  return out;
}

let messageSeq = 0;

/**
 * `sender` broadcasts a unique text, then a marker (same socket, so it arrives after the text).
 * Resolves once every client got the marker; fails unless every client got the text exactly once,
 * naming the clients that did not.
 */
export async function broadcastExactlyOnce(sender, clients, { timeoutMs = 10000, tag = "hello" } = {}) {
  const text = `${tag}-${process.pid}-${++messageSeq}`;
  const marker = `${text}-marker`;
  const waits = clients.map((c) => cancellable(c.socket, "message", { filter: (m) => m.message === marker, timeoutMs }));
  sender.socket.emit("message", { message: text });
  sender.socket.emit("message", { message: marker });
  const settled = await Promise.allSettled(waits.map((w) => w.promise));
  const missing = clients.filter((_, i) => settled[i].status === "rejected");
  assert.deepEqual(
    missing.map((c) => c.describe()),
    [],
    `${missing.length}/${clients.length} clients did not receive the broadcast of ${sender.label} (node ${sender.serverId()})`,
  );
  const wrong = clients.filter((c) => c.received(text).length !== 1).map((c) => `${c.describe()}: ${c.received(text).length} copies`);
  assert.deepEqual(wrong, [], "every client receives the broadcast exactly once");
  for (const c of clients) {
    const m = c.received(text)[0];
    assert.equal(m.socketId, sender.socket.id, "the message names its sender");
    assert.equal(m.serverId, sender.serverId(), "the message names the sender's node");
  }
  return text;
}

/** An http.Agent whose connections leave from `localAddress` (any 127.x.y.z is loopback on Linux). */
export function agentFrom(h, localAddress) {
  const agent = new http.Agent({ localAddress, keepAlive: false });
  h.defer(() => agent.destroy());
  return agent;
}

/** True while a process with this pid exists and is not a zombie. */
export function processAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return error.code === "EPERM";
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
