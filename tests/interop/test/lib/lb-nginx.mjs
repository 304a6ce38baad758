// Real nginx for nginx.test.mjs: deploy/nginx.conf copied to a temp dir with only the upstream
// servers, the listen port and the /tmp paths replaced, run in the foreground, stopped at the end.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { tryConnect } from "./ops-util.mjs";
import { delay, freePort } from "./lb-util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
export const NGINX_CONF = path.resolve(here, "../../../../deploy/nginx.conf");

/** nginx binary: $NGINX, else /usr/sbin/nginx, else `nginx` on PATH. */
export function nginxBinary() {
  if (process.env.NGINX) return process.env.NGINX;
  if (existsSync("/usr/sbin/nginx")) return "/usr/sbin/nginx";
  return "nginx";
}

/**
 * deploy/nginx.conf with its three upstream `server` lines pointing at `backends` (host:port),
 * `listen 8080` at `port` and every /tmp path inside `dir`. Fails if the file no longer has
 * exactly those lines (the test would then not run the shipped configuration).
 */
export function renderConf(source, { backends, port, dir }) {
  const servers = [...source.matchAll(/^(\s*)server 127\.0\.0\.1:300[1-3];$/gm)];
  assert.equal(servers.length, 3, "deploy/nginx.conf has three upstream servers 127.0.0.1:3001-3003");
  assert.equal(backends.length, 3);
  let i = 0;
  let out = source.replace(/^(\s*)server 127\.0\.0\.1:300[1-3];$/gm, (_, indent) => `${indent}server ${backends[i++]};`);
  assert.equal((out.match(/^\s*listen 8080;$/gm) ?? []).length, 1, "deploy/nginx.conf listens on 8080");
  out = out.replace(/^(\s*)listen 8080;$/m, `$1listen ${port};`);
  assert.ok(out.includes("/tmp/"), "deploy/nginx.conf keeps its pid and temp files under /tmp");
  out = out.replaceAll("/tmp/", `${dir}/`);
  return out;
}

/**
 * Starts nginx with the rendered deploy/nginx.conf in a fresh temp dir on a free port; resolves
 * once the port accepts connections. Stopped (SIGTERM, its workers with it) and the dir removed
 * when the test ends, through `h`.
 */
export async function startNginx(h, backends) {
  const source = await readFile(NGINX_CONF, "utf8");
  const dir = await mkdtemp(path.join(os.tmpdir(), "ioscale-nginx-"));
  await chmod(dir, 0o755); // nginx workers run as an unprivileged user when the master is root
  h.defer(() => rm(dir, { recursive: true, force: true }));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, "nginx.conf");
    await writeFile(conf, renderConf(source, { backends, port, dir }));
    const proc = spawn(nginxBinary(), ["-p", dir, "-e", "stderr", "-c", conf, "-g", "daemon off;"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    proc.stdout.on("data", (c) => (output += c));
    proc.stderr.on("data", (c) => (output += c));
    const exited = new Promise((resolve) => {
      proc.on("error", (error) => resolve({ code: null, signal: null, error }));
      proc.on("exit", (code, signal) => resolve({ code, signal }));
    });
    let done = null;
    exited.then((r) => (done = r));
    const nginx = {
      port,
      url: `http://127.0.0.1:${port}`,
      dir,
      proc,
      exited,
      output: () => output,
      running: () => done === null,
      /** Worker pids of the master (from /proc), for the end-of-test check. */
      workers: () => {
        try {
          return readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
        } catch {
          return [];
        }
      },
      /** SIGTERM (nginx's fast shutdown: the master stops its workers), SIGKILL after 5 s. */
      async stop() {
        if (done) return done;
        const workers = nginx.workers();
        proc.kill("SIGTERM");
        const timer = setTimeout(() => {
          proc.kill("SIGKILL");
          for (const pid of workers) {
            try {
              process.kill(pid, "SIGKILL");
            } catch {}
          }
        }, 5000);
        const result = await exited;
        clearTimeout(timer);
        return result;
      },
    };
    h.defer(() => nginx.stop());
    const deadline = Date.now() + 10000;
    while (done === null && Date.now() < deadline) {
      if ((await tryConnect(port)) === "connected") return nginx;
      await delay(20);
    }
    await nginx.stop();
    if (attempt < 3 && /Address already in use/.test(output)) continue;
    throw new Error(`nginx (${nginxBinary()}) did not start on port ${port}: ${done ? `exited ${JSON.stringify(done)}` : "timeout"}\n${output}`);
  }
}
