// `ioscale serve` configuration: --path, --transports, ping settings, --max-http-buffer-size,
// --connect-timeout, bad flag values (exit code 2 naming the option), env vars and CLI > env,
// the `.env` file (a malformed line exits 2 naming file:line), TLS files checked as options, and
// `--help` grouped under headings.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { MODES, connectError, connected, harness, next, waitFor, within } from "./lib/harness.mjs";
import { freePort } from "./lib/redis.mjs";
import { binaryPath } from "./lib/server.mjs";

test("--path: clients on that path connect, clients on the default path do not", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "p", "--path", "/custom-io/"]);
  for (const [mode, opts] of Object.entries(MODES)) {
    const ok = h.client(srv.url, { ...opts, path: "/custom-io/" });
    const info = next(ok, "server-info");
    await connected(ok);
    assert.equal((await info).serverId, "p", mode);
    const echoed = next(ok, "message");
    ok.emit("message", { message: `via custom path (${mode})` });
    assert.equal((await echoed).message, `via custom path (${mode})`);

    const wrong = h.client(srv.url, opts); // default /socket.io/
    await connectError(wrong);
    assert.equal(wrong.connected, false, `${mode} client on the default path`);
  }
});

test("--transports websocket: websocket clients connect, polling-only clients fail", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "ws-only", "--transports", "websocket"]);
  const ws = h.client(srv.url, MODES.websocket);
  const [hs] = await waitFor(ws.io.engine, "handshake");
  const info = next(ws, "server-info");
  await connected(ws);
  assert.equal((await info).serverId, "ws-only");
  assert.deepEqual(hs.upgrades, []);

  const polling = h.client(srv.url, MODES.polling);
  await connectError(polling);
  assert.equal(polling.connected, false);
  // The websocket client is unaffected.
  const m = next(ws, "message");
  ws.emit("message", { message: "still here" });
  assert.equal((await m).message, "still here");
});

test("--transports polling: websocket-only clients fail, others stay on polling", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "poll-only", "--transports", "polling"]);
  const ws = h.client(srv.url, MODES.websocket);
  await connectError(ws);
  assert.equal(ws.connected, false);

  const client = h.client(srv.url, MODES.upgrade); // would upgrade if the server offered it
  const [hs] = await waitFor(client.io.engine, "handshake");
  assert.deepEqual(hs.upgrades, [], "no upgrade offered");
  const info = next(client, "server-info");
  await connected(client);
  assert.equal((await info).serverId, "poll-only");
  const m = next(client, "message");
  client.emit("message", { message: "over polling" });
  assert.equal((await m).message, "over polling");
  assert.equal(client.io.engine.transport.name, "polling");
});

test("--transports polling,websocket: clients upgrade", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "both", "--transports", "polling,websocket"]);
  const client = h.client(srv.url, MODES.upgrade);
  const [hs] = await waitFor(client.io.engine, "handshake");
  assert.deepEqual(hs.upgrades, ["websocket"]);
  const upgraded = waitFor(client.io.engine, "upgrade", { timeoutMs: 10000 });
  await connected(client);
  await upgraded;
  assert.equal(client.io.engine.transport.name, "websocket");
});

test("--ping-interval / --ping-timeout are announced and heartbeats keep idle clients connected", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "hb", "--ping-interval", "200", "--ping-timeout", "400"]);
  for (const [mode, opts] of Object.entries(MODES)) {
    const socket = h.client(srv.url, opts);
    const [hs] = await waitFor(socket.io.engine, "handshake", { timeoutMs: 10000 });
    assert.equal(hs.pingInterval, 200, mode);
    assert.equal(hs.pingTimeout, 400, mode);
    await connected(socket);
    const disconnects = [];
    socket.on("disconnect", (r) => disconnects.push(r));
    let pings = 0;
    await waitFor(socket.io.engine, "ping", { timeoutMs: 5000, filter: () => ++pings === 5, label: mode });
    assert.deepEqual(disconnects, [], `${mode}: still connected after 5 pings`);
    assert.ok(socket.connected);
  }
});

