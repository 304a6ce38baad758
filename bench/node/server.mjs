// The Node.js reference of `ioscale serve`'s application, for side-by-side benchmarks:
// `server-info` on connect, `message` relayed to everyone (or a room), `join`/`leave`.
// Usage: node server.mjs --port N [--server-id ID] [--redis-url URL[,URL...]]
//        [--redis-mode classic|sharded] [--redis-subscription-mode static|dynamic|dynamic-private]
import { createServer } from "node:http";
import { Server } from "socket.io";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : fallback;
};
const port = Number(option("--port", 3000));
const serverId = option("--server-id", `node-${process.pid}`);
const redisUrl = option("--redis-url", process.env.REDIS_URL);
const redisMode = option("--redis-mode", "classic");
const subscriptionMode = option("--redis-subscription-mode", "dynamic");

const httpServer = createServer();
const io = new Server(httpServer, { cors: { origin: "*" } });

if (redisUrl && redisMode === "sharded") {
  const { createCluster } = await import("redis");
  const { createShardedAdapter } = await import("@socket.io/redis-adapter");
  const pub = createCluster({ rootNodes: redisUrl.split(",").map((url) => ({ url })) });
  const sub = pub.duplicate();
  pub.on("error", (e) => console.error("redis", e.message));
  sub.on("error", (e) => console.error("redis", e.message));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createShardedAdapter(pub, sub, { subscriptionMode }));
} else if (redisUrl) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on("error", (e) => console.error("redis", e.message));
  sub.on("error", (e) => console.error("redis", e.message));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.on("connection", (socket) => {
  socket.emit("server-info", { serverId, timestamp: new Date().toISOString() });
  socket.on("message", (body) => {
    if (!body || typeof body.message !== "string") return;
    const out = { serverId, socketId: socket.id, message: body.message, timestamp: new Date().toISOString() };
    if (typeof body.room === "string") io.to(body.room).emit("message", out);
    else io.emit("message", out);
  });
  socket.on("join", (room, ack) => {
    if (typeof room === "string" && room) socket.join(room);
    if (typeof ack === "function") ack({ ok: typeof room === "string" && room !== "", room });
  });
});

httpServer.listen(port, "0.0.0.0", () => {
  console.log(`listening on 0.0.0.0:${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
