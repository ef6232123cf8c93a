/**
 * A shard's own numbers, sent to the launcher when it asks (for `status`, `top`, the dashboard
 * and `/metrics`): requests served, memory, a latency histogram, and with --metrics-port (only
 * then is prom-client loaded) a registry with the request counter and latency histogram, labelled
 * `shard="<index>"`. No pre-summed `shard="all"`: a sum over shards falls whenever one is
 * restarted or replaced, which Prometheus takes for a counter reset and counts the others anew
 * (README, Metrics); PromQL's sum() over the shards' rates is right.
 * @module
 */

import { log } from "../log.ts";
import { LATENCY_BUCKETS, type ShardSpec, type ShardStats } from "../protocol.ts";
import type { FetchApp } from "../types.ts";

export interface Instrumented {
  fetch: FetchApp["fetch"];
  /**
   * The numbers; `watchLatency` has the shard time its requests for the next WATCH_MS; `brief`,
   * only the request count and memory.
   */
  snapshot(watchLatency?: boolean, brief?: boolean): Promise<Omit<ShardStats, "type" | "id">>;
}

/** How long the shard keeps timing requests after the launcher last asked for its numbers. */
export const WATCH_MS = 30_000;

/**
 * A cumulative latency histogram (see ShardStats.latency), kept only while someone watches
 * (`top`) or requests are timed anyway (--metrics-port, --access-log): a stats request that asks
 * for latency switches it on for WATCH_MS, so an unwatched shard pays one boolean test per
 * request.
 */
function latencyHistogram() {
  const counts = new Float64Array(LATENCY_BUCKETS);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const histogram = {
    watched: false,
    record(ms: number) {
      // Bucket i holds durations up to 2^((i+1)/4) µs.
      const index = Math.ceil(Math.log2(ms * 1000) * 4) - 1;
      counts[index < 0 ? 0 : index >= LATENCY_BUCKETS ? LATENCY_BUCKETS - 1 : index]++;
    },
    /** The counts so far, without trailing empty buckets; `watch` (re)starts the watch. */
    read(watch = false): number[] {
      if (watch) {
        histogram.watched = true;
        clearTimeout(timer);
        timer = setTimeout(() => {
          histogram.watched = false;
        }, WATCH_MS);
      }
      let end = LATENCY_BUCKETS;
      while (end > 0 && counts[end - 1] === 0) end--;
      return Array.from(counts.subarray(0, end));
    },
  };
  return histogram;
}

export async function instrument(
  fetch: FetchApp["fetch"],
  spec: ShardSpec,
  memoryUsage: () => { rss: number; heapUsed: number },
): Promise<Instrumented> {
  let requests = 0;
  const latency = latencyHistogram();
  const memory = () => {
    const { rss, heapUsed } = memoryUsage();
    return { rssBytes: rss, heapBytes: heapUsed };
  };
  let serverErrors = 0;
  const metrics = spec.metrics ? await prometheus(String(spec.index)) : undefined;
  /** Answers one request and accounts for it: latency, 5xx, and the metrics and access log where on. */
  const timed = async (request: Request, env?: unknown, context?: unknown) => {
    const started = performance.now();
    let status = 500;
    try {
      const response = await fetch(request, env, context);
      status = response.status;
      return response;
    } finally {
      const ms = performance.now() - started;
      latency.record(ms);
      if (status >= 500) serverErrors++;
      metrics?.observe(status, ms / 1000);
      if (spec.accessLog) logAccess(request, status, ms);
    }
  };
  // Fixed parameters: no rest array allocated per request. What the runtime passes (Bun's server,
  // Deno's info, Hono's env and context) goes through as it came.
  const always: FetchApp["fetch"] = (request, env?, context?) => {
    requests++;
    return timed(request, env, context);
  };
  // Unwatched, the only cost per request: one increment and one test.
  const whenWatched: FetchApp["fetch"] = (request, env?, context?) => {
    requests++;
    return latency.watched ? timed(request, env, context) : fetch(request, env, context);
  };
  return {
    fetch: spec.metrics || spec.accessLog ? always : whenWatched,
    snapshot: async (watch, brief) =>
      brief
        ? { requests, ...memory() }
        : {
            requests,
            ...memory(),
            latency: latency.read(watch),
            serverErrors,
            metrics: await metrics?.registry.getMetricsAsJSON(),
          },
  };
}

/** One access-log line (--access-log). */
function logAccess(request: Request, status: number, ms: number): void {
  const { pathname, search } = new URL(request.url);
  const path = pathname + search;
  const rounded = Math.round(ms * 10) / 10;
  log.info(`${request.method} ${path} ${status} ${rounded} ms`, {
    method: request.method,
    path,
    status,
    ms: rounded,
  });
}

/** The shard's prom-client registry; prom-client is loaded only with --metrics-port. */
async function prometheus(shard: string) {
  const { Counter, Histogram, Registry } = await import("prom-client");
  const registry = new Registry();
  const counter = new Counter({
    name: "shardport_requests_total",
    help: "Requests answered, per shard.",
    labelNames: ["shard", "status"],
    registers: [registry],
  });
  const latency = new Histogram({
    name: "shardport_request_duration_seconds",
    help: "Time from the request to the response headers, per shard.",
    labelNames: ["shard"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return {
    registry,
    observe(status: number, seconds: number) {
      const code = String(status);
      counter.inc({ shard, status: code });
      latency.observe({ shard }, seconds);
    },
  };
}