test("default handshake values without flags", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app();
  const socket = h.client(srv.url, MODES.polling);
  const [hs] = await waitFor(socket.io.engine, "handshake");
  await connected(socket);
  assert.equal(hs.pingInterval, 25000);
  assert.equal(hs.pingTimeout, 20000);
  assert.equal(hs.maxPayload, 1000000);
  assert.deepEqual(hs.upgrades, ["websocket"]);
});

test("--max-http-buffer-size: announced as maxPayload; a larger websocket message closes the connection", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "small", "--max-http-buffer-size", "2000"]);
  const socket = h.client(srv.url, MODES.websocket);
  const [hs] = await waitFor(socket.io.engine, "handshake");
  await connected(socket);
  assert.equal(hs.maxPayload, 2000);
  const small = next(socket, "message");
  socket.emit("message", { message: "x".repeat(500) });
  assert.equal((await small).message.length, 500);

  const got = [];
  socket.on("message", (m) => got.push(m.message.length));
  const closed = next(socket, "disconnect", { timeoutMs: 10000 });
  socket.emit("message", { message: "y".repeat(10000) });
  const reason = await closed;
  assert.ok(["transport close", "transport error"].includes(reason), `disconnect reason ${reason}`);
  assert.deepEqual(got, [], "the oversized message was not broadcast");
});

test("--connect-timeout: a connection that never joins a namespace is closed", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "ct", "--connect-timeout", "300"]);
  // A Manager opens the Engine.IO connection; without a socket it never sends a CONNECT packet.
  const manager = h.manager(srv.url, MODES.websocket);
  await next(manager, "open");
  const opened = Date.now();
  const reason = await next(manager, "close", { timeoutMs: 10000 });
  assert.equal(reason, "transport close");
  const elapsed = Date.now() - opened;
  assert.ok(elapsed >= 200, `closed after ${elapsed} ms, not before the timeout`);

  // A client that does connect to a namespace in time is not affected.
  const socket = h.client(srv.url, MODES.websocket);
  await connected(socket);
  const m = next(socket, "message");
  socket.emit("message", { message: "connected in time" });
  assert.equal((await m).message, "connected in time");
});

const badValues = [
  ["--ping-interval", "abc"],
  ["--ping-timeout", "soon"],
  ["--max-http-buffer-size", "lots"],
  ["--connect-timeout", "later"],
  ["--port", "99999"],
  ["--port", "http"],
  ["--transports", "carrier-pigeon"],
];

for (const [flag, value] of badValues) {
  test(`bad value ${flag} ${value}: exit code 2 and the option named on stderr`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const args = ["serve", "--server-id", "bad", flag, value];
    if (flag !== "--port") args.push("--port", "0"); // should it start anyway, it binds a free port
    const run = h.spawn("ioscale", args);
    const { code, signal } = await within(15000, run.exited, `ioscale ${args.join(" ")}`);
    assert.equal(signal, null);
    assert.equal(code, 2, `exit code; output:\n${run.output()}`);
    assert.ok(run.stderr().includes(flag.slice(2)), `stderr names ${flag}:\n${run.stderr()}`);
    assert.doesNotMatch(run.output(), /listening on/);
  });
}


test("env SERVER_ID is used when --server-id is absent", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve"], { env: { SERVER_ID: "from-env" } });
  const socket = h.client(srv.url, MODES.websocket);
  const info = next(socket, "server-info");
  await connected(socket);
  assert.equal((await info).serverId, "from-env");
  const m = next(socket, "message");
  socket.emit("message", { message: "hi" });
  assert.equal((await m).serverId, "from-env");
});

test("--server-id wins over env SERVER_ID", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app(["serve", "--server-id", "from-cli"], { env: { SERVER_ID: "from-env" } });
  const socket = h.client(srv.url, MODES.websocket);
  const info = next(socket, "server-info");
  await connected(socket);
  assert.equal((await info).serverId, "from-cli");
});

test("env PORT is used when --port is absent", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const port = await freePort();
  const run = h.spawn("ioscale", ["serve", "--server-id", "env-port"], { env: { PORT: String(port) } });
  assert.equal(await run.listening(), port);
  const socket = h.client(`http://127.0.0.1:${port}`, MODES.websocket);
  const info = next(socket, "server-info");
  await connected(socket);
  assert.equal((await info).serverId, "env-port");
});

