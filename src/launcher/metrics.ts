/**
 * `--metrics-port`: Prometheus text from the launcher, never from a shard. On each scrape the
 * launcher asks every shard for its prom-client registry (as JSON, over the launcher channel)
 * and sums them with prom-client's AggregatorRegistry, beside its own metrics.
 * @module
 */
import { createServer, type Server } from "node:http";
import { AggregatorRegistry, Counter, Gauge, Registry } from "prom-client";
import type { Config } from "./config.ts";
import type { DashboardHandler } from "./dashboard.ts";
import type { Supervisor } from "./supervisor.ts";

/** Serves /metrics, and `dashboard`'s paths (the page at `/`) beside it. */
export async function serveMetrics(
  supervisor: Supervisor,
  config: Config,
  dashboard?: DashboardHandler,
): Promise<Server> {
  const registry = new Registry();
  new Gauge({
    name: "shardport_shards_ready",
    help: "Shards listening and ready now.",
    registers: [registry],
    collect() {
      this.set(supervisor.readyCount());
    },
  });
  new Gauge({
    name: "shardport_shards_configured",
    help: "Shards the launcher keeps running (--shards, or the last `scale`).",
    registers: [registry],
    collect() {
      this.set(supervisor.size);
    },
  });
  new Counter({
    name: "shardport_shard_restarts_total",
    help: "Shards restarted after they exited unexpectedly.",
    labelNames: ["shard"],
    registers: [registry],
    collect() {
      this.reset();
      supervisor.restarts.forEach((count, shard) => {
        this.inc({ shard: String(shard) }, count);
      });
    },
  });
  new Counter({
    name: "shardport_reloads_total",
    help: "Rolling reloads completed.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(supervisor.reloads);
    },
  });

  const server = createServer(async (request, response) => {
    if (request.url !== "/metrics") {
      if (!dashboard?.(request, response)) response.writeHead(404).end("see /metrics\n");
      return;
    }
    const shards = await supervisor.status();
    const fromShards = shards.flatMap((shard) => (shard.stats?.metrics ? [shard.stats.metrics] : []));
    // biome-ignore lint/suspicious/noExplicitAny: prom-client types its JSON loosely
    const all = AggregatorRegistry.aggregate([...fromShards, await registry.getMetricsAsJSON()] as any);
    response.writeHead(200, { "content-type": all.contentType });
    response.end(await all.metrics());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: config.metricsPort, host: config.host }, resolve);
  });
  server.unref();
  return server;
}
