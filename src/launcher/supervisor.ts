/**
 * The launcher's side of the shards: start N and wait for each handshake, restart one that dies,
 * replace them all one by one on reload, drain them all on stop. Runtime-neutral: the runtime
 * adapter only says how to spawn a shard.
 * @module
 */
import { pathToFileURL } from "node:url";
import { log } from "../log.ts";
import {
  isShardMessage,
  type LauncherMessage,
  SHARD_ENV,
  type ShardSpec,
  type ShardStats,
} from "../protocol.ts";
import type { Runtime, ShardHandle } from "../types.ts";
import type { Config } from "./config.ts";
import { event } from "./events.ts";
import { ThreadShard } from "./threads.ts";

/** A shard did not become ready; `code` is the listen error's (EADDRINUSE...) if there was one. */
export class ShardStartError extends Error {
  readonly index: number;
  readonly code?: string;
  /** Set where the shard said why: "load" (the app module) or "listen". */
  readonly stage?: "load" | "listen";
  /** The shard's own one-line account, without the `shard N failed to start` prefix. */
  readonly detail: string;
  constructor(
    index: number,
    message: string,
    { code, stage, detail }: { code?: string; stage?: "load" | "listen"; detail?: string } = {},
  ) {
    super(message);
    this.index = index;
    this.code = code;
    this.stage = stage;
    this.detail = detail ?? message;
  }
}

/** First restart delay; doubles per crash in a row, up to RESTART_DELAY_MAX_MS. */
export const RESTART_DELAY_MS = 100;
export const RESTART_DELAY_MAX_MS = 5000;
/** A shard that stayed ready this long has its crash count forgotten. */
export const STABLE_AFTER_MS = 1000;
/** Start-up failures in a row after which a slot is given up. */
export const MAX_START_FAILURES = 5;

type State = "starting" | "ready" | "draining" | "exited";

/** One line of `shardport status`, and what /metrics aggregates. */
export interface ShardStatus {
  index: number;
  /** `pid 4242` or `thread 7`. */
  label: string;
  state: State;
  /** Since the shard became ready (or was started, while it starts). */
  uptimeMs: number;
  restarts: number;
  stats?: ShardStats;
}

const describeExit = (code: number | null, signal: string | null) =>
  signal ? `killed by ${signal}` : `exit code ${code}`;

/** One shard process, from spawn to exit. */
class Shard {
  state: State = "starting";
  readonly startedAt = Date.now();
  readyAt = 0;
  private nextStatsId = 0;
  private readonly pendingStats = new Map<number, (stats: ShardStats | undefined) => void>();
  exitReason = "";
  readonly index: number;
  readonly child: ShardHandle;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(index: number, child: ShardHandle, readyTimeoutMs: number) {
    this.index = index;
    this.child = child;
    this.exited = new Promise((resolve) => {
      const exited = (reason: string) => {
        this.state = "exited";
        this.exitReason = reason;
        resolve();
      };
      child.once("exit", (code, signal) => exited(describeExit(code, signal)));
      // A process that could not be spawned emits only "error".
      child.once("error", (error) => child.pid === undefined && exited(error.message));
    });
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new ShardStartError(index, `shard ${index} was not ready within ${readyTimeoutMs} ms`));
        this.kill();
      }, readyTimeoutMs);
      child.on("message", (message) => {
        if (!isShardMessage(message)) return;
        if (message.type === "stats") return this.pendingStats.get(message.id)?.(message);
        clearTimeout(timer);
        if (message.type === "ready") {
          if (this.state === "starting") this.state = "ready";
          this.readyAt = Date.now();
          resolve();
        } else {
          reject(
            new ShardStartError(index, `shard ${index} failed to start: ${message.message}`, {
              code: message.code,
              stage: message.stage,
              detail: message.message,
            }),
          );
        }
      });
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(new ShardStartError(index, `shard ${index} could not be started: ${error.message}`));
      });
      this.exited.then(() => {
        clearTimeout(timer);
        // "exit" can come before the shard's last message (its account of why it failed), which
        // arrives by "close"; Deno's child processes do not always emit "close", hence the limit.
        const exitedEarly = () =>
          reject(
            new ShardStartError(index, `shard ${index} exited before it was ready (${this.exitReason})`),
          );
        const limit = setTimeout(exitedEarly, 500);
        child.once("close", () => {
          clearTimeout(limit);
          exitedEarly();
        });
      });
    });
    this.ready.catch(() => {});
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** `pid 4242`, or `thread 7` in threads mode. */
  get label(): string {
    return this.child.label ?? `pid ${this.child.pid}`;
  }

  /** Asks the shard for its numbers; undefined if it does not answer within `timeoutMs`. */
  stats(timeoutMs = 1000, latency = false): Promise<ShardStats | undefined> {
    if (this.state !== "ready" || !this.child.connected) return Promise.resolve(undefined);
    const id = this.nextStatsId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (stats: ShardStats | undefined) => {
        clearTimeout(timer);
        this.pendingStats.delete(id);
        resolve(stats);
      };
      this.pendingStats.set(id, done);
      this.child.send({ type: "stats", id, latency });
    });
  }

  /** Asks the shard to stop accepting and finish its requests; it exits by itself. */
  drain(): void {
    if (this.state === "exited") return;
    this.state = "draining";
    if (this.child.connected) this.child.send({ type: "drain" } satisfies LauncherMessage);
    else this.child.kill("SIGTERM");
  }

  kill(): void {
    if (this.state !== "exited") this.child.kill("SIGKILL");
  }
}

