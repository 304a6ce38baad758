// Starts an ioscale process on a free port (it binds port 0 and logs the address)
// and stops it when the test ends. Every test file uses this to get its own server.
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../../..");
const targetDir = process.env.IOSCALE_TARGET_DIR || path.join(repoRoot, "target", "release");

/** Path of a built binary: `ioscale` or an example server such as `conformance` (examples/Cargo.toml). */
export function binaryPath(name) {
  return path.join(targetDir, name);
}

/**
 * Spawns `binary args... --port 0` and resolves once it logs `listening on <addr>:<port>`.
 * Returns { url, port, proc, output(), stop() }; stop() is registered with the test context when given.
 */
export async function startServer(binary, args = [], { t, env = {}, timeoutMs = 15000 } = {}) {
  const proc = spawn(binaryPath(binary), [...args, "--port", "0"], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in ${timeoutMs} ms:\n${output}`)), timeoutMs);
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
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
    proc.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${binaryPath(binary)}: ${error.message}`));
    });
  });
  proc.removeAllListeners("exit");
  proc.removeAllListeners("error");
  proc.on("error", () => {});
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  const server = {
    port,
    url: `http://127.0.0.1:${port}`,
    proc,
    output: () => output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGKILL");
        await exited;
      }
    },
  };
  if (t) t.after(() => server.stop());
  return server;
}
