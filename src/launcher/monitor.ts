/**
 * What `top` and the dashboard show: the launcher samples its shards' numbers once a second
 * while someone watches, and turns the counters into rates, shares and latency percentiles over
 * a recent window. Nothing here runs while nobody watches.
 * @module
 */
import { LATENCY_BUCKETS, latencyBucketMs } from "../protocol.ts";
import type { ShardStatus, Supervisor } from "./supervisor.ts";

/** Seconds between samples. */
export const SAMPLE_MS = 1000;
/** The window of `share` and the latency percentiles. */
export const WINDOW_MS = 10_000;
/** Points of history kept for the dashboard's chart (five minutes). */
export const HISTORY_POINTS = 300;
/** Sampling stops this long after the last `top` query, unless a dashboard keeps it on. */
const IDLE_MS = 15_000;

/** One shard slot as `top` and the dashboard show it. */
export interface ShardView {
  index: number;
  /** `pid 4242` or `thread 7`. */
  label: string;
  state: ShardStatus["state"];
  uptimeMs: number;
  restarts: number;
  /** Requests per second over the last sample interval; null until two samples exist. */
  rps: number | null;
  /** This slot's part of all requests over the window, 0..1; null without traffic. */
  share: number | null;
  /** Latency percentiles over the window, in ms (bucket upper bounds); null without data. */
  p50Ms: number | null;
  p99Ms: number | null;
  rssBytes: number | null;
  /** Requests this slot served since sampling began (all its shards together). */
  requestsSinceStart: number;
  /** Connections likewise, where every shard's server counts them (node:http); else null. */
  connectionsSinceStart: number | null;
}

export interface MonitorView {
  time: number;
  windowMs: number;
  /** When sampling began: the start of `requestsSinceStart`. */
  since: number;
  shards: ShardView[];
  totals: { rps: number | null; p50Ms: number | null; p99Ms: number | null; rssBytes: number };
}

interface Sample {
  time: number;
  label: string;
  requests: number;
  latency: number[];
}

/** A point of the dashboard's chart: per slot, requests/s and RSS (null where unknown). */
export interface HistoryPoint {
  time: number;
  rps: (number | null)[];
  rss: (number | null)[];
}

/** The q-quantile (0..1) of a histogram of bucket counts, as its bucket's upper bound in ms. */
export function quantileMs(counts: number[], q: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let index = 0; index < counts.length; index++) {
    seen += counts[index];
    if (seen >= q * total) return latencyBucketMs(index);
  }
  return latencyBucketMs(counts.length - 1);
}

/** Bucket counts of `newer` minus `older` (two cumulative histograms of one shard). */
function histogramDelta(newer: number[], older: number[] | undefined): number[] {
  return newer.map((count, index) => count - (older?.[index] ?? 0));
}

function addInto(sum: number[], counts: number[]): void {
  for (let index = 0; index < counts.length && index < LATENCY_BUCKETS; index++) {
    sum[index] = (sum[index] ?? 0) + counts[index];
  }
}

export class Monitor {
  private readonly supervisor: Supervisor;
  /** Per slot: the samples of the window, oldest first. */
  private readonly samples: Sample[][] = [];
  private readonly requestsSinceStart: number[] = [];
  private readonly connectionsSinceStart: number[] = [];
  private readonly lastConnections: (number | undefined)[] = [];
  private connectionsKnown = true;
  private readonly history: HistoryPoint[] = [];
  private readonly subscribers = new Set<(view: MonitorView, point: HistoryPoint) => void>();
  private latest: MonitorView | undefined;
  private since = 0;
  private lastWatched = 0;
  private keepOn = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private warmUp: Promise<void> | undefined;

  constructor(supervisor: Supervisor) {
    this.supervisor = supervisor;
  }

  /**
   * `top` asks: shards time their latency, sampling runs for a while. Resolves with the view;
   * the first call after a pause waits for two samples, a second apart, so that rates exist.
   */
  async watch(): Promise<MonitorView> {
    this.lastWatched = Date.now();
    if (!this.latest || Date.now() - this.latest.time > 2 * SAMPLE_MS) {
      this.warmUp ??= (async () => {
        await this.sample();
        await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
        await this.sample();
        this.schedule();
      })().finally(() => {
        this.warmUp = undefined;
      });
      await this.warmUp;
    }
    return this.latest as MonitorView;
  }

  /** Samples from now on for as long as the launcher runs (a dashboard is served). */
  keepSampling(): void {
    this.keepOn = true;
    if (!this.timer) void this.sample().then(() => this.schedule());
  }

