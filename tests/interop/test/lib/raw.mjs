// Raw Engine.IO / Socket.IO peers for the conformance and bad-input suites.
//
// Every HTTP request uses its own TCP connection (no keep-alive pool), so a test controls
// exactly which requests overlap, and nothing stays open after the test.
// Every WebSocket buffers all its messages from the moment it is created: `next()` takes
// them from a queue, so frames that arrive together (a server that batches its writes
// puts several in one TCP read) are never missed.
import http from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import WebSocket from "ws";

export { delay };

/** The exact Engine.IO open packet Node's server sends (keys in this order). */
export function openPacket({ sid, upgrades, pingInterval, pingTimeout, maxPayload }) {
  return `0${JSON.stringify({ sid, upgrades, pingInterval, pingTimeout, maxPayload })}`;
}

/** Session ids of Node's server: 20 characters of url-safe base64 (base64id: 15 random bytes). */
export const SID_RE = /^[A-Za-z0-9_-]{20}$/;

/** Builds `http://host:port<path>?EIO=4&transport=...` from a server and a query object (undefined values left out). */
export function eioUrl(server, path, query = {}) {
  const url = new URL(path, server.url);
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined) url.searchParams.set(k, String(v));
  }
  return url.toString();
}

export function wsUrl(server, path, query = {}) {
  return eioUrl(server, path, query).replace(/^http/, "ws");
}

/**
 * Starts an HTTP request on a fresh connection. Returns { req, response } where `response`
 * resolves to { status, headers, body (utf-8 string), bytes (Buffer) } once the whole body
 * arrived, and rejects if the connection breaks first (the error has `.code`, e.g. ECONNRESET).
 * With `body` the request is ended; without it (and `end: false`) the caller writes it.
 */
export function startRequest(url, { method = "GET", headers = {}, body, end = true } = {}) {
  const req = http.request(url, { method, headers, agent: false });
  const response = new Promise((resolve, reject) => {
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("aborted", () => reject(Object.assign(new Error("response aborted"), { code: "ECONNRESET" })));
      res.on("end", () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, body: bytes.toString("utf8"), bytes });
      });
    });
  });
  response.catch(() => {}); // callers that never await it must not crash the run
  if (body !== undefined) req.end(body);
  else if (end) req.end();
  return { req, response };
}

/** One complete HTTP request (see startRequest). */
export function request(url, opts = {}) {
  return startRequest(url, opts).response;
}

/** Resolves to the value of `promise`, or rejects with `what` after `ms`. */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A WebSocket peer that queues every message from creation on.
 * - `next()` resolves to the next message: a string for a text frame, a Buffer for a binary frame.
 * - `closed` resolves to { code, reason, at } when the connection ends (for any reason).
 * - `rejected` resolves to { status, headers, body } if the server answered the upgrade with an HTTP response.
 * - with `autoPong`, Engine.IO pings ("2") are answered with "3" and not queued.
 * - with `ignoreNoop` set, Engine.IO noops ("6") are counted in `noops` and not queued.
 */
export class WsPeer {
  constructor(url, { autoPong = false, headers = {}, maxPayload } = {}) {
    this.url = url;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.pings = 0;
    this.noops = 0;
    this.ignoreNoop = false; // when set, Engine.IO noop packets ("6") are counted and not queued
    this.openedAt = undefined;
    this.ws = new WebSocket(url, { headers, perMessageDeflate: false, ...(maxPayload ? { maxPayload } : {}) });
    this.errors = [];
    this.ws.on("error", (e) => this.errors.push(e));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => {
        this.openedAt = Date.now();
        resolve();
      });
      this.ws.once("close", () => reject(new Error(`websocket ${url} closed before opening`)));
    });
    this.opened.catch(() => {});
    this.upgradeHeaders = new Promise((resolve) => this.ws.once("upgrade", (res) => resolve(res.headers)));
    this.rejected = new Promise((resolve) => {
      this.ws.once("unexpected-response", (req, res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        const done = () => {
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
          this.ws.terminate(); // ends the handshake: "close" (1006) follows
        };
        res.on("end", done);
        res.on("error", done);
        res.on("aborted", done);
      });
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        const info = { code, reason: reason.toString("utf8"), at: Date.now() };
        this.closeInfo = info;
        resolve(info);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed (${code}) while waiting for a message; queue empty`));
      });
    });
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? Buffer.from(data) : data.toString("utf8");
      if (this.autoPong && msg === "2") {
        this.pings++;
        this.send("3");
        return;
      }
      if (this.ignoreNoop && msg === "6") {
        this.noops++;
        return;
      }
      const w = this.waiters.shift();
      if (w) w.resolve(msg);
      else this.queue.push(msg);
    });
  }

  /** Next queued message (string or Buffer); rejects after `timeout` ms or when the connection closes first. */
  next(timeout = 3000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) return Promise.reject(new Error(`connection already closed (${this.closeInfo.code}); queue empty`));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no message within ${timeout} ms from ${this.url}`));
      }, timeout);
      this.waiters.push(waiter);
    });
  }

  /** Collects the next `n` messages. */
  async take(n, timeout = 3000) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.next(timeout));
    return out;
  }

  /** Resolves true if the connection closes within `ms`, false otherwise (messages keep queueing). */
  async closesWithin(ms) {
    return within(this.closed.then(() => true), ms, "close").catch(() => false);
  }

  /** Waits for the close and returns { code, reason, at }; fails after `ms`. */
  waitClose(ms = 3000) {
    return within(this.closed, ms, `close of ${this.url}`);
  }

  send(data) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Closes (or kills, if not open) the connection and waits until it is gone. */
  async close() {
    if (this.closeInfo) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close();
    else this.ws.terminate();
    await within(this.closed, 2000, "local close").catch(() => this.ws.terminate());
  }
}

