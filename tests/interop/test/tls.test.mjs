// TLS termination in ioscale itself (rustls): `ioscale serve` and `ioscale lb` with
// --tls-cert/--tls-key serve HTTPS and WSS to the official client; plain HTTP is refused.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { io } from "socket.io-client";
import { startServer } from "./lib/server.mjs";

function selfSigned(t) {
  const dir = mkdtempSync(path.join(tmpdir(), "ioscale-tls-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  return { cert, key };
}

async function roundTrip(url, transports, t) {
  const socket = io(url, { transports, forceNew: true, reconnection: false, rejectUnauthorized: false });
  t.after(() => socket.close());
  const info = await new Promise((resolve, reject) => {
    socket.on("server-info", resolve);
    socket.on("connect_error", reject);
  });
  const echoed = new Promise((resolve) => socket.on("message", resolve));
  socket.emit("message", { message: `over ${transports.join("+")}` });
  return { info, message: await echoed, transport: socket.io.engine.transport.name };
}

describe("TLS", () => {
  it("ioscale serve speaks HTTPS and WSS; plain HTTP gets no answer", { timeout: 20000 }, async (t) => {
    const { cert, key } = selfSigned(t);
    const server = await startServer("ioscale", ["serve", "--server-id", "tls-node", "--tls-cert", cert, "--tls-key", key], { t });
    const url = `https://127.0.0.1:${server.port}`;
    for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
      const { info, message } = await roundTrip(url, transports, t);
      assert.equal(info.serverId, "tls-node");
      assert.equal(message.message, `over ${transports.join("+")}`);
    }
    await assert.rejects(
      fetch(`http://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=polling`, { signal: AbortSignal.timeout(3000) }),
      "a plain HTTP request on the TLS port is not answered as HTTP",
    );
  });

  it("ioscale lb terminates TLS in front of plain nodes", { timeout: 20000 }, async (t) => {
    const { cert, key } = selfSigned(t);
    const node = await startServer("ioscale", ["serve", "--server-id", "behind-lb"], { t });
    const lb = await startServer("ioscale", ["lb", "--backend", `127.0.0.1:${node.port}`, "--tls-cert", cert, "--tls-key", key], { t });
    const { info, transport } = await roundTrip(`https://127.0.0.1:${lb.port}`, ["polling", "websocket"], t);
    assert.equal(info.serverId, "behind-lb");
    assert.ok(["polling", "websocket"].includes(transport));
  });

  it("ioscale lb terminating TLS tells the node X-Forwarded-Proto: https", { timeout: 20000 }, async (t) => {
    const { cert, key } = selfSigned(t);
    const seen = [];
    const backend = http.createServer((req, res) => {
      seen.push({ url: req.url, headers: req.headers });
      res.end("ok");
    });
    await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
    t.after(() => new Promise((resolve) => (backend.closeAllConnections(), backend.close(() => resolve()))));
    const lb = await startServer("ioscale", ["lb", "--backend", `127.0.0.1:${backend.address().port}`, "--tls-cert", cert, "--tls-key", key], { t });
    const body = await new Promise((resolve, reject) => {
      const req = https.get(`https://127.0.0.1:${lb.port}/plain`, { rejectUnauthorized: false }, (res) => {
        let text = "";
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => resolve(text));
      });
      req.on("error", reject);
    });
    assert.equal(body, "ok");
    // The balancer's own health checks reach the backend too; the forwarded request is ours.
    const forwarded = seen.find((s) => s.url === "/plain");
    assert.ok(forwarded, `the request reached the backend: ${JSON.stringify(seen.map((s) => s.url))}`);
    assert.equal(forwarded.headers["x-forwarded-proto"], "https");
  });

  it("a certificate that cannot be read fails the start with a clear message", { timeout: 10000 }, async (t) => {
    await assert.rejects(
      startServer("ioscale", ["serve", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], { t }),
      /exited with 2[\s\S]*invalid value for '--tls-cert': cannot read \/nonexistent\/cert\.pem/,
    );
  });
});
