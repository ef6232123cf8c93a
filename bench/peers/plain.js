// The ceiling for shardport's overhead: the demo app on the runtime's own server with reusePort,
// started N times by the benchmark, no launcher. PORT from the environment; with TLS_CERT and
// TLS_KEY, HTTPS with HTTP/2 and HTTP/1.1 by ALPN, as shardport's shards serve it.
import { readFileSync } from "node:fs";
import process from "node:process";
import app from "../../src/app.ts";

const port = Number(process.env.PORT);
const hostname = "127.0.0.1";
const files = process.env.TLS_CERT && process.env.TLS_KEY;
const cert = files && readFileSync(process.env.TLS_CERT, "utf8");
const key = files && readFileSync(process.env.TLS_KEY, "utf8");
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
}
