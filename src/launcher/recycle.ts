/**
 * Recycling (`--max-memory`, `--max-requests`, `--max-requests-jitter`): once a second the
 * launcher asks every ready shard for its request count and RSS (a brief stats request over the
 * channel, so the shard's per-request path pays nothing), and has the supervisor replace a shard
 * that is over its limit the way a reload does: the new shard is ready before the old one drains.
 * One shard at a time, never while a reload or scaling runs; a replacement that fails to start
 * leaves the old shard serving, and that slot is tried again only after a back-off.
 * Loaded only when one of the flags is given.
 * @module
 */
import type { Config } from "./config.ts";
import { event } from "./events.ts";
import type { RecycleResult, ShardUsage } from "./supervisor.ts";

/** How often the shards are checked. */
export const CHECK_MS = 1000;
/** Checks in a row a shard's RSS must stay above --max-memory to be replaced. */
export const MEMORY_CHECKS = 3;
/** The first wait after a failed replacement; doubles per failure in a row, up to the maximum. */
export const BACKOFF_MS = 2000;
export const BACKOFF_MAX_MS = 60_000;

/** What recycling needs of the supervisor. */
export interface Recyclable {
  readonly busy: boolean;
  usage(): Promise<ShardUsage[]>;
  recycle(index: number, label: string, reason: string): Promise<RecycleResult>;
}

type Limits = Pick<Config, "maxMemoryMb" | "maxRequests" | "maxRequestsJitter">;

/** What the recycler keeps about one shard (by its label: a new shard starts afresh). */
interface Watched {
  /** This shard's --max-requests plus its jitter, drawn once. */
  requestLimit: number;
  /** Checks in a row with RSS above --max-memory. */
  overMemory: number;
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

export class Recycler {
  private readonly supervisor: Recyclable;
  private readonly limits: Limits;
  private readonly watched = new Map<string, Watched>();
  /** Per slot: failed replacements in a row, and when the next try may come. */
  private readonly failures = new Map<number, { count: number; notBefore: number }>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(supervisor: Recyclable, limits: Limits) {
    this.supervisor = supervisor;
    this.limits = limits;
  }

  start(): this {
    const tick = async () => {
      await this.check();
      if (this.stopped) return;
      this.timer = setTimeout(tick, CHECK_MS);
      (this.timer as { unref?: () => void }).unref?.();
    };
    this.timer = setTimeout(tick, CHECK_MS);
    (this.timer as { unref?: () => void }).unref?.();
    return this;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One check: finds the first shard over a limit, and replaces it (awaited: one at a time). */
  private async check(): Promise<void> {
    if (this.supervisor.busy) return;
    const usage = await this.supervisor.usage();
    const seen = new Set(usage.map((shard) => shard.label));
    for (const label of this.watched.keys()) if (!seen.has(label)) this.watched.delete(label);
    let chosen: { shard: ShardUsage; reason: string } | undefined;
    for (const shard of usage) {
      const reason = this.overLimit(shard);
      const failed = this.failures.get(shard.index);
      if (reason && !chosen && !(failed && Date.now() < failed.notBefore)) chosen = { shard, reason };
    }
    if (!chosen || this.stopped) return;
    const { index, label } = chosen.shard;
    const result = await this.supervisor.recycle(index, label, chosen.reason);
    if ("error" in result) {
      const count = (this.failures.get(index)?.count ?? 0) + 1;
      const delay = Math.min(BACKOFF_MS * 2 ** (count - 1), BACKOFF_MAX_MS);
      this.failures.set(index, { count, notBefore: Date.now() + delay });
      event(
        "recycle",
        `recycling shard ${index} failed: ${result.error}; ${label} keeps serving, next try in ${delay / 1000} s`,
        { level: "error", shard: index },
      );
    } else if ("done" in result) {
      this.failures.delete(index);
    }
  }

  /** Why `shard` must be replaced, or undefined. Counts its memory checks as it goes. */
  private overLimit(shard: ShardUsage): string | undefined {
    const { maxMemoryMb, maxRequests, maxRequestsJitter } = this.limits;
    let watched = this.watched.get(shard.label);
    if (!watched) {
      const jitter = Math.floor(Math.random() * (maxRequestsJitter + 1));
      watched = { requestLimit: (maxRequests ?? 0) + jitter, overMemory: 0 };
      this.watched.set(shard.label, watched);
    }
    if (maxMemoryMb !== undefined) {
      watched.overMemory = shard.rssBytes > maxMemoryMb * 2 ** 20 ? watched.overMemory + 1 : 0;
      if (watched.overMemory >= MEMORY_CHECKS) {
        return `RSS ${mb(shard.rssBytes)} stayed above --max-memory ${maxMemoryMb} MB for ${watched.overMemory} checks`;
      }
    }
    if (maxRequests !== undefined && shard.requests >= watched.requestLimit) {
      return `served ${shard.requests} requests (limit ${watched.requestLimit} = --max-requests ${maxRequests} + jitter ${watched.requestLimit - maxRequests})`;
    }
    return undefined;
  }
}
