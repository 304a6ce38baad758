// A Node.js socket.io 4.8 server on @socket.io/redis-adapter 8.3 (classic createAdapter, or with
// --redis-mode sharded createShardedAdapter on a Redis Cluster; node-redis v4 clients): the reference
// peer of the cluster-* tests. Run as a program it follows the CLI contract of `interop_server` (same
// namespaces and events) or, with --app, of `ioscale serve`; imported, it gives the helpers that start
// it (or the ioscale binaries) as cluster nodes of a test.
//
//   node node-cluster-server.mjs --port 0 --redis-url redis://127.0.0.1:6379
//       [--redis-key-prefix P] [--redis-requests-timeout MS] [--redis-specific-response-channel]
//       [--app --server-id ID]
//   node node-cluster-server.mjs --port 0 --redis-url redis://127.0.0.1:7001,redis://127.0.0.1:7002
//       --redis-mode sharded [--redis-subscription-mode static|dynamic|dynamic-private] [--redis-key-prefix P]
//
// In sharded mode --redis-url is a comma-separated list of cluster seed nodes (`createCluster` root
// nodes), the key prefix is the adapter's `channelPrefix`, and the subscription mode defaults to
// dynamic (the adapter's default). --redis-requests-timeout and --redis-specific-response-channel do
// not apply there (the sharded adapter has a fixed 5000 ms and always one response channel per node).
//
// It prints `listening on 127.0.0.1:PORT` once it accepts connections.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const thisFile = fileURLToPath(import.meta.url);

// ---------------------------------------------------------------------------------------------
// The server (only when run as a program).
// ---------------------------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = {
    port: 3000,
    redisUrl: null,
    redisMode: "classic",
    subscriptionMode: "dynamic",
    keyPrefix: "socket.io",
    requestsTimeout: 5000,
    specific: false,
    app: false,
    serverId: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case "--port":
        opts.port = Number(argv[++i]);
        break;
      case "--redis-url":
        opts.redisUrl = argv[++i];
        break;
      case "--redis-mode":
        opts.redisMode = argv[++i];
        if (!["classic", "sharded"].includes(opts.redisMode)) throw new Error(`--redis-mode: classic or sharded, not ${opts.redisMode}`);
        break;
      case "--redis-subscription-mode":
        opts.subscriptionMode = argv[++i];
        if (!["static", "dynamic", "dynamic-private"].includes(opts.subscriptionMode)) {
          throw new Error(`--redis-subscription-mode: static, dynamic or dynamic-private, not ${opts.subscriptionMode}`);
        }
        break;
      case "--redis-key-prefix":
        opts.keyPrefix = argv[++i];
        break;
      case "--redis-requests-timeout":
        opts.requestsTimeout = Number(argv[++i]);
        break;
      case "--redis-specific-response-channel":
        opts.specific = true;
        break;
      case "--app":
        opts.app = true;
        break;
      case "--server-id":
        opts.serverId = argv[++i];
        break;
      default:
        break;
    }
  }
  return opts;
}

const asList = (value) => (Array.isArray(value) ? value : value === undefined || value === null ? [] : [value]);

/** Splits a handler's arguments into (args, ack); the ack is always the last argument when present. */
function splitAck(args) {
  if (args.length && typeof args[args.length - 1] === "function") {
    return [args.slice(0, -1), args[args.length - 1]];
  }
  return [args, () => {}];
}

/** The operator an event's {to|room, except} options describe. */
function selection(nsp, options = {}) {
  return nsp.in([...asList(options?.to), ...asList(options?.room)]).except(asList(options?.except));
}

