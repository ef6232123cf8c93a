/**
 * Health routes for probes: `healthRoutes(app)` adds them to a Hono app as two routes, or
 * `app.use(health())` as middleware.
 * Liveness always answers 200 while the shard runs; readiness answers 503 once the shard
 * drains, so a load balancer stops sending it new work before it exits.
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";

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

/** What `healthRoutes` needs of the app: Hono's `get`. */
interface Routes {
  get(path: string, handler: (c: Context) => Response): unknown;
}

/**
 * The same answers as two routes of the app (HEAD included, as Hono answers HEAD with GET's
 * route). Cheaper than the middleware: the app's other requests run no extra handler, so Hono
 * keeps its one-handler path (the middleware measured about 1 µs per request on Node, some 5 %
 * of a keep-alive request's CPU). Middleware the app registers before this applies to them.
 */
export function healthRoutes<App extends Routes>(
  app: App,
  { liveness = "/livez", readiness = "/readyz" }: HealthOptions = {},
): App {
  app.get(liveness, (c) => c.text("live\n"));
  app.get(readiness, (c) => (isDraining() ? c.text("draining\n", 503) : c.text("ready\n")));
  return app;
}