test("--port wins over env PORT", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const envPort = await freePort();
  let cliPort = await freePort();
  while (cliPort === envPort) cliPort = await freePort();
  const run = h.spawn("ioscale", ["serve", "--server-id", "cli-port", "--port", String(cliPort)], {
    env: { PORT: String(envPort) },
  });
  assert.equal(await run.listening(), cliPort);
  const socket = h.client(`http://127.0.0.1:${cliPort}`, MODES.websocket);
  await connected(socket);
});

test("a bad env value is reported like a bad flag", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const run = h.spawn("ioscale", ["serve", "--server-id", "x"], { env: { PORT: "not-a-port" } });
  const { code } = await within(15000, run.exited, "ioscale with PORT=not-a-port");
  assert.equal(code, 2, `exit code; output:\n${run.output()}`);
  assert.match(run.stderr(), /port/i);
  assert.doesNotMatch(run.output(), /listening on/);
});

test("env PING_INTERVAL, PING_TIMEOUT, SOCKETIO_PATH and TRANSPORTS configure the server; flags win over them", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const env = { PING_INTERVAL: "300", PING_TIMEOUT: "700", SOCKETIO_PATH: "/env-path/", TRANSPORTS: "websocket" };
  const fromEnv = await h.app(["serve", "--server-id", "env-cfg"], { env });
  const a = h.client(fromEnv.url, { ...MODES.websocket, path: "/env-path/" });
  const [hsA] = await waitFor(a.io.engine, "handshake");
  await connected(a);
  assert.equal(hsA.pingInterval, 300);
  assert.equal(hsA.pingTimeout, 700);
  assert.deepEqual(hsA.upgrades, []);
  const polling = h.client(fromEnv.url, { ...MODES.polling, path: "/env-path/" });
  await connectError(polling);

  const fromCli = await h.app(
    ["serve", "--server-id", "cli-cfg", "--ping-interval", "400", "--path", "/cli-path/", "--transports", "polling,websocket"],
    { env },
  );
  const b = h.client(fromCli.url, { ...MODES.polling, path: "/cli-path/" });
  const [hsB] = await waitFor(b.io.engine, "handshake");
  await connected(b);
  assert.equal(hsB.pingInterval, 400, "--ping-interval wins");
  assert.equal(hsB.pingTimeout, 700, "PING_TIMEOUT still applies");
  assert.deepEqual(hsB.upgrades, ["websocket"], "--transports wins");
  const envPath = h.client(fromCli.url, { ...MODES.websocket, path: "/env-path/" });
  await connectError(envPath);
});

/** A fresh directory, removed at the end of the test. */
function tempDir(t) {
  const dir = mkdtempSync(path.join(tmpdir(), "ioscale-config-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test(".env in the working directory configures the server (the environment wins over it)", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const dir = tempDir(t);
  writeFileSync(path.join(dir, ".env"), "# comment\nSERVER_ID=from-dotenv\nPING_INTERVAL=\"1234\"\nPORT=1\n");
  // PORT from the environment wins over the .env's unusable port 1.
  const run = h.spawn("ioscale", ["serve"], { cwd: dir, env: { PORT: "0" }, unsetEnv: ["SERVER_ID", "PING_INTERVAL"] });
  const port = await run.listening();
  const socket = h.client(`http://127.0.0.1:${port}`, MODES.websocket);
  const [hs] = await waitFor(socket.io.engine, "handshake");
  const info = next(socket, "server-info");
  await connected(socket);
  assert.equal((await info).serverId, "from-dotenv");
  assert.equal(hs.pingInterval, 1234);
});

test("a malformed .env line exits 2 naming the file and the line number", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const dir = tempDir(t);
  writeFileSync(path.join(dir, ".env"), "SERVER_ID=fine\n\n# a comment\nMAX CONNECTIONS=10\nPORT=0\n");
  const run = h.spawn("ioscale", ["serve", "--port", "0"], { cwd: dir });
  const { code } = await within(15000, run.exited, "ioscale serve with a malformed .env");
  assert.equal(code, 2, `exit code; output:\n${run.output()}`);
  assert.ok(run.stderr().includes(`${path.join(dir, ".env")}:4: malformed line`), `stderr names .env:4:\n${run.stderr()}`);
  assert.doesNotMatch(run.output(), /listening on/);
});