/**
 * Registers cleanup of `x` when test `t` ends: a WsPeer is closed, a started request
 * ({ req }) is destroyed. Returns `x`.
 */
export function track(t, x) {
  t.after(async () => {
    if (x instanceof WsPeer) await x.close().catch(() => {});
    else if (x && x.req) x.req.destroy();
    else if (x && x.peer instanceof WsPeer) await x.peer.close().catch(() => {});
  });
  return x;
}

/** Engine.IO handshake over HTTP long-polling; returns { sid, open (parsed), body, res }. */
export async function pollingHandshake(server, path, extraQuery = {}, headers = {}) {
  const res = await request(eioUrl(server, path, { EIO: 4, transport: "polling", ...extraQuery }), { headers });
  if (res.status !== 200 || !res.body.startsWith("0")) {
    throw new Error(`polling handshake failed: ${res.status} ${JSON.stringify(res.body)}`);
  }
  const open = JSON.parse(res.body.slice(1));
  return { sid: open.sid, open, body: res.body, res };
}

/** A long-polling session: `get()` polls, `post(body)` pushes; both return the full response. */
export class PollingSession {
  constructor(server, path, sid) {
    this.server = server;
    this.path = path;
    this.sid = sid;
    this.url = eioUrl(server, path, { EIO: 4, transport: "polling", sid });
  }

  static async open(server, path, extraQuery = {}, headers = {}) {
    const hs = await pollingHandshake(server, path, extraQuery, headers);
    const s = new PollingSession(server, path, hs.sid);
    s.handshake = hs;
    return s;
  }

  get(opts = {}) {
    return request(this.url, { ...opts, method: "GET" });
  }

  startGet(opts = {}) {
    return startRequest(this.url, { ...opts, method: "GET" });
  }

  post(body, opts = {}) {
    return request(this.url, { ...opts, method: "POST", body });
  }

  startPost(opts = {}) {
    return startRequest(this.url, { ...opts, method: "POST" });
  }
}

/** WebSocket-only Engine.IO session: returns { peer, sid, open } after the open packet. */
export async function wsHandshake(server, path, { autoPong = false, headers, query = {} } = {}) {
  const peer = new WsPeer(wsUrl(server, path, { EIO: 4, transport: "websocket", ...query }), { autoPong, headers });
  const first = await peer.next();
  if (typeof first !== "string" || !first.startsWith("0")) throw new Error(`expected an open packet, got ${JSON.stringify(first)}`);
  const open = JSON.parse(first.slice(1));
  return { peer, sid: open.sid, open, raw: first };
}

/**
 * WebSocket Engine.IO session connected to a Socket.IO namespace: sends `40<ns>,<auth>` and waits for
 * `40<ns>,{"sid":...}`. With `expectAuth` also consumes the conformance server's `auth` event.
 * Answers pings automatically. Returns { peer, sid (Socket.IO), eioSid }.
 */
export async function sioConnect(server, { path = "/socket.io/", ns = "/", auth, expectAuth = false } = {}) {
  const { peer, sid: eioSid } = await wsHandshake(server, path, { autoPong: true });
  const prefix = ns === "/" ? "" : `${ns},`;
  peer.send(`40${prefix}${auth === undefined ? "" : JSON.stringify(auth)}`);
  const ack = await peer.next();
  if (typeof ack !== "string" || !ack.startsWith(`40${prefix}{`)) {
    await peer.close();
    throw new Error(`namespace connect failed: ${JSON.stringify(ack)}`);
  }
  const sid = JSON.parse(ack.slice(2 + prefix.length)).sid;
  if (expectAuth) await peer.next();
  return { peer, sid, eioSid };
}

/**
 * Asserts that a session is gone: a GET with its sid gets Node's 400 code 1 at once
 * (a live session would hold the GET as a long poll, so the wait is bounded).
 */
export async function pollAnswer(session, ms = 2000) {
  return within(session.get(), ms, `an answer to GET sid=${session.sid} (a live session holds a GET until it has packets)`);
}
