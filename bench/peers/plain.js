// The ceiling for shardport's overhead: the demo app on the runtime's own server with reusePort,
// started N times by the benchmark, no launcher. PORT from the environment; with TLS_CERT and
// TLS_KEY, HTTPS with HTTP/2 and HTTP/1.1 by ALPN, as shardport's shards serve it. On Deno it
// touches neither `process` nor a node: module: either boots Deno's Node layer (about 25 ms of
// start-up) that the demo app does not need, and a shard process does not load either.
import app from "../../src/app.ts";

const env = (name) => (globalThis.Deno ? globalThis.Deno.env.get(name) : process.env[name]);
const port = Number(env("PORT"));
const hostname = "127.0.0.1";
const files = env("TLS_CERT") && env("TLS_KEY");
const read = (name) =>
  globalThis.Deno
    ? globalThis.Deno.readTextFileSync(env(name))
    : process.getBuiltinModule("node:fs").readFileSync(env(name), "utf8");
const cert = files && read("TLS_CERT");
const key = files && read("TLS_KEY");
if (globalThis.Bun) {
  const tls = files ? { tls: { cert, key }, http2: true } : {};
  globalThis.Bun.serve({ port, hostname, reusePort: true, fetch: app.fetch, ...tls });
} else if (globalThis.Deno) {
  const tls = files ? { cert, key } : {};
  globalThis.Deno.serve({ port, hostname, reusePort: true, onListen() {}, ...tls }, app.fetch);
} else {
  const { createAdaptorServer } = await import("@hono/node-server");
  const { createSecureServer } = await import("node:http2");
  const tls = files
    ? { createServer: createSecureServer, serverOptions: { allowHTTP1: true, cert, key } }
    : {};
  createAdaptorServer({ fetch: app.fetch, ...tls }).listen({ port, host: hostname, reusePort: true });
  // With NODE_COMPILE_CACHE (bench/startup.ts): on disk now, since the benchmark ends it by a signal.
  process.getBuiltinModule("node:module").flushCompileCache?.();
}