function installInterop(nsp) {
  nsp.on("connection", (socket) => {
    socket.emit("welcome", { id: socket.id, nsp: nsp.name, auth: socket.handshake.auth });

    const on = (event, handler) =>
      socket.on(event, (...raw) => {
        const [args, ack] = splitAck(raw);
        Promise.resolve()
          .then(() => handler(args, ack))
          .catch((error) => ack({ ok: false, error: String(error?.message ?? error) }));
      });

    on("echo", (args) => socket.emit("echo", ...args));
    on("echo-ack", (args, ack) => ack(...args));
    on("join", ([room], ack) => {
      if (typeof room === "string") socket.join(room);
      ack(true);
    });
    on("leave", ([room], ack) => {
      if (typeof room === "string") socket.leave(room);
      ack(true);
    });
    on("get-rooms", (_args, ack) => ack([...socket.rooms].map(String).sort()));
    on("set-data", ([value], ack) => {
      socket.data = value;
      ack(true);
    });
    on("broadcast", ([options = {}], ack) => {
      // fromSocket: socket.broadcast (everyone selected but this socket) instead of the namespace.
      const operator = options.fromSocket
        ? socket.broadcast.to([...asList(options.to), ...asList(options.room)]).except(asList(options.except))
        : selection(nsp, options);
      operator.emit(options.event ?? "broadcast", options.data ?? null);
      ack(true);
    });
    on("broadcast-with-ack", ([options = {}], ack) => {
      selection(nsp, options)
        .timeout(options.timeoutMs ?? 1000)
        .emit(options.event ?? "request", options.data ?? null, (err, responses) => {
          ack({ err: err ? "timeout" : null, responses });
        });
    });
    on("request-ack", ([options = {}], ack) => {
      socket.timeout(options.timeoutMs ?? 1000).emit(options.event ?? "request", options.data ?? null, (err, ...response) => {
        ack(err ? { ok: false, error: "timeout" } : { ok: true, response });
      });
    });
    on("disconnect-me", () => socket.disconnect());

    // Cluster-wide operations.
    on("cluster-fetch", async ([options = {}], ack) => {
      const sockets = await selection(nsp, options).fetchSockets();
      const list = sockets
        .map((s) => ({ id: s.id, rooms: [...s.rooms].map(String).sort(), data: s.data, auth: s.handshake?.auth }))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      ack({ ok: true, sockets: list });
    });
    on("cluster-join", ([options = {}], ack) => {
      selection(nsp, options).socketsJoin(asList(options.join));
      ack({ ok: true });
    });
    on("cluster-leave", ([options = {}], ack) => {
      selection(nsp, options).socketsLeave(asList(options.leave));
      ack({ ok: true });
    });
    on("cluster-disconnect", ([options = {}], ack) => {
      selection(nsp, options).disconnectSockets(!!options.close);
      ack({ ok: true });
    });
    on("cluster-rooms", async (_args, ack) => {
      const rooms = await nsp.adapter.allRooms();
      ack({ ok: true, rooms: [...rooms].map(String).sort() });
    });
    on("cluster-count", async (_args, ack) => {
      ack({ ok: true, count: await nsp.adapter.serverCount() });
    });
    on("cluster-sse", async ([options = {}], ack) => {
      const args = asList(options.args);
      if (!options.ack) {
        nsp.serverSideEmit(options.event, ...args);
        ack(true);
        return;
      }
      try {
        ack({ ok: true, responses: await nsp.serverSideEmitWithAck(options.event, ...args) });
      } catch (error) {
        ack({ ok: false, error: error.message });
      }
    });
  });

  // Server-side events from the other nodes.
  nsp.on("ping-node", (...raw) => {
    const [args, ack] = splitAck(raw);
    ack(["pong", ...args]);
  });
  for (const event of ["sse", "sse-binary"]) {
    nsp.on(event, (...raw) => {
      const [args, ack] = splitAck(raw);
      nsp.local.emit("sse-received", { event, args });
      ack(`ack-${event}`);
    });
  }
}

