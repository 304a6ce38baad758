// A real local Redis Cluster per test (or per describe): 3 masters, each with one replica, on free
// ports (client and cluster-bus port both picked free, `--cluster-port`), no persistence, a short
// `cluster-node-timeout` so that a killed master fails over in a few seconds. Every redis-server and
// every client is stopped, and the temporary directory (nodes-PORT.conf files) removed, when the test
// ends, also when it fails.
//
// The cluster-sharded-* tests use this (the sharded Redis adapter: SPUBLISH / SSUBSCRIBE). Needs
// Redis >= 7 (`redis-server` on PATH, or $REDIS_SERVER).
//
//   const cluster = await startRedisCluster({ h });         // or { t }
//   cluster.seed                  "redis://127.0.0.1:P1,redis://127.0.0.1:P2,…" (every node)
//   cluster.urls                  the masters' urls at start
//   cluster.nodes                 [{ port, url, role, id, alive }] (role and alive follow kill/failover)
//   await cluster.masterOf("socket.io#/#")        the node owning that channel's (key's) slot
//   await cluster.shardNumSub("socket.io#/#")     Σ PUBSUB SHARDNUMSUB over the current masters
//   await cluster.waitForShardNumSub(ch, n)       polls it until it is exactly n
//   await cluster.shardChannels("socket.io*")     the sharded channels subscribed on the masters
//   await cluster.sniff([channels])               records their messages (from replicas: not counted)
//   await cluster.kill(port)                      SIGKILL
//   await cluster.waitForFailover(port)           until one of its replicas is master, cluster ok
//   await cluster.client()                        a connected node-redis cluster client
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createClient, createCluster } from "redis";
import { freePort } from "./redis.mjs";