export class Supervisor {
  private readonly slots: (Shard | undefined)[];
  private readonly retiring = new Set<Shard>();
  private readonly crashes: number[];
  /** Restarts after a crash, per slot (for status and metrics). */
  readonly restarts: number[];
  /** Completed rolling reloads. */
  reloads = 0;
  /** Called with every new shard's handle (the launcher answers TLS ticket-key requests on it). */
  onSpawn?: (child: ShardHandle) => void;
  private readonly restartTimers: (ReturnType<typeof setTimeout> | undefined)[];
  private generation = 0;
  /** Set once every shard of the first start is ready: crashes before that fail the start. */
  private serving = false;
  private stopping = false;
  private reloadChain: Promise<void> = Promise.resolve();
  private reloadQueued = false;

  private readonly runtime: Runtime;
  private readonly config: Config;
  /** Called when no shard is left and none will come back. */
  private readonly onGiveUp: (reason: string) => void;

  constructor(runtime: Runtime, config: Config, onGiveUp: (reason: string) => void) {
    this.runtime = runtime;
    this.config = config;
    this.onGiveUp = onGiveUp;
    this.slots = new Array(config.shards).fill(undefined);
    this.crashes = new Array(config.shards).fill(0);
    this.restarts = new Array(config.shards).fill(0);
    this.restartTimers = new Array(config.shards).fill(undefined);
  }

  private spawn(index: number, generation: number): Shard {
    const { host, port, app, http, drainTimeoutMs, metricsPort, accessLog, tls } = this.config;
    const metrics = metricsPort !== undefined;
    const appUrl = pathToFileURL(app).href;
    const spec: ShardSpec = {
      index,
      generation,
      host,
      port,
      app,
      appUrl,
      http,
      drainTimeoutMs,
      metrics,
      accessLog,
      tls,
    };
    const env = { ...process.env, [SHARD_ENV]: JSON.stringify(spec) };
    const child: ShardHandle =
      this.config.mode === "threads"
        ? (this.runtime.spawnThread?.(spec) ?? new ThreadShard(this.runtime.entry, env))
        : this.runtime.spawnShard(env, { host, port, app, tls });
    this.onSpawn?.(child);
    const shard = new Shard(index, child, this.config.readyTimeoutMs);
    shard.exited.then(() => this.onExit(shard));
    return shard;
  }

  /** Starts every shard; resolves once all are listening, or stops them all and throws. */
  async start(): Promise<void> {
    const shards = this.slots.map((_, index) => this.spawn(index, this.generation));
    shards.forEach((shard, index) => {
      this.slots[index] = shard;
    });
    const results = await Promise.allSettled(shards.map((shard) => shard.ready));
    const failure = results.find((result) => result.status === "rejected");
    if (failure) {
      this.stopping = true;
      for (const shard of shards) shard.kill();
      await Promise.all(shards.map((shard) => shard.exited));
      throw failure.reason;
    }
    this.serving = true;
  }

