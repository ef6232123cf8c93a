/**
 * The messages between the launcher and its shards, over the IPC channel (fd 3) that
 * node:child_process sets up on all three runtimes. Nothing per request travels here.
 * @module
 */

import type { HttpServer } from "./types.ts";

/** Environment variable that makes a runtime entry run as a shard; its value is a ShardSpec. */
export const SHARD_ENV = "SHARDPORT_SHARD";

/** A shard's stdio: no stdin, the launcher's stdout and stderr, and the IPC channel as fd 3. */
export const SHARD_STDIO: ["ignore", "inherit", "inherit", "ipc"] = ["ignore", "inherit", "inherit", "ipc"];

/** What a shard is told at start (JSON in SHARD_ENV). */
export interface ShardSpec {
  index: number;
  generation: number;
  host: string;
  port: number;
  app: string;
  /** `app` as a file: URL, what the shard imports. */
  appUrl: string;
  http: HttpServer;
  drainTimeoutMs: number;
  /** Keep a prom-client registry of requests and latency (--metrics-port). */
  metrics: boolean;
  /** Log one line per request (--access-log). */
  accessLog: boolean;
}

/** A shard's answer to a stats request. `metrics` is prom-client's getMetricsAsJSON(). */
export interface ShardStats {
  type: "stats";
  id: number;
  requests: number;
  rssBytes: number;
  heapBytes: number;
  metrics?: unknown[];
}

/** Shard → launcher. */
export type ShardMessage =
  | { type: "ready"; pid: number }
  | ShardStats
  | { type: "failed"; stage: "load" | "listen"; code?: string; message: string };

/** Launcher → shard. */
export type LauncherMessage =
  /** `listenerStopped`: the launcher has already stopped the shard's listening socket (Deno). */
  { type: "drain"; listenerStopped?: boolean } | { type: "stats"; id: number };

export function isShardMessage(value: unknown): value is ShardMessage {
  const type = (value as { type?: unknown } | null)?.type;
  return type === "ready" || type === "failed" || type === "stats";
}