const REDIS_SERVER = process.env.REDIS_SERVER || "redis-server";
const SLOTS = 16384;

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Servers still running when the test process exits without its cleanups (a file-level timeout, an
// uncaught error) are killed on the way out rather than left behind.
const running = new Set();
process.once("exit", () => {
  for (const proc of running) {
    try {
      proc.kill("SIGKILL");
    } catch {}
  }
});

/** Registers `fn` to run when the test ends: on the harness stack when given (LIFO), else t.after. */
function onEnd({ t, h }, fn) {
  if (h) h.defer(fn);
  else if (t) t.after(fn);
}

/** Parses `CLUSTER INFO` / `INFO` text into { key: value }. */
function parseInfo(text) {
  const out = {};
  for (const line of String(text).split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Parses `CLUSTER NODES` into [{ id, port, flags: Set, masterId, linkState, slots: [[from, to]] }]. */
function parseNodes(text) {
  return String(text)
    .split(/\r?\n/)
    .filter(Boolean)
    .map((line) => {
      const [id, address, flags, masterId, , , , linkState, ...slots] = line.split(" ");
      return {
        id,
        port: Number(address.split("@")[0].split(":").pop()),
        flags: new Set(flags.split(",")),
        masterId: masterId === "-" ? null : masterId,
        linkState,
        slots: slots.filter((s) => !s.startsWith("[")).map((s) => s.split("-").map(Number)).map(([a, b = a]) => [a, b]),
      };
    });
}

/** Sends PING until PONG (a fresh connection per attempt); rejects after `timeoutMs` or when `isDead()`. */
async function waitForPong(port, { timeoutMs = 10000, isDead = () => false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (isDead()) throw new Error(`redis-server on ${port} exited (${lastError?.message ?? "before answering PING"})`);
    const client = createClient({ url: `redis://127.0.0.1:${port}`, socket: { connectTimeout: 1000, reconnectStrategy: false } });
    client.on("error", () => {});
    try {
      await client.connect();
      if ((await client.ping()) === "PONG") return;
    } catch (error) {
      lastError = error;
    } finally {
      try {
        await client.disconnect();
      } catch {}
    }
    await delay(25);
  }
  throw new Error(`redis-server on ${port} did not answer PING within ${timeoutMs} ms: ${lastError?.message}`);
}

/**
 * Starts `masters` masters with `replicasPerMaster` replicas each, creates the cluster (slots split
 * evenly, replica i+masters follows master i) and waits until it is complete: every node says
 * cluster_state:ok with 16384 slots ok and knows every other node without failure flags, every replica
 * is attached to its master and synced. `nodeTimeoutMs` is `cluster-node-timeout`.
 */
export async function startRedisCluster({ t, h, masters = 3, replicasPerMaster = 1, nodeTimeoutMs = 1000, readyTimeoutMs = 30000 } = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "ioscale-redis-cluster-"));
  /** @type {Array<{port, bus, url, role, id, alive, proc, exited, output, masterPort}>} */
  const nodes = [];
  const admins = new Map(); // port -> connected standalone client
  const clusterClients = new Set();
  const sniffers = new Set();
  let stopped = false;

  onEnd({ t, h }, async () => {
    stopped = true;
    for (const client of [...sniffers, ...clusterClients]) {
      try {
        await client.disconnect();
      } catch {}
    }
    for (const client of admins.values()) {
      try {
        await client.disconnect();
      } catch {}
    }
    await Promise.all(nodes.map((n) => stopNode(n)));
    await rm(dir, { recursive: true, force: true });
  });

  async function stopNode(node) {
    if (node.proc.exitCode === null && node.proc.signalCode === null) node.proc.kill("SIGKILL");
    await node.exited;
    node.alive = false;
  }

  /** Spawns one redis-server on fresh free ports; retries when it cannot start (port taken meanwhile). */
  async function launch(role) {
    let lastError;
    for (let attempt = 0; attempt < 6; attempt++) {
      const port = await freePort();
      const bus = await freePort();
      if (bus === port) continue;
      const node = { port, bus, url: `redis://127.0.0.1:${port}`, role, id: null, alive: true, output: "", masterPort: null };
      node.proc = spawn(
        REDIS_SERVER,
        [
          "--port", String(port),
          "--cluster-enabled", "yes",
          "--cluster-port", String(bus),
          "--cluster-config-file", path.join(dir, `nodes-${port}.conf`),
          "--cluster-node-timeout", String(nodeTimeoutMs),
          // A replica may always take over (its data is fresh: nothing is stored anyway).
          "--cluster-replica-validity-factor", "0",
          "--dir", dir,
          "--save", "",
          "--appendonly", "no",
          "--bind", "127.0.0.1",
          // Replicas sync at once (the default waits 5 s for more replicas to join the transfer).
          "--repl-diskless-sync", "yes",
          "--repl-diskless-sync-delay", "0",
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let dead = false;
      node.exited = new Promise((resolve) => {
        node.proc.on("error", (error) => {
          dead = true;
          node.output += `\nspawn error: ${error.message}`;
          resolve({ code: null, signal: null, error });
        });
        node.proc.on("exit", (code, signal) => {
          dead = true;
          node.alive = false;
          resolve({ code, signal });
        });
      });
      running.add(node.proc);
      node.proc.on("exit", () => running.delete(node.proc));
      node.proc.stdout.on("data", (c) => (node.output += c.toString()));
      node.proc.stderr.on("data", (c) => (node.output += c.toString()));
      try {
        await waitForPong(port, { isDead: () => dead });
        nodes.push(node);
        return node;
      } catch (error) {
        lastError = new Error(`${error.message}\n${node.output.slice(-2000)}`);
        if (!dead) node.proc.kill("SIGKILL");
        await node.exited;
      }
    }
    throw new Error(`cannot start a cluster redis-server: ${lastError?.message}`);
  }

  /** A connected standalone client for the node on `port` (kept, re-created after errors). */
  async function admin(port) {
    let client = admins.get(port);
    if (client?.isReady) return client;
    if (client) {
      admins.delete(port);
      client.disconnect().catch(() => {});
    }
    client = createClient({ url: `redis://127.0.0.1:${port}`, socket: { connectTimeout: 1000, reconnectStrategy: false } });
    client.on("error", () => {});
    await client.connect();
    admins.set(port, client);
    return client;
  }

  /** Runs a raw command on the node on `port`. */
  async function cmd(port, ...args) {
    const client = await admin(port);
    return client.sendCommand(args.map(String));
  }

  const live = () => nodes.filter((n) => n.alive);

  /** Polls `check` (returns a falsy value or throws while not ready; a reason string when not ready). */
  async function until(what, check, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    let reason = "";
    for (;;) {
      if (stopped) throw new Error(`cluster stopped while waiting for ${what}`);
      try {
        const result = await check();
        if (result === true || (result && typeof result === "object")) return result;
        reason = String(result ?? "");
      } catch (error) {
        reason = error.message;
      }
      if (Date.now() > deadline) throw new Error(`Redis Cluster: ${what} not reached within ${timeoutMs} ms (${reason})\n${cluster.logs()}`);
      await delay(50);
    }
  }

  /**
   * Why the cluster is not complete and healthy from every live node's point of view (null when it is):
   * cluster_state ok, every slot ok, every live node known and linked without failure flags, every
   * live replica attached to a master, synced, and seen as that master's replica by everybody.
   */
  async function notHealthy() {
    const alive = live();
    const ids = new Map();
    for (const n of alive) {
      const info = parseInfo(await cmd(n.port, "CLUSTER", "INFO"));
      if (info.cluster_state !== "ok") return `${n.port}: cluster_state ${info.cluster_state}`;
      if (Number(info.cluster_slots_ok) !== SLOTS) return `${n.port}: cluster_slots_ok ${info.cluster_slots_ok}`;
      const view = parseNodes(await cmd(n.port, "CLUSTER", "NODES"));
      const me = view.find((v) => v.flags.has("myself"));
      ids.set(n.port, me.id);
      n.id = me.id;
      n.role = me.flags.has("master") ? "master" : "replica";
      n.masterPort = null;
      for (const other of alive) {
        const seen = view.find((v) => v.port === other.port);
        if (!seen) return `${n.port} does not know ${other.port} yet`;
        const bad = ["handshake", "fail", "fail?", "noaddr"].find((f) => seen.flags.has(f));
        if (bad) return `${n.port} sees ${other.port} as ${bad}`;
        if (other !== n && seen.linkState !== "connected") return `${n.port}: link to ${other.port} ${seen.linkState}`;
      }
      if (n.role === "replica") {
        const master = view.find((v) => v.id === me.masterId);
        n.masterPort = master?.port ?? null;
        const repl = parseInfo(await cmd(n.port, "INFO", "replication"));
        if (repl.master_link_status !== "up") return `${n.port}: master_link_status ${repl.master_link_status}`;
        if (repl.master_sync_in_progress !== "0") return `${n.port}: replica still syncing`;
      }
    }
    // Everybody agrees on who replicates whom (a master votes in a failover only for a known replica).
    for (const n of alive) {
      const view = parseNodes(await cmd(n.port, "CLUSTER", "NODES"));
      for (const r of alive.filter((x) => x.role === "replica")) {
        const seen = view.find((v) => v.port === r.port);
        if (!seen.flags.has("slave") || seen.masterId !== ids.get(r.masterPort)) return `${n.port} does not see ${r.port} as a replica of ${r.masterPort}`;
      }
    }
    return null;
  }

  /** [ [from, to, masterPort], ... ] from the point of view of the node on `port`. */
  async function slotMap(port) {
    const reply = await cmd(port, "CLUSTER", "SLOTS");
    return reply.map(([from, to, [, masterPort]]) => [Number(from), Number(to), Number(masterPort)]);
  }

  const byPort = (port) => nodes.find((n) => n.port === port);

  const cluster = {
    nodes,
    dir,
    /** The masters' urls at start. */
    urls: [],
    /** Every node's url, comma-separated: what --redis-url takes in sharded mode. */
    seed: "",
    /** Each node's last lines of output (for failure diagnostics). */
    logs(max = 1500) {
      return nodes.map((n) => `--- redis ${n.port} (${n.role}${n.alive ? "" : ", dead"})\n${n.output.slice(-max)}`).join("\n");
    },
    /** CLUSTER KEYSLOT of a key or sharded channel (same hashing, `{tag}` rule included). */
    async slotOf(channelOrKey) {
      const [n] = live();
      return Number(await cmd(n.port, "CLUSTER", "KEYSLOT", channelOrKey));
    },
    /** The node (an entry of `nodes`) that masters the slot of `channelOrKey`, by CLUSTER SLOTS of a live node. */
    async masterOf(channelOrKey) {
      const slot = await cluster.slotOf(channelOrKey);
      const [n] = live();
      const range = (await slotMap(n.port)).find(([from, to]) => from <= slot && slot <= to);
      if (!range) throw new Error(`no master for slot ${slot} (${channelOrKey})`);
      return byPort(range[2]);
    },
    /** The live nodes that are masters right now (each node's own opinion, ROLE). */
    async masters() {
      const out = [];
      for (const n of live()) {
        try {
          const [role] = await cmd(n.port, "ROLE");
          if (role === "master") out.push(n);
        } catch {}
      }
      return out;
    },
    /** Σ PUBSUB SHARDNUMSUB `channel` over the current masters: what the sharded adapter's serverCount() computes. */
    async shardNumSub(channel) {
      let sum = 0;
      for (const n of await cluster.masters()) {
        const [, count] = await cmd(n.port, "PUBSUB", "SHARDNUMSUB", channel);
        sum += Number(count);
      }
      return sum;
    },
    /** The sharded channels matching `pattern` (glob) that have subscribers on a current master, sorted. */
    async shardChannels(pattern = "*") {
      const out = new Set();
      for (const n of await cluster.masters()) {
        for (const channel of await cmd(n.port, "PUBSUB", "SHARDCHANNELS", pattern)) out.add(String(channel));
      }
      return [...out].sort();
    },
    /**
     * Records the messages of sharded `channels` for failure diagnostics, without being counted: each
     * channel is SSUBSCRIBEd on a replica of its shard (a shard delivers to the subscribers of all its
     * nodes, and PUBSUB SHARDNUMSUB on the masters, which the adapter's serverCount() sums, does not
     * see it). A channel whose shard has no live replica is not recorded. `add(channels)` records more,
     * `dump(max)` gives one line per message, `close()` stops.
     */
    async sniff(channels = []) {
      const log = [];
      const subscribers = new Map(); // replica port -> client
      const wire = {
        log,
        async add(more) {
          for (const channel of more) {
            const master = await cluster.masterOf(channel);
            const replica = nodes.find((n) => n.alive && n.role === "replica" && n.masterPort === master.port);
            if (!replica) continue;
            let client = subscribers.get(replica.port);
            if (!client) {
              client = createClient({ url: replica.url, socket: { reconnectStrategy: false } });
              client.on("error", () => {});
              await client.connect();
              subscribers.set(replica.port, client);
              sniffers.add(client);
            }
            await client.sSubscribe(channel, (message, ch) => log.push({ at: Date.now(), channel: String(ch), message }), true);
          }
        },
        /** Stops recording (else it stops with the cluster). */
        async close() {
          for (const client of subscribers.values()) {
            sniffers.delete(client);
            try {
              await client.disconnect();
            } catch {}
          }
          subscribers.clear();
        },
        dump(max = 200) {
          return log
            .slice(-max)
            .map(({ at, channel, message }) => {
              const text = message[0] === 0x7b ? message.toString("utf8") : `msgpack ${message.toString("hex")}`;
              return `${new Date(at).toISOString().slice(11)} ${channel}  ${text.length > 600 ? text.slice(0, 600) + "…" : text}`;
            })
            .join("\n");
        },
      };
      await wire.add(channels);
      return wire;
    },
    /** { port: count } of PUBSUB SHARDNUMSUB `channel` on every live node (replicas included), for diagnostics. */
    async shardNumSubByNode(channel) {
      const out = {};
      for (const n of live()) {
        try {
          const [, count] = await cmd(n.port, "PUBSUB", "SHARDNUMSUB", channel);
          out[`${n.port} (${n.role})`] = Number(count);
        } catch (error) {
          out[`${n.port} (${n.role})`] = error.message;
        }
      }
      return out;
    },
    /** Polls shardNumSub(channel) until it equals `count`; rejects with the last value after `timeoutMs`. */
    async waitForShardNumSub(channel, count, { timeoutMs = 10000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      let last;
      for (;;) {
        try {
          last = await cluster.shardNumSub(channel);
          if (last === count) return;
        } catch (error) {
          last = error.message;
        }
        if (Date.now() > deadline) {
          throw new Error(`SHARDNUMSUB ${channel} is ${last}, expected ${count}, after ${timeoutMs} ms: ${JSON.stringify(await cluster.shardNumSubByNode(channel))}`);
        }
        await delay(25);
      }
    },
    /** SIGKILLs the redis-server on `port` and waits for it to exit. */
    async kill(port) {
      const node = byPort(port);
      if (!node) throw new Error(`no cluster node on port ${port}`);
      const client = admins.get(port);
      admins.delete(port);
      if (client) client.disconnect().catch(() => {});
      await stopNode(node);
    },
    /**
     * After `kill(oldMasterPort)`: waits until one of its replicas has been promoted (it says role master,
     * and every live node's CLUSTER SLOTS gives it the old master's slots) and the cluster is healthy
     * again from every live node. Resolves with the new master's entry.
     */
    async waitForFailover(oldMasterPort, { timeoutMs = 30000 } = {}) {
      const old = byPort(oldMasterPort);
      if (!old) throw new Error(`no cluster node on port ${oldMasterPort}`);
      const slots = old.slots ?? [];
      const replicas = nodes.filter((n) => n.alive && n.masterPort === oldMasterPort);
      if (!replicas.length) throw new Error(`node ${oldMasterPort} has no live replica to fail over to`);
      return until(
        `failover of ${oldMasterPort}`,
        async () => {
          let promoted = null;
          for (const r of replicas) {
            const [role] = await cmd(r.port, "ROLE");
            if (role === "master") promoted = r;
          }
          if (!promoted) return `no replica of ${oldMasterPort} is master yet`;
          for (const n of live()) {
            const map = await slotMap(n.port);
            for (const [from] of slots) {
              const owner = map.find(([a, b]) => a <= from && from <= b)?.[2];
              if (owner !== promoted.port) return `${n.port} says slot ${from} is on ${owner}`;
            }
          }
          const reason = await notHealthyIgnoring(old);
          if (reason) return reason;
          promoted.role = "master";
          promoted.slots = slots;
          old.role = "dead master";
          return promoted;
        },
        timeoutMs,
      );
    },
    /** Runs a raw command on the node on `port`. */
    command: cmd,
    /**
     * Moves an empty `slot` (pub/sub only, no keys) to the master on `toPort` with CLUSTER SETSLOT
     * (IMPORTING, MIGRATING, then NODE on every master), and waits until every live node routes
     * it there. Resolves with `{from, to}` ports.
     */
    async moveSlot(slot, toPort) {
      const [n] = live();
      const from = (await slotMap(n.port)).find(([a, b]) => a <= slot && slot <= b)?.[2];
      if (!from) throw new Error(`no master for slot ${slot}`);
      if (from === toPort) throw new Error(`slot ${slot} is already on ${toPort}`);
      const fromId = await cmd(from, "CLUSTER", "MYID");
      const toId = await cmd(toPort, "CLUSTER", "MYID");
      await cmd(toPort, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromId);
      await cmd(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", toId);
      for (const m of await cluster.masters()) await cmd(m.port, "CLUSTER", "SETSLOT", slot, "NODE", toId);
      await until(
        `slot ${slot} on ${toPort}`,
        async () => {
          for (const x of live()) {
            const owner = (await slotMap(x.port)).find(([a, b]) => a <= slot && slot <= b)?.[2];
            if (owner !== toPort) return `${x.port} says slot ${slot} is on ${owner}`;
          }
          return true;
        },
        10000,
      );
      return { from, to: toPort };
    },
    /**
     * A manual failover (CLUSTER FAILOVER on a replica of the master on `masterPort`, both alive):
     * waits until the replica is master of the old master's slots for every live node. Resolves with
     * the new master's entry.
     */
    async manualFailover(masterPort) {
      const old = byPort(masterPort);
      const replica = nodes.find((x) => x.alive && x.masterPort === masterPort);
      if (!old || !replica) throw new Error(`node ${masterPort} has no live replica`);
      const slots = old.slots ?? [];
      await cmd(replica.port, "CLUSTER", "FAILOVER");
      return until(
        `manual failover of ${masterPort} to ${replica.port}`,
        async () => {
          const [role] = await cmd(replica.port, "ROLE");
          if (role !== "master") return `${replica.port} is still ${role}`;
          for (const x of live()) {
            const map = await slotMap(x.port);
            for (const [from] of slots) {
              const owner = map.find(([a, b]) => a <= from && from <= b)?.[2];
              if (owner !== replica.port) return `${x.port} says slot ${from} is on ${owner}`;
            }
          }
          replica.role = "master";
          replica.slots = slots;
          replica.masterPort = undefined;
          old.role = "replica";
          old.masterPort = replica.port;
          old.slots = [];
          return replica;
        },
        15000,
      );
    },
    /** A connected node-redis cluster client (`createCluster` on every node), disconnected at the end. */
    async client(opts = {}) {
      const client = createCluster({ rootNodes: live().map((n) => ({ url: n.url })), ...opts });
      client.on("error", () => {});
      await client.connect();
      clusterClients.add(client);
      return client;
    },
  };

  /** notHealthy(), leaving out a killed node (the others keep it in their table with the fail flag). */
  async function notHealthyIgnoring(dead) {
    for (const n of live()) {
      const info = parseInfo(await cmd(n.port, "CLUSTER", "INFO"));
      if (info.cluster_state !== "ok") return `${n.port}: cluster_state ${info.cluster_state}`;
      if (Number(info.cluster_slots_ok) !== SLOTS) return `${n.port}: cluster_slots_ok ${info.cluster_slots_ok}`;
      const view = parseNodes(await cmd(n.port, "CLUSTER", "NODES"));
      for (const other of live()) {
        const seen = view.find((v) => v.port === other.port);
        if (!seen) return `${n.port} does not know ${other.port}`;
        const bad = ["handshake", "fail", "fail?", "noaddr"].find((f) => seen.flags.has(f));
        if (bad) return `${n.port} sees ${other.port} as ${bad}`;
      }
      // The dead node stays in every table as "master,fail" (with no slots) until it comes back.
      const gone = view.find((v) => v.port === dead.port);
      if (gone && !gone.flags.has("fail")) return `${n.port} does not see ${dead.port} as failed`;
      if (gone && gone.slots.length) return `${n.port} still gives slots to ${dead.port}`;
    }
    return null;
  }

  // Start every server, then build the cluster by hand (faster than redis-cli --cluster create, which
  // polls once a second, and it gives a known layout).
  const total = masters * (1 + replicasPerMaster);
  await Promise.all(Array.from({ length: total }, (_, i) => launch(i < masters ? "master" : "replica")));
  // `nodes` is in start order: put the masters first.
  nodes.sort((a, b) => (a.role === b.role ? 0 : a.role === "master" ? -1 : 1));
  const masterNodes = nodes.slice(0, masters);
  const replicaNodes = nodes.slice(masters);
  for (const [i, n] of nodes.entries()) {
    n.id = await cmd(n.port, "CLUSTER", "MYID");
    await cmd(n.port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1);
  }
  for (const [i, m] of masterNodes.entries()) {
    const from = Math.floor((i * SLOTS) / masters);
    const to = Math.floor(((i + 1) * SLOTS) / masters) - 1;
    m.slots = [[from, to]];
    await cmd(m.port, "CLUSTER", "ADDSLOTSRANGE", from, to);
  }
  for (const n of nodes.slice(1)) await cmd(nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", n.port, n.bus);
  await until(
    "every node knowing every other",
    async () => {
      for (const n of nodes) {
        const view = parseNodes(await cmd(n.port, "CLUSTER", "NODES"));
        if (view.length !== total || view.some((v) => v.flags.has("handshake"))) return `${n.port} knows ${view.length}/${total}`;
      }
      return true;
    },
    readyTimeoutMs,
  );
  for (const [i, r] of replicaNodes.entries()) {
    const master = masterNodes[i % masters];
    r.masterPort = master.port;
    await cmd(r.port, "CLUSTER", "REPLICATE", master.id);
  }
  await until(
    "a healthy cluster",
    async () => {
      const reason = await notHealthy();
      if (reason) return reason;
      return replicaNodes.every((r) => r.role === "replica") ? true : "a replica is not attached yet";
    },
    readyTimeoutMs,
  );
  cluster.urls = masterNodes.map((n) => n.url);
  cluster.seed = nodes.map((n) => n.url).join(",");
  return cluster;
}