  private onExit(shard: Shard): void {
    this.retiring.delete(shard);
    if (!this.serving || this.stopping || this.slots[shard.index] !== shard) return;
    const { index } = shard;
    this.slots[index] = undefined;
    const wasReady = shard.readyAt > 0;
    if (wasReady && Date.now() - shard.readyAt >= STABLE_AFTER_MS) this.crashes[index] = 0;
    const crashes = ++this.crashes[index];
    if (!wasReady && crashes >= MAX_START_FAILURES) {
      event(
        "exit",
        `shard ${index} failed to start ${crashes} times in a row (${shard.exitReason}): giving it up`,
        { level: "error", shard: index },
      );
      if (
        this.slots.every((slot) => slot === undefined) &&
        this.restartTimers.every((t) => t === undefined)
      ) {
        this.onGiveUp(`no shard left: shard ${index} kept failing at start-up (${shard.exitReason})`);
      }
      return;
    }
    const delay = Math.min(RESTART_DELAY_MS * 2 ** (crashes - 1), RESTART_DELAY_MAX_MS);
    event("exit", `shard ${index} (${shard.label}) ${shard.exitReason}; restarting in ${delay} ms`, {
      level: "warn",
      shard: index,
    });
    this.restartTimers[index] = setTimeout(() => {
      this.restartTimers[index] = undefined;
      if (this.stopping || this.slots[index] !== undefined) return;
      const next = this.spawn(index, this.generation);
      this.slots[index] = next;
      this.restarts[index]++;
      next.ready.then(
        () => event("restart", `shard ${index} restarted as ${next.label}`, { shard: index }),
        (error: Error) => log.warn(error.message),
      );
    }, delay);
  }

  /**
   * Replaces every shard, one at a time: the new one must be listening before the old one
   * drains, so N shards are always ready. A reload asked for during a reload runs after it.
   */
  reload(): Promise<void> {
    if (this.reloadQueued) return this.reloadChain;
    this.reloadQueued = true;
    this.reloadChain = this.reloadChain.then(() => {
      this.reloadQueued = false;
      return this.rollingReload();
    });
    return this.reloadChain;
  }

  private async rollingReload(): Promise<void> {
    if (this.stopping) return;
    const generation = this.generation + 1;
    const total = this.slots.length;
    const started = Date.now();
    event("reload", `reload started: replacing ${total} shards one by one (generation ${generation})`);
    for (let index = 0; index < total; index++) {
      if (this.stopping) return;
      const next = this.spawn(index, generation);
      try {
        await next.ready;
      } catch (error) {
        next.kill();
        event(
          "reload",
          `reload stopped at ${index + 1}/${total}: ${(error as Error).message}; the running shards keep serving`,
          { level: "error", shard: index },
        );
        return;
      }
      if (this.stopping) return next.drain();
      const old = this.slots[index];
      clearTimeout(this.restartTimers[index]);
      this.restartTimers[index] = undefined;
      this.slots[index] = next;
      this.crashes[index] = 0;
      if (old) this.retire(old);
      event("reload", `reload ${index + 1}/${total}: shard ${index} ${old?.label ?? "-"} -> ${next.label}`, {
        shard: index,
      });
    }
    this.generation = generation;
    this.reloads++;
    event(
      "reload",
      `reload done: ${total} shards replaced in ${Date.now() - started} ms (generation ${generation})`,
    );
  }

  /** Shards ready to serve now. */
  readyCount(): number {
    return this.slots.filter((shard) => shard?.state === "ready").length;
  }

  /**
   * Every slot's shard and, from those that answer within a second, their numbers; `latency`
   * has them time their requests from now on, for a while (src/shard/stats.ts).
   */
  async status({ latency = false } = {}): Promise<ShardStatus[]> {
    const now = Date.now();
    return Promise.all(
      this.slots.map(async (shard, index) => ({
        index,
        label: shard?.label ?? "-",
        state: shard?.state ?? "exited",
        uptimeMs: shard ? now - (shard.readyAt || shard.startedAt) : 0,
        restarts: this.restarts[index],
        stats: await shard?.stats(1000, latency),
      })),
    );
  }

  /** Drains a replaced shard; kills it if it outlives its drain timeout by far. */
  private retire(shard: Shard): void {
    this.retiring.add(shard);
    shard.drain();
    const backstop = setTimeout(() => shard.kill(), this.config.drainTimeoutMs + 5000);
    shard.exited.then(() => clearTimeout(backstop));
  }

  /** Drains every shard; resolves when all have exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    const all = [...this.slots.filter((shard) => shard !== undefined), ...this.retiring];
    for (const shard of all) shard.drain();
    // Each shard cuts its own connections at the drain timeout; this is only the backstop.
    const backstop = setTimeout(() => this.kill(), this.config.drainTimeoutMs + 5000);
    await Promise.all(all.map((shard) => shard.exited));
    clearTimeout(backstop);
  }

  /** Kills every shard at once (a second Ctrl-C). */
  kill(): void {
    this.stopping = true;
    for (const shard of [...this.slots, ...this.retiring]) shard?.kill();
  }
}
