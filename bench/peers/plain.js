// The ceiling for shardport's overhead: the demo app on the runtime's own server with reusePort,
// started N times by the benchmark, no launcher. PORT from the environment.
import process from "node:process";
import app from "../../src/app.ts";

const port = Number(process.env.PORT);
const hostname = "127.0.0.1";
if (globalThis.Bun) {
  globalThis.Bun.serve({ port, hostname, reusePort: true, fetch: app.fetch });
} else if (globalThis.Deno) {
  globalThis.Deno.serve({ port, hostname, reusePort: true, onListen() {} }, app.fetch);
} else {
  const { createAdaptorServer } = await import("@hono/node-server");
  createAdaptorServer({ fetch: app.fetch }).listen({ port, host: hostname, reusePort: true });
}
