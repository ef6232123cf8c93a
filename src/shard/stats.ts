/**
 * A shard's own numbers, sent to the launcher when it asks (for `status` and `/metrics`):
 * requests served, memory, and with --metrics-port (only then is prom-client loaded) a registry
 * with the request counter and latency histogram. Every series exists twice, `shard="<index>"`
 * and `shard="all"`, so the launcher's sum over shards also yields the totals.
 * @module
 */
import { log } from "../log.ts";
import type { ShardSpec, ShardStats } from "../protocol.ts";
import type { FetchApp } from "../types.ts";

export interface Instrumented {
  fetch: FetchApp["fetch"];
  snapshot(): Promise<Omit<ShardStats, "type" | "id">>;
}

export async function instrument(
  fetch: FetchApp["fetch"],
  spec: ShardSpec,
  memoryUsage: () => { rss: number; heapUsed: number },
): Promise<Instrumented> {
  let requests = 0;
  const memory = () => {
    const { rss, heapUsed } = memoryUsage();
    return { rssBytes: rss, heapBytes: heapUsed };
  };
  if (!spec.metrics && !spec.accessLog) {
    // The only cost per request: one increment.
    return {
      // Fixed parameters: no rest array allocated per request. What the runtime passes (Bun's
      // server, Deno's info, Hono's env and context) goes through as it came.
      fetch: (request, env?, context?) => {
        requests++;
        return fetch(request, env, context);
      },
      snapshot: async () => ({ requests, ...memory() }),
    };
  }
  const shard = String(spec.index);
  const metrics = spec.metrics ? await prometheus(shard) : undefined;
  return {
    fetch: async (request, env?, context?) => {
      requests++;
      const started = performance.now();
      let status = 500;
      try {
        const response = await fetch(request, env, context);
        status = response.status;
        return response;
      } finally {
        const seconds = (performance.now() - started) / 1000;
        metrics?.observe(status, seconds);
        if (spec.accessLog) {
          const { pathname, search } = new URL(request.url);
          const path = pathname + search;
          const ms = Math.round(seconds * 10_000) / 10;
          log.info(`${request.method} ${path} ${status} ${ms} ms`, {
            method: request.method,
            path,
            status,
            ms,
          });
        }
      }
    },
    snapshot: async () => ({
      requests,
      ...memory(),
      metrics: await metrics?.registry.getMetricsAsJSON(),
    }),
  };
}

/** The shard's prom-client registry; prom-client is loaded only with --metrics-port. */
async function prometheus(shard: string) {
  const { Counter, Histogram, Registry } = await import("prom-client");
  const registry = new Registry();
  const counter = new Counter({
    name: "shardport_requests_total",
    help: "Requests answered, per shard and in all (shard=all).",
    labelNames: ["shard", "status"],
    registers: [registry],
  });
  const latency = new Histogram({
    name: "shardport_request_duration_seconds",
    help: "Time from the request to the response headers, per shard and in all (shard=all).",
    labelNames: ["shard"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return {
    registry,
    observe(status: number, seconds: number) {
      const code = String(status);
      counter.inc({ shard, status: code });
      counter.inc({ shard: "all", status: code });
      latency.observe({ shard }, seconds);
      latency.observe({ shard: "all" }, seconds);
    },
  };
}
