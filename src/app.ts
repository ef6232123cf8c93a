/**
 * The demo app: says which shard answered. Any module whose default export has `fetch` can
 * take its place (`--app`), unchanged on Bun, Deno and Node.
 * @module
 */

import { Hono } from "hono";
import { healthRoutes } from "./shard/health.ts";
import { currentPid, currentShard, runtimeName } from "./shard/info.ts";

const shard = currentShard()?.index ?? 0;
const runtime = runtimeName();
const pid = currentPid();

const app = new Hono();
healthRoutes(app); // GET /livez and /readyz, for the probes in deploy/
app.get("/", (c) => c.text(`Hello from PID ${pid} (shard ${shard}, ${runtime})\n`));

export default app;