/** A self-signed certificate and its key, and the key of another certificate. */
function tlsFiles(t) {
  const dir = tempDir(t);
  const files = { cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem"), otherCert: path.join(dir, "other.pem"), otherKey: path.join(dir, "other-key.pem") };
  for (const [cert, key] of [[files.cert, files.key], [files.otherCert, files.otherKey]]) {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"], { stdio: "ignore" });
  }
  return files;
}

const tlsCommands = {
  serve: ["serve", "--port", "0"],
  lb: ["lb", "--port", "0", "--backend", "127.0.0.1:1"],
  cluster: ["cluster", "--port", "0", "--workers", "1", "--redis-url", "redis://127.0.0.1:1"],
};

for (const [name, args] of Object.entries(tlsCommands)) {
  test(`${name}: a bad TLS file exits 2 naming --tls-cert or --tls-key`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const files = tlsFiles(t);
    const cases = [
      ["/nonexistent/cert.pem", files.key, "--tls-cert", /cannot read \/nonexistent\/cert\.pem/],
      [files.key, files.key, "--tls-cert", /no PEM certificate/],
      [files.cert, "/nonexistent/key.pem", "--tls-key", /cannot read \/nonexistent\/key\.pem/],
      [files.cert, files.otherKey, "--tls-key", /is it the key of --tls-cert/],
    ];
    for (const [cert, key, option, reason] of cases) {
      const run = h.spawn("ioscale", [...args, "--tls-cert", cert, "--tls-key", key]);
      const { code } = await within(15000, run.exited, `ioscale ${name} --tls-cert ${cert} --tls-key ${key}`);
      assert.equal(code, 2, `exit code; output:\n${run.output()}`);
      assert.ok(run.stderr().includes(`invalid value for '${option}'`), `stderr names ${option}:\n${run.stderr()}`);
      assert.match(run.stderr(), reason);
      assert.doesNotMatch(run.output(), /listening on/);
    }
  });
}

/** `--help` of a command as { heading: [options] }, and its line count. */
function helpGroups(args) {
  const text = execFileSync(binaryPath("ioscale"), args, { encoding: "utf8" });
  const groups = {};
  let heading = null;
  for (const line of text.split("\n")) {
    const m = line.match(/^(\S[^:]*):$/);
    if (m) heading = groups[m[1]] = [];
    const option = line.match(/^\s+(?:-\w, )?(--[\w-]+)/);
    if (option && heading) heading.push(option[1]);
  }
  return { groups, lines: text.split("\n").length };
}

test("serve, lb and cluster --help group their options under headings", { timeout: 20000 }, () => {
  const serve = helpGroups(["serve", "--help"]);
  for (const [heading, option] of [["Network", "--port"], ["Network", "--allowed-origins"], ["Protocol", "--ping-interval"], ["Redis cluster", "--redis-url"], ["Redis cluster", "--redis-mode"], ["Limits", "--max-connections"], ["Auth", "--auth-jwt-secret"], ["TLS", "--tls-cert"], ["Operations", "--ops-port"], ["Logging", "--log-format"]]) {
    assert.ok(serve.groups[heading]?.includes(option), `serve --help: ${option} under "${heading}:" in ${JSON.stringify(serve.groups)}`);
  }
  assert.ok(serve.lines < 150, `serve --help is ${serve.lines} lines`);
  const lb = helpGroups(["lb", "--help"]);
  for (const [heading, option] of [["Network", "--port"], ["Balancer", "--backend"], ["Balancer", "--sticky"], ["TLS", "--tls-key"], ["Operations", "--ops-port"], ["Logging", "--log-format"]]) {
    assert.ok(lb.groups[heading]?.includes(option), `lb --help: ${option} under "${heading}:" in ${JSON.stringify(lb.groups)}`);
  }
  const cluster = helpGroups(["cluster", "--help"]);
  for (const [heading, option] of [["Cluster", "--workers"], ["Redis cluster", "--redis-url"], ["Balancer", "--policy"], ["TLS", "--tls-cert"]]) {
    assert.ok(cluster.groups[heading]?.includes(option), `cluster --help: ${option} under "${heading}:" in ${JSON.stringify(cluster.groups)}`);
  }
});
