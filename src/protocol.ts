/**
 * The messages between the launcher and its shards, over a shard process's IPC channel (a Deno
 * shard process's: runtimes/deno-channel.ts's Unix socket) or a thread's port. Nothing per
 * request travels here.
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
  /**
   * Serve HTTPS (and HTTP/2 by ALPN): the files the launcher read (for the app to know). The
   * shard reads neither: the PEM it serves and the session-ticket keys come over the channel
   * (`tls?`), as the launcher checked them for this generation, never in here.
   */
  tls?: { cert: string; key: string };
  /** A thread of the launcher (threads mode), not a process of its own. */
  thread: boolean;
}

/** A shard's answer to a stats request. `metrics` is prom-client's getMetricsAsJSON(). */
export interface ShardStats {
  type: "stats";
  id: number;
  requests: number;
  rssBytes: number;
  heapBytes: number;
  /**
   * Latency histogram since the shard started timing (see src/shard/stats.ts): counts per
   * bucket, bucket i holding durations up to 2^((i+1)/4) µs; trailing empty buckets left out.
   */
  latency?: number[];
  /** Connections accepted, where the shard's server tells (node:http). */
  connections?: number;
  /**
   * Answers with a 5xx status (or a handler that threw) among the timed requests, those the
   * latency histogram counts: a takeover's canary compares their rate.
   */
  serverErrors?: number;
  metrics?: unknown[];
}

/** Buckets of ShardStats.latency: four per doubling, from 1 µs up to 2^32 µs (over an hour). */
export const LATENCY_BUCKETS = 128;

/** The upper bound, in ms, of latency bucket `index`. */
export const latencyBucketMs = (index: number) => 2 ** ((index + 1) / 4) / 1000;

/** Shard → launcher. */
export type ShardMessage =
  | { type: "ready"; pid: number }
  | ShardStats
  | { type: "failed"; stage: "load" | "listen"; code?: string; message: string };

/** Shard → launcher, with TLS, before it listens: the launcher answers with `tls`. */
export type TlsRequest = { type: "tls?" };

/**
 * Launcher → shard. `tls`: the certificate chain and key (PEM) of the shard's generation, and
 * `ticketKeys`, 48 bytes of session-ticket keys, base64.
 */
export type LauncherMessage =
  /** `listenerStopped`: the launcher has already stopped the shard's listening socket (Deno). */
  | { type: "drain"; listenerStopped?: boolean }
  /**
   * `latency`: someone watches latency (`top`); the shard times its requests for a while.
   * `brief`: only the request count and memory (what recycling checks each second).
   */
  | { type: "stats"; id: number; latency?: boolean; brief?: boolean }
  | { type: "tls"; cert: string; key: string; ticketKeys: string };

export function isShardMessage(value: unknown): value is ShardMessage {
  const type = (value as { type?: unknown } | null)?.type;
  return type === "ready" || type === "failed" || type === "stats";
}
