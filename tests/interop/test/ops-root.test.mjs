// `GET /` on `ioscale serve`: one line of text/plain naming the server, its version and its
// endpoints, for whoever opens the server's address in a browser or with curl.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { get, serve, serveWithOpsPort } from "./lib/ops-util.mjs";

const QUIET = ["--stats-interval", "0"];

test("GET / answers one text/plain line: 'ioscale <version>', the Socket.IO path and the operations endpoints", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serve(h, ["--server-id", "ops-root", "--path", "/rt/", ...QUIET]);
  const { version } = (await get(`${node.url}/health`)).json;
  const res = await get(`${node.url}/`);
  t.diagnostic(JSON.stringify(res.body));
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"], /^text\/plain/);
  assert.equal(res.body, `ioscale ${version}: Socket.IO server at /rt/, operations at /health, /ready, /metrics, /stats\n`);
  // Only the root: other unknown paths stay 404.
  assert.equal((await get(`${node.url}/nothing-here`)).status, 404);
});

test("GET / with --ops-port: the main port names the operations port, the operations port answers its own line", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const node = await serveWithOpsPort(h, ["--server-id", "ops-root-port", ...QUIET]);
  const { version } = (await get(`${node.opsUrl}/health`)).json;
  const main = await get(`${node.url}/`);
  assert.equal(main.status, 200);
  assert.equal(main.body, `ioscale ${version}: Socket.IO server at /socket.io/, operations on port ${node.opsPort} at /health, /ready, /metrics, /stats\n`);
  const ops = await get(`${node.opsUrl}/`);
  assert.equal(ops.status, 200);
  assert.match(ops.headers["content-type"], /^text\/plain/);
  assert.equal(ops.body, `ioscale ${version}: operations endpoints /health, /ready, /metrics, /stats\n`);
});
