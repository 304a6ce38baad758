// JWT authentication with the official client: `auth.token` verified as HS256 (shared secret),
// RS256 and ES256 (PEM public key) and RS256 from a JWKS file; refusals are CONNECT_ERROR
// "unauthorized" with a reason; the token's `sub` names the sender in the app's messages.
import assert from "node:assert/strict";
import { generateKeyPairSync, createHmac, sign } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { io } from "socket.io-client";
import { startServer } from "./lib/server.mjs";

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

function hs256(claims, secret) {
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

function signed(alg, claims, privateKey, kid) {
  const header = { alg, typ: "JWT", ...(kid ? { kid } : {}) };
  const head = `${b64url(header)}.${b64url(claims)}`;
  const signature = alg === "RS256"
    ? sign("sha256", Buffer.from(head), privateKey)
    : sign("sha256", Buffer.from(head), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${head}.${signature.toString("base64url")}`;
}

/** Connects with this token; resolves { ok: true, socket } or { ok: false, error }. */
function attempt(url, token, t) {
  const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, auth: token === undefined ? {} : { token } });
  t.after(() => socket.close());
  return new Promise((resolve) => {
    socket.on("connect", () => resolve({ ok: true, socket }));
    socket.on("connect_error", (error) => resolve({ ok: false, error }));
  });
}

function tempDir(t) {
  const dir = mkdtempSync(path.join(tmpdir(), "ioscale-jwt-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe("JWT authentication", () => {
  it("HS256: valid tokens connect; forged, expired, early, wrong iss/aud and missing tokens are refused", { timeout: 20000 }, async (t) => {
    const server = await startServer("ioscale", ["serve", "--auth-jwt-secret", "s3cret", "--auth-jwt-issuer", "issuer-1", "--auth-jwt-audience", "chat"], { t });
    const good = { sub: "alice", iss: "issuer-1", aud: "chat", exp: now() + 60 };
    const ok = await attempt(server.url, hs256(good, "s3cret"), t);
    assert.ok(ok.ok, `a valid token connects: ${ok.error?.message}`);
    const cases = [
      [hs256(good, "wrong-secret"), "invalid signature"],
      [hs256({ ...good, exp: now() - 600 }, "s3cret"), "token expired"],
      [hs256({ ...good, nbf: now() + 600 }, "s3cret"), "token not yet valid"],
      [hs256({ ...good, iss: "someone-else" }, "s3cret"), "wrong issuer"],
      [hs256({ ...good, aud: "other-app" }, "s3cret"), "wrong audience"],
      ["garbage", "malformed token"],
      [undefined, "missing token"],
    ];
    for (const [token, reason] of cases) {
      const result = await attempt(server.url, token, t);
      assert.equal(result.ok, false, `refused: ${reason}`);
      assert.equal(result.error.message, "unauthorized");
      assert.deepEqual(result.error.data, { reason });
    }
    // The valid client is unaffected, and its messages carry the token's subject.
    const received = new Promise((resolve) => ok.socket.on("message", resolve));
    ok.socket.emit("message", { message: "hi" });
    const message = await received;
    assert.equal(message.userId, "alice");
    assert.equal(message.message, "hi");
  });

  it("RS256 and ES256 with PEM public keys, RS256 with a JWKS file", { timeout: 30000 }, async (t) => {
    const dir = tempDir(t);
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const rsaPem = path.join(dir, "rsa.pem");
    const ecPem = path.join(dir, "ec.pem");
    const jwks = path.join(dir, "jwks.json");
    writeFileSync(rsaPem, rsa.publicKey.export({ type: "spki", format: "pem" }));
    writeFileSync(ecPem, ec.publicKey.export({ type: "spki", format: "pem" }));
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...rsa.publicKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" }] }));
    const claims = { sub: "bob", exp: now() + 60 };

    const rsaServer = await startServer("ioscale", ["serve", "--auth-jwt-public-key", rsaPem], { t });
    assert.ok((await attempt(rsaServer.url, signed("RS256", claims, rsa.privateKey), t)).ok, "RS256 token accepted");
    const forged = await attempt(rsaServer.url, signed("RS256", claims, other.privateKey), t);
    assert.deepEqual([forged.ok, forged.error?.data], [false, { reason: "invalid signature" }]);
    const confused = await attempt(rsaServer.url, hs256(claims, rsa.publicKey.export({ type: "spki", format: "pem" })), t);
    assert.deepEqual([confused.ok, confused.error?.data], [false, { reason: "unexpected algorithm" }], "no HS256 with the public key as secret");

    const ecServer = await startServer("ioscale", ["serve", "--auth-jwt-public-key", ecPem], { t });
    assert.ok((await attempt(ecServer.url, signed("ES256", claims, ec.privateKey), t)).ok, "ES256 token accepted");

    const jwksServer = await startServer("ioscale", ["serve", "--auth-jwt-public-key", jwks], { t });
    assert.ok((await attempt(jwksServer.url, signed("RS256", claims, rsa.privateKey, "k1"), t)).ok, "JWKS key by kid");
    const unknownKid = await attempt(jwksServer.url, signed("RS256", claims, rsa.privateKey, "k2"), t);
    assert.deepEqual([unknownKid.ok, unknownKid.error?.data], [false, { reason: "unknown key id" }]);
  });

  it("a public key file that cannot be read or parsed is a usage error (exit 2)", { timeout: 10000 }, async (t) => {
    const dir = tempDir(t);
    const bad = path.join(dir, "bad.pem");
    writeFileSync(bad, "not a key");
    for (const file of [bad, path.join(dir, "missing.pem")]) {
      await assert.rejects(startServer("ioscale", ["serve", "--auth-jwt-public-key", file], { t }), /exited with 2[\s\S]*auth-jwt-public-key/);
    }
  });
});
