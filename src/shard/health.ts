/**
 * Health routes for probes, as Hono middleware the app mounts: `app.use(health())`.
 * Liveness always answers 200 while the shard runs; readiness answers 503 once the shard
 * drains, so a load balancer stops sending it new work before it exits.
 * @module
 */
import type { MiddlewareHandler } from "hono";

// On globalThis, so the app's copy of this module and the shard's (bundled in dist/node.js)
// see one flag; every shard thread has its own globalThis.
const DRAINING = Symbol.for("shardport.draining");
const state = globalThis as { [DRAINING]?: boolean };

/** Called by the shard when it starts to drain. */
export function markDraining(): void {
  state[DRAINING] = true;
}

export function isDraining(): boolean {
  return state[DRAINING] === true;
}

export interface HealthOptions {
  /** Liveness path, default `/livez`. */
  liveness?: string;
  /** Readiness path, default `/readyz`. */
  readiness?: string;
}

export function health({
  liveness = "/livez",
  readiness = "/readyz",
}: HealthOptions = {}): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "GET" && c.req.method !== "HEAD") return next();
    if (c.req.path === liveness) return c.text("live\n");
    if (c.req.path === readiness) return isDraining() ? c.text("draining\n", 503) : c.text("ready\n");
    return next();
  };
}