  /** The history kept, oldest first, and the latest view. */
  current(): { history: HistoryPoint[]; view: MonitorView | undefined } {
    return { history: [...this.history], view: this.latest };
  }

  /** Calls `listener` after every sample; returns the function that stops it. */
  subscribe(listener: (view: MonitorView, point: HistoryPoint) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  private schedule(): void {
    if (this.timer) return;
    const tick = async () => {
      this.timer = undefined;
      if (!this.keepOn && Date.now() - this.lastWatched > IDLE_MS) return;
      await this.sample();
      this.schedule();
    };
    this.timer = setTimeout(tick, SAMPLE_MS);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async sample(): Promise<void> {
    const latency = Date.now() - this.lastWatched <= IDLE_MS;
    const statuses = await this.supervisor.status({ latency });
    const time = Date.now();
    if (!this.since) this.since = time;
    const point: HistoryPoint = { time, rps: [], rss: [] };
    const window: { requests: number; latency: number[] }[] = [];
    const totalLatency: number[] = [];
    let totalRps: number | null = null;
    let rssBytes = 0;
    const shards: ShardView[] = statuses.map((status) => {
      const { index, stats } = status;
      this.samples[index] ??= [];
      const kept = this.samples[index];
      const last = kept.at(-1);
      let rps: number | null = null;
      if (stats) {
        const sameShard = last?.label === status.label;
        const added = sameShard ? stats.requests - last.requests : stats.requests;
        this.requestsSinceStart[index] = (this.requestsSinceStart[index] ?? 0) + Math.max(0, added);
        if (stats.connections === undefined) this.connectionsKnown = false;
        else {
          const before = sameShard ? (this.lastConnections[index] ?? 0) : 0;
          this.connectionsSinceStart[index] =
            (this.connectionsSinceStart[index] ?? 0) + Math.max(0, stats.connections - before);
          this.lastConnections[index] = stats.connections;
        }
        if (sameShard && time > last.time) rps = (added * 1000) / (time - last.time);
        kept.push({ time, label: status.label, requests: stats.requests, latency: stats.latency ?? [] });
        while (kept.length > 0 && (kept[0].time < time - WINDOW_MS || kept[0].label !== status.label)) {
          kept.shift();
        }
        rssBytes += stats.rssBytes;
      } else {
        kept.length = 0;
      }
      const first = kept[0];
      const newest = kept.at(-1);
      const delta =
        first && newest
          ? {
              requests: newest.requests - (first === newest ? 0 : first.requests),
              latency: histogramDelta(newest.latency, first === newest ? undefined : first.latency),
            }
          : { requests: 0, latency: [] };
      window[index] = delta;
      addInto(totalLatency, delta.latency);
      if (rps !== null) totalRps = (totalRps ?? 0) + rps;
      point.rps[index] = rps;
      point.rss[index] = stats?.rssBytes ?? null;
      return {
        index,
        label: status.label,
        state: status.state,
        uptimeMs: status.uptimeMs,
        restarts: status.restarts,
        rps,
        share: null,
        p50Ms: quantileMs(delta.latency, 0.5),
        p99Ms: quantileMs(delta.latency, 0.99),
        rssBytes: stats?.rssBytes ?? null,
        requestsSinceStart: this.requestsSinceStart[index] ?? 0,
        connectionsSinceStart: null,
      };
    });
    const windowTotal = window.reduce((sum, entry) => sum + (entry?.requests ?? 0), 0);
    for (const shard of shards) {
      if (windowTotal > 0) shard.share = window[shard.index].requests / windowTotal;
      if (this.connectionsKnown) shard.connectionsSinceStart = this.connectionsSinceStart[shard.index] ?? 0;
    }
    // Threads share one process: its RSS counts once.
    const threads = shards.some((shard) => shard.label.startsWith("thread"));
    if (threads) rssBytes = Math.max(0, ...shards.map((shard) => shard.rssBytes ?? 0));
    this.latest = {
      time,
      windowMs: WINDOW_MS,
      since: this.since,
      shards,
      totals: {
        rps: totalRps,
        p50Ms: quantileMs(totalLatency, 0.5),
        p99Ms: quantileMs(totalLatency, 0.99),
        rssBytes,
      },
    };
    this.history.push(point);
    if (this.history.length > HISTORY_POINTS) this.history.shift();
    for (const subscriber of this.subscribers) subscriber(this.latest, point);
  }
}