function installApp(io, serverId) {
  const main = io.of("/");
  main.on("connection", (socket) => {
    socket.emit("server-info", { serverId, timestamp: new Date().toISOString() });
    socket.on("message", (body) => {
      if (!body || typeof body !== "object" || typeof body.message !== "string") return;
      const out = { serverId, socketId: socket.id, message: body.message, timestamp: new Date().toISOString() };
      if (typeof body.room === "string") main.to(body.room).emit("message", out);
      else main.emit("message", out);
    });
    for (const [event, apply] of [
      ["join", (room) => socket.join(room)],
      ["leave", (room) => socket.leave(room)],
    ]) {
      socket.on(event, (room, ack) => {
        if (typeof ack !== "function") return;
        if (typeof room !== "string") return ack({ ok: false, error: "room name must be a string" });
        if (!room) return ack({ ok: false, error: "room name must not be empty" });
        apply(room);
        ack({ ok: true, room });
      });
    }
  });
  main.on("getStats", (...raw) => {
    const [, ack] = splitAck(raw);
    ack({ serverId, connections: main.sockets.size });
  });
  return async function stats() {
    const servers = [{ serverId, connections: main.sockets.size }];
    let complete = true;
    try {
      servers.push(...(await main.serverSideEmitWithAck("getStats")));
    } catch (error) {
      complete = false;
      servers.push(...(error.responses ?? []));
    }
    const totalConnections = servers.reduce((sum, s) => sum + (s?.connections ?? 0), 0);
    return { serverId, totalConnections, serversOnline: servers.length, complete, servers };
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const http = await import("node:http");
  const { Server } = await import("socket.io");
  const { createAdapter, createShardedAdapter } = await import("@socket.io/redis-adapter");
  const { createClient, createCluster } = await import("redis");

  let stats = null;
  const httpServer = http.createServer(async (req, res) => {
    if (stats && req.url === "/stats") {
      const body = JSON.stringify(await stats());
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(httpServer, { cors: { origin: "*" } });

  // @socket.io/redis-adapter does not catch the promise of `pubClient.publish()`: a publish in flight
  // when Redis goes away rejects, which would end the process. The peer keeps serving, like ioscale.
  process.on("unhandledRejection", (error) => console.log(`unhandled rejection: ${error?.message ?? error}`));

  if (opts.redisUrl && opts.redisMode === "sharded") {
    const pub = createCluster({ rootNodes: opts.redisUrl.split(",").map((url) => ({ url: url.trim() })) });
    const sub = pub.duplicate();
    // A cluster client without an "error" listener would end the process when a node goes away.
    let down = false;
    for (const [name, client] of [["pub", pub], ["sub", sub]]) {
      client.on("error", (error) => {
        if (!down) console.log(`Redis is down: serving local clients only (${name}: ${error.message})`);
        down = true;
      });
      client.on("sharded-shannel-moved-error", (error, channel) => console.log(`sharded channel ${channel} lost: ${error.message}`));
    }
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createShardedAdapter(pub, sub, { channelPrefix: opts.keyPrefix, subscriptionMode: opts.subscriptionMode }));
  } else if (opts.redisUrl) {
    const pub = createClient({ url: opts.redisUrl });
    const sub = pub.duplicate();
    // Outage reporting in the words of `ioscale serve`.
    const down = new Set();
    for (const [name, client] of [["pub", pub], ["sub", sub]]) {
      client.on("error", (error) => {
        if (!down.size) console.log(`Redis is down: serving local clients only (${error.message})`);
        down.add(name);
      });
      client.on("ready", () => {
        if (down.delete(name) && !down.size) console.log("Redis is up: cluster traffic resumes");
      });
    }
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(
      createAdapter(pub, sub, {
        key: opts.keyPrefix,
        requestsTimeout: opts.requestsTimeout,
        publishOnSpecificResponseChannel: opts.specific,
      }),
    );
  }

  if (opts.app) {
    stats = installApp(io, opts.serverId ?? `node-${process.pid}`);
  } else {
    installInterop(io.of("/"));
    const admin = io.of("/admin");
    admin.use((socket, next) => {
      if (socket.handshake.auth?.token === "secret") return next();
      const error = new Error("unauthorized");
      error.data = { reason: "invalid token" };
      next(error);
    });
    installInterop(admin);
  }

  // Make sure the subscriptions of every namespace are in place before announcing the port.
  await new Promise((resolve) => setTimeout(resolve, 0));
  httpServer.listen(opts.port, "127.0.0.1", () => {
    console.log(`listening on 127.0.0.1:${httpServer.address().port}`);
  });
  const shutdown = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

if (process.argv[1] && path.resolve(process.argv[1]) === thisFile) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers for the tests.
// ---------------------------------------------------------------------------------------------

/**
 * Spawns this file as a cluster node on `redisUrl` (`--port 0`), resolves once it listens and stops it
 * at the end of the test (on the harness stack `h` when given, else `t.after`).
 * Returns { kind: "node", port, url, proc, output(), stop() } like startServer.
 */
export async function startNodeServer(redisUrl, { t, h, args = [], timeoutMs = 15000 } = {}) {
  const proc = spawn(process.execPath, [thisFile, "--redis-url", redisUrl, ...args, "--port", "0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise((resolve) => {
    proc.on("error", (error) => resolve({ code: null, error }));
    proc.on("exit", (code, signal) => resolve({ code, signal }));
  });
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  };
  if (h) h.defer(stop);
  else if (t) t.after(stop);
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node peer did not start in ${timeoutMs} ms:\n${output}`)), timeoutMs);
    const onData = (chunk) => {
      output += chunk.toString();
      const m = output.match(/listening on \S+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    exited.then(({ code, error }) => {
      clearTimeout(timer);
      reject(new Error(`node peer exited (${error?.message ?? code}):\n${output}`));
    });
  });
  return { kind: "node", port, url: `http://127.0.0.1:${port}`, proc, output: () => output, stop };
}

/**
 * What the ioscale nodes of the cluster tests are: "ioscale" (default) or "node" (this peer in their
 * place, to check that the tests themselves hold against the reference implementation).
 */
export const PEER = process.env.INTEROP_CLUSTER_PEER === "node" ? "node" : "ioscale";

/**
 * Starts a library-level cluster node: `interop_server` (kind "ioscale") or this peer (kind "node").
 * `h` is the harness of the test.
 */
export async function startPeer(kind, redisUrl, h, { args = [] } = {}) {
  if (kind === "node") return startNodeServer(redisUrl, { h, args });
  const srv = await h.interopServer(["--redis-url", redisUrl, ...args]);
  return { kind: "ioscale", ...srv };
}

/** Starts an application node: `ioscale serve` (kind "ioscale") or this peer with --app (kind "node"). */
export async function startApp(kind, redisUrl, h, serverId, { args = [] } = {}) {
  if (kind === "node") return startNodeServer(redisUrl, { h, args: ["--app", "--server-id", serverId, ...args] });
  const srv = await h.app(["serve", "--redis-url", redisUrl, "--server-id", serverId, ...args]);
  return { kind: "ioscale", ...srv };
}

/** The kernel's state letter of a process (R, S, T…); null where /proc is not available. */
async function processState(pid) {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return null;
  }
}

/**
 * Freezes a node process (SIGSTOP: its Redis connections stay open, it answers nothing) and waits
 * until the kernel reports it stopped. SIGCONT is registered on the harness `h` so that the process
 * is resumed before it is stopped at the end of the test. Returns `thaw()` (SIGCONT).
 */
export async function freeze(node, h) {
  if (!node.proc.kill("SIGSTOP")) throw new Error(`cannot SIGSTOP node ${node.name ?? node.port}`);
  const thaw = () => node.proc.kill("SIGCONT");
  h.defer(thaw);
  const deadline = Date.now() + 3000;
  for (;;) {
    const state = await processState(node.proc.pid);
    if (state === null || state === "T" || state === "t") return thaw;
    if (Date.now() > deadline) throw new Error(`node ${node.name ?? node.port} is in state ${state} after SIGSTOP`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
