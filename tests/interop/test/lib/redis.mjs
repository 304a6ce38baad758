// A real redis-server per test (own free port, no persistence), node-redis clients that are closed
// at the end of the test, and a readiness check for cluster nodes (every node has subscribed).
//
// The cluster-* tests use this; `redis-server` must be on PATH (or set $REDIS_SERVER).
import { spawn } from "node:child_process";
import net from "node:net";
import { createClient } from "redis";

const REDIS_SERVER = process.env.REDIS_SERVER || "redis-server";

/** A TCP port that was free a moment ago (bound on port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Registers `fn` to run when the test ends: on the harness stack when given (LIFO), else t.after. */
function onEnd({ t, h }, fn) {
  if (h) h.defer(fn);
  else if (t) t.after(fn);
}

/** Sends PING until PONG (a fresh connection per attempt); rejects after `timeoutMs`. */
export async function waitForPong(url, { timeoutMs = 10000, isDead = () => false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (isDead()) throw new Error(`redis-server exited before answering PING (${lastError?.message ?? "no error"})`);
    const client = createClient({ url, socket: { connectTimeout: 1000, reconnectStrategy: false } });
    client.on("error", () => {});
    try {
      await client.connect();
      const reply = await client.ping();
      if (reply === "PONG") return;
      lastError = new Error(`PING answered ${reply}`);
    } catch (error) {
      lastError = error;
    } finally {
      try {
        await client.disconnect();
      } catch {}
    }
    await delay(25);
  }
  throw new Error(`redis at ${url} did not answer PING within ${timeoutMs} ms: ${lastError?.message}`);
}

/**
 * Starts `redis-server --port P --save '' --appendonly no --bind 127.0.0.1` on a free port and
 * stops it when the test ends. Returns
 *   { port, url, output(), start(), stop(), running(), client(opts) }
 * stop() then start() restarts it on the same port (used for the outage test). `args` are added to
 * redis-server's (e.g. ["--enable-debug-command", "local"] for DEBUG SLEEP).
 */
export async function startRedis({ t, h, attempts = 5, args = [] } = {}) {
  let proc = null;
  let exited = null;
  let output = "";
  let port = 0;
  const clients = new Set();

  async function launch(onPort) {
    const child = spawn(REDIS_SERVER, ["--port", String(onPort), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let dead = false;
    const done = new Promise((resolve) => {
      child.on("error", (error) => {
        dead = true;
        output += `\nspawn error: ${error.message}`;
        resolve({ code: null, signal: null, error });
      });
      child.on("exit", (code, signal) => {
        dead = true;
        resolve({ code, signal });
      });
    });
    child.stdout.on("data", (c) => (output += c.toString()));
    child.stderr.on("data", (c) => (output += c.toString()));
    try {
      await waitForPong(`redis://127.0.0.1:${onPort}`, { isDead: () => dead });
    } catch (error) {
      if (!dead) child.kill("SIGKILL");
      await done;
      throw error;
    }
    proc = child;
    exited = done;
  }

  const redis = {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    output: () => output,
    running: () => proc !== null,
    /** Starts it (again) on the same port; retries briefly if the port is still held. */
    async start() {
      if (proc) return;
      let lastError;
      for (let i = 0; i < 20; i++) {
        try {
          await launch(port);
          return;
        } catch (error) {
          lastError = error;
          await delay(100);
        }
      }
      throw new Error(`cannot restart redis-server on port ${port}: ${lastError?.message}\n${output}`);
    },
    /** Stops it (SIGTERM, then SIGKILL after 3 s) and waits for the process to exit. */
    async stop() {
      if (!proc) return;
      const child = proc;
      const done = exited;
      proc = null;
      exited = null;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await done;
        clearTimeout(timer);
      }
    },
    /** A connected node-redis client (v4), disconnected at the end of the test. */
    async client(opts = {}) {
      const client = createClient({ url: redis.url, ...opts });
      client.on("error", () => {});
      await client.connect();
      clients.add(client);
      return client;
    },
  };

  let lastError;
  for (let i = 0; i < attempts; i++) {
    port = await freePort();
    try {
      await launch(port);
      lastError = null;
      break;
    } catch (error) {
      lastError = error; // most likely somebody took the port in between: pick another one
    }
  }
  if (lastError) throw new Error(`cannot start redis-server: ${lastError.message}\n${output}`);

  onEnd({ t, h }, async () => {
    for (const client of clients) {
      try {
        await client.disconnect();
      } catch {}
    }
    await redis.stop();
  });
  return redis;
}

/**
 * Waits until `count` connections have a plain SUBSCRIBE on `<prefix>-request#<nsp>#` (what
 * `serverCount()` counts) and a pattern subscription, then checks it is exactly `count`: a node that
 * subscribes twice would be counted twice by every Node requester.
 */
export async function waitForSubscribers(client, count, { prefix = "socket.io", nsp = "/", timeoutMs = 10000 } = {}) {
  const channel = `${prefix}-request#${nsp}#`;
  const deadline = Date.now() + timeoutMs;
  let numsub = 0;
  let psubs = 0;
  for (;;) {
    const reply = await client.pubSubNumSub(channel);
    numsub = Number(reply[channel] ?? 0);
    const list = await client.clientList();
    psubs = list.filter((c) => Number(c.psub) > 0).length;
    if (numsub >= count && psubs >= count) break;
    if (Date.now() > deadline) {
      throw new Error(`only ${numsub}/${count} subscribers on ${channel} (${psubs} pattern subscribers) after ${timeoutMs} ms`);
    }
    await delay(25);
  }
  if (numsub !== count) throw new Error(`${numsub} connections subscribe to ${channel}, expected exactly ${count}`);
}

/**
 * Records every message published on the Redis server (`PSUBSCRIBE *` on a buffer-mode connection)
 * so a failing test can say what went over the wire. `dump()` gives one line per message.
 */
export async function sniff(redis) {
  const client = await redis.client();
  const log = [];
  await client.pSubscribe(
    "*",
    (message, channel) => {
      log.push({ at: Date.now(), channel: channel.toString(), message });
    },
    true,
  );
  return {
    log,
    dump(max = 200) {
      return log
        .slice(-max)
        .map(({ channel, message }) => {
          const text = message[0] === 0x7b ? message.toString("utf8") : `msgpack ${message.toString("hex")}`;
          return `${channel}  ${text.length > 600 ? text.slice(0, 600) + "…" : text}`;
        })
        .join("\n");
    },
  };
}
