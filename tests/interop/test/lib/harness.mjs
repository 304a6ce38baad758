// Helpers shared by the client-*/app-* interop tests: one cleanup stack per test (clients are closed
// before servers are stopped), real socket.io-client sockets with the test defaults, and bounded waits.
//
// The servers are started with `startServer` from ./server.mjs, which looks for the binaries in
// $IOSCALE_TARGET_DIR (default: <repo>/target/release). To run this suite against another
// implementation that follows the same CLI contract, point that variable at a directory holding
// `ioscale` and `interop_server`.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { io, Manager } from "socket.io-client";
import { binaryPath, startServer } from "./server.mjs";

/** Client transport modes every transport-sensitive test runs in. */
export const MODES = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: { transports: ["polling", "websocket"], upgrade: true },
};

/** Options every client gets unless a test overrides them. */
export const CLIENT_DEFAULTS = { forceNew: true, reconnection: false, timeout: 10000 };

/** Resolves with the listener's argument list at the next `event` (optionally one matching `filter`). */
export function waitFor(emitter, event, { timeoutMs = 5000, filter, label } = {}) {
  return new Promise((resolve, reject) => {
    const listener = (...args) => {
      if (filter && !filter(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"${label ? ` (${label})` : ""}`));
    }, timeoutMs);
    emitter.on(event, listener);
  });
}

/** First argument of the next `event`. */
export async function next(emitter, event, opts) {
  const [first] = await waitFor(emitter, event, opts);
  return first;
}

/** Collects the first argument of `count` occurrences of `event`; rejects if they do not all arrive in time. */
export function collect(emitter, event, count, { timeoutMs = 10000, label } = {}) {
  return new Promise((resolve, reject) => {
    const got = [];
    const listener = (first) => {
      got.push(first);
      if (got.length === count) {
        clearTimeout(timer);
        emitter.off(event, listener);
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms: ${got.length}/${count} "${event}"${label ? ` (${label})` : ""}`));
    }, timeoutMs);
    emitter.on(event, listener);
  });
}

/** Rejects when `promise` does not settle within `ms`. */
export function within(ms, promise, label = "operation") {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${label} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves once the socket is connected; rejects with the connect_error (or on timeout). */
export function connected(socket, timeoutMs = 10000) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    const onConnect = () => { cleanup(); resolve(socket); };
    const onError = (err) => { cleanup(); reject(err); };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`not connected within ${timeoutMs} ms`)); }, timeoutMs);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Resolves with the connect_error; rejects if the socket connects instead or nothing happens in time. */
export function connectError(socket, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    const onConnect = () => { cleanup(); reject(new Error("connected, but a connect_error was expected")); };
    const onError = (err) => { cleanup(); resolve(err); };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no connect_error within ${timeoutMs} ms`)); }, timeoutMs);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Closes a client socket and its engine, whatever state it is in. */
export function closeSocket(socket) {
  try {
    socket.disconnect();
  } catch {}
  try {
    socket.io.engine?.close();
  } catch {}
}

/**
 * Per-test harness. Everything created through it is released when the test ends, in reverse order
 * (clients first, then servers).
 */
export function harness(t) {
  const cleanups = [];
  t.after(async () => {
    while (cleanups.length) {
      const fn = cleanups.pop();
      try {
        await fn();
      } catch {}
    }
  });
  const h = {
    defer(fn) {
      cleanups.push(fn);
    },

    /** Starts a server binary (see startServer) and stops it at the end of the test. */
    async server(binary, args = [], opts = {}) {
      requireBinary(binary);
      const srv = await startServer(binary, args, opts);
      cleanups.push(() => srv.stop());
      return srv;
    },

    interopServer(args = [], opts) {
      return h.server("interop_server", args, opts);
    },

    app(args = ["serve", "--server-id", "node-a"], opts) {
      return h.server("ioscale", args, opts);
    },

    /**
     * A socket.io-client socket for `url` + `nsp` (own Manager, no reconnection). Listeners that must
     * not miss early events (welcome, server-info, upgrade) can be attached right after this returns:
     * nothing arrives before the next turn of the event loop.
     */
    client(url, { nsp = "/", ...opts } = {}) {
      const socket = io(url + nsp, { ...CLIENT_DEFAULTS, ...opts });
      cleanups.push(() => closeSocket(socket));
      return socket;
    },

    /** A Manager for multiplexing several namespaces on one Engine.IO connection. */
    manager(url, opts = {}) {
      const manager = new Manager(url, { reconnection: false, timeout: 10000, ...opts });
      cleanups.push(() => {
        for (const s of Object.values(manager.nsps)) closeSocket(s);
        try {
          manager.engine?.close();
        } catch {}
      });
      return manager;
    },

    /** Spawns a binary with exactly `args` (no implicit --port) and ends it at the end of the test. */
    spawn(binary, args, opts) {
      requireBinary(binary);
      const run = spawnBinary(binary, args, opts);
      cleanups.push(() => run.kill());
      return run;
    },
  };
  return h;
}

function requireBinary(binary) {
  const p = binaryPath(binary);
  if (!existsSync(p)) {
    throw new Error(`${p} does not exist: build it (cargo build --release --workspace --bins) or set IOSCALE_TARGET_DIR`);
  }
}

/**
 * Spawns `binary args...` with the given extra environment (in `cwd` if given). Returns { proc, output(), stderr(),
 * exited: Promise<{code, signal}>, listening(timeoutMs): Promise<port>, kill() }.
 */
export function spawnBinary(binary, args, { env = {}, unsetEnv = [], cwd } = {}) {
  const fullEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1", ...env };
  for (const k of unsetEnv) delete fullEnv[k];
  const proc = spawn(binaryPath(binary), args, { env: fullEnv, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  let stderr = "";
  proc.stdout.on("data", (c) => (output += c.toString()));
  proc.stderr.on("data", (c) => {
    output += c.toString();
    stderr += c.toString();
  });
  const exited = new Promise((resolve) => {
    proc.on("error", (error) => resolve({ code: null, signal: null, error }));
    proc.on("exit", (code, signal) => resolve({ code, signal }));
  });
  return {
    proc,
    exited,
    output: () => output,
    stderr: () => stderr,
    listening(timeoutMs = 15000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = output.match(/listening on \S+:(\d+)/);
          if (m) {
            done();
            resolve(Number(m[1]));
          }
        };
        const done = () => {
          clearTimeout(timer);
          proc.stdout.off("data", check);
          proc.stderr.off("data", check);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no "listening on" within ${timeoutMs} ms:\n${output}`));
        }, timeoutMs);
        proc.stdout.on("data", check);
        proc.stderr.on("data", check);
        exited.then(({ code }) => {
          done();
          reject(new Error(`exited with ${code} before listening:\n${output}`));
        });
        check();
      });
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGKILL");
        await exited;
      }
    },
  };
}

/** Bytes 0..255 repeated to `length`, offset by `seed` so different buffers differ. */
export function bytes(length, seed = 0) {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i + seed) & 0xff;
  return b;
}

export const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$/;
