/**
 * The launcher's side of the shards: start N and wait for each handshake, restart one that dies,
 * replace them all one by one on reload, drain them all on stop. Runtime-neutral: the runtime
 * adapter only says how to spawn a shard.
 *
 * Every shard that exists is in one place: `slots` (serving, or starting as a restart or in the
 * first start), `incoming` (a reload's or a recycle's new shard, until it takes its slot),
 * `joining` (a shard `scale` adds, until it is ready and gets a new slot) or `retiring` (replaced
 * or scaled away, draining). stop() and kill() reach them all.
 *
 * What changes the set of shards on purpose (reload, recycle, scale) runs one at a time, in the
 * order asked, after the start: see exclusive().
 * @module
 */
import { log } from "../log.ts";
import { isShardMessage, type LauncherMessage, type ShardStats } from "../protocol.ts";
import type { Runtime, ShardHandle } from "../types.ts";
import type { Config } from "./config.ts";
import { type EarlyShard, endEarly, killEarly } from "./early.ts";
import { event } from "./events.ts";
import { loadThreads, shardSpec, spawnShard } from "./spawn.ts";

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
/** Start-up failures in a row (shards that never got ready) after which a slot is given up. */
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

/** How a rolling reload ended: the generation now serving, or why it stopped. */
export type ReloadResult = { generation: number } | { error: string };

/** How `scale` ended: the shard count now serving, or why it stopped. */
export type ScaleResult = { shards: number } | { error: string };

/** How a recycle ended: done, skipped (the shard was replaced or stopped meanwhile), or why not. */
export type RecycleResult = { done: true } | { skipped: true } | { error: string };

/** A shard's request count and memory, as recycling checks them. */
export interface ShardUsage {
  index: number;
  label: string;
  requests: number;
  rssBytes: number;
}

const STOPPED = { error: "the launcher is stopping" };

/** One shard process, from spawn to exit. */
class Shard {
  state: State = "starting";
  readonly startedAt = Date.now();
  readyAt = 0;
  /** Replaced and told to drain: its exit, even before it was ready, is expected. */
  retired = false;
  private nextStatsId = 0;
  private readonly pendingStats = new Map<number, (stats: ShardStats | undefined) => void>();
  exitReason = "";
  readonly index: number;
  readonly generation: number;
  /** One of the first start's shards: if it never gets ready, the start fails (no restart). */
  readonly firstStart: boolean;
  readonly child: ShardHandle;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(
    index: number,
    generation: number,
    firstStart: boolean,
    child: ShardHandle,
    readyTimeoutMs: number,
    /** How long it has been starting already (a shard started before the launcher loaded). */
    startingForMs = 0,
  ) {
    this.index = index;
    this.generation = generation;
    this.firstStart = firstStart;
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
      let timedOut = false;
      const timer = setTimeout(
        () => {
          timedOut = true;
          reject(new ShardStartError(index, `shard ${index} was not ready within ${readyTimeoutMs} ms`));
          this.kill();
        },
        Math.max(0, readyTimeoutMs - startingForMs),
      );
      child.on("message", (message) => {
        if (!isShardMessage(message)) return;
        if (message.type === "stats") return this.pendingStats.get(message.id)?.(message);
        // Too late: the shard is being killed, and stays "starting" until it has exited.
        if (timedOut) return;
        clearTimeout(timer);
        if (message.type === "ready") {
          if (this.state === "starting") this.state = "ready";
          // Told to drain while it booted: a message that came before the shard listened for
          // messages may be lost (Node emits IPC messages with no queue), so it is told again.
          if (this.state === "draining" && this.child.connected)
            this.child.send({ type: "drain" } satisfies LauncherMessage);
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

  /**
   * Asks the shard for its numbers; undefined if it does not answer within `timeoutMs`. `brief`:
   * only requests and memory.
   */
  stats(timeoutMs = 1000, latency = false, brief = false): Promise<ShardStats | undefined> {
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
      this.child.send({ type: "stats", id, latency, brief });
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
  /** Per slot: its shard (serving, or starting), or undefined while a restart is pending. */
  private readonly slots: (Shard | undefined)[];
  /** Per slot: the shard a reload is starting for it, until that one takes the slot. */
  private readonly incoming: (Shard | undefined)[];
  private readonly retiring = new Set<Shard>();
  /** The shard `scale` is adding, until it is ready and gets the next slot. */
  private joining?: Shard;
  /** Per slot: the generation its shards run (a restart keeps it). */
  private readonly generations: number[];
  /** Per slot: exits in a row (for the back-off), and start-up failures in a row (to give up). */
  private readonly crashes: number[];
  private readonly startFailures: number[];
  /** Restarts after a crash, per slot (for status and metrics). */
  readonly restarts: number[];
  /** Completed rolling reloads. */
  reloads = 0;
  /** Called with every new shard's handle and generation (the launcher answers its `tls?` on it). */
  onSpawn?: (child: ShardHandle, generation: number) => void;
  /**
   * Called as a rolling reload of `generation` begins (not when it is asked for: reloads wait and
   * coalesce); `inUse`: the generations some shard runs, or a restart or scale-up would start.
   */
  onReloadStart?: (generation: number, inUse: ReadonlySet<number>) => void;
  /** Every process that ran a shard of this launcher during its start (the launcher for threads). */
  readonly startPids = new Set<number>([process.pid]);
  /** Shards of the first start that were started before the launcher had loaded, by slot. */
  early: EarlyShard[] = [];
  private readonly restartTimers: (ReturnType<typeof setTimeout> | undefined)[];
  /** The last generation that every slot reached. */
  private generation = 0;
  private stopping = false;
  /** start() has finished, either way. */
  private started = false;
  /** Settles when start() has finished, either way, and then when the last queued task has. */
  private reloadChain: Promise<unknown>;
  private startFinished: () => void = () => {};
  private queuedReload?: Promise<ReloadResult>;
  /** What replace() works for now, as the log says it. */
  private replacing: "reload" | "recycle" = "reload";
  /** Reloads, recycles and scalings queued or running. */
  private pending = 0;
  /** The shard count the last `scale` asked for (SIGTTIN and SIGTTOU count from it). */
  private target: number;
  /** `scale` calls so far: a failed scaling resets `target` only if no later one has set it. */
  private scales = 0;

  private readonly runtime: Runtime;
  private readonly config: Config;
  /** Called when no shard is left and none will come back. */
  private readonly onGiveUp: (reason: string) => void;

  constructor(runtime: Runtime, config: Config, onGiveUp: (reason: string) => void) {
    this.runtime = runtime;
    this.config = config;
    this.onGiveUp = onGiveUp;
    const perSlot = <T>(value: T): T[] => new Array(config.shards).fill(value);
    this.slots = perSlot(undefined);
    this.incoming = perSlot(undefined);
    this.generations = perSlot(0);
    this.crashes = perSlot(0);
    this.startFailures = perSlot(0);
    this.restarts = perSlot(0);
    this.restartTimers = perSlot(undefined);
    this.target = config.shards;
    this.reloadChain = new Promise<void>((resolve) => {
      this.startFinished = resolve;
    });
  }

  private spawn(index: number, generation: number, firstStart = false): Shard {
    // The first start's shards may be running already (src/launcher/early.ts).
    const early = firstStart ? this.early[index] : undefined;
    if (early) delete this.early[index];
    const child =
      early?.handle ?? spawnShard(this.runtime, this.config, shardSpec(this.config, index, generation));
    if (child.pid !== undefined && !this.started) this.startPids.add(child.pid);
    this.onSpawn?.(child, generation);
    // An early shard has been starting since before the launcher loaded: that time counts.
    const startingFor = early ? Date.now() - early.startedAt : 0;
    const shard = new Shard(index, generation, firstStart, child, this.config.readyTimeoutMs, startingFor);
    early?.replay();
    shard.exited.then(() => this.onExit(shard));
    return shard;
  }

  /**
   * Starts every shard; resolves once all have been ready (one that dies after its handshake is
   * restarted at once), or throws the first failure, having killed them all. A stop meanwhile
   * drains them instead of killing them: requests that ready ones accepted complete.
   */
  async start(): Promise<void> {
    try {
      if (this.config.mode === "threads") await loadThreads(this.runtime);
      const shards = this.slots.map((_, index) => this.spawn(index, this.generation, true));
      shards.forEach((shard, index) => {
        this.slots[index] = shard;
      });
      // An early shard beyond the count (none, unless the count changed in between) is not ours.
      killEarly(this.early.splice(0));
      const results = await Promise.allSettled(shards.map((shard) => shard.ready));
      const failure = results.find((result) => result.status === "rejected");
      if (failure && !this.stopping) {
        this.kill();
        await Promise.all(this.live().map((shard) => shard.exited));
      }
      if (failure) throw failure.reason;
    } finally {
      this.started = true;
      this.startFinished();
    }
  }

  private onExit(shard: Shard): void {
    const { index } = shard;
    this.retiring.delete(shard);
    if (this.incoming[index] === shard) this.incoming[index] = undefined; // the reload says why
    if (this.stopping || this.slots[index] !== shard) return;
    if (shard.firstStart && shard.readyAt === 0) return; // start() fails with its reason
    this.slots[index] = undefined;
    const wasReady = shard.readyAt > 0;
    if (wasReady && Date.now() - shard.readyAt >= STABLE_AFTER_MS) this.crashes[index] = 0;
    const crashes = ++this.crashes[index];
    const failures = wasReady ? 0 : this.startFailures[index] + 1;
    this.startFailures[index] = failures;
    if (this.incoming[index]) {
      event(
        "exit",
        `shard ${index} (${shard.label}) ${shard.exitReason}; the ${this.replacing} is replacing it`,
        {
          level: "warn",
          shard: index,
        },
      );
      return;
    }
    if (failures >= MAX_START_FAILURES) {
      event(
        "exit",
        `shard ${index} failed to start ${failures} times in a row (${shard.exitReason}): giving it up`,
        { level: "error", shard: index },
      );
      if (this.nothingLeft()) {
        this.onGiveUp(`no shard left: shard ${index} kept failing at start-up (${shard.exitReason})`);
      }
      return;
    }
    const delay = Math.min(RESTART_DELAY_MS * 2 ** (crashes - 1), RESTART_DELAY_MAX_MS);
    event("exit", `shard ${index} (${shard.label}) ${shard.exitReason}; restarting in ${delay} ms`, {
      level: "warn",
      shard: index,
    });
    this.restartLater(index, delay);
  }

  /** No shard serves or starts, and none will come back. */
  private nothingLeft(): boolean {
    return (
      this.slots.every((slot) => slot === undefined) &&
      this.incoming.every((shard) => shard === undefined) &&
      this.restartTimers.every((timer) => timer === undefined)
    );
  }

  private restartLater(index: number, delay: number): void {
    this.restartTimers[index] = setTimeout(() => {
      this.restartTimers[index] = undefined;
      // A reload that took the slot meanwhile fills it.
      if (this.stopping || this.slots[index] !== undefined || this.incoming[index]) return;
      const next = this.spawn(index, this.generations[index]);
      this.slots[index] = next;
      this.restarts[index]++;
      next.ready.then(
        () => {
          this.startFailures[index] = 0;
          event("restart", `shard ${index} restarted as ${next.label}`, { shard: index });
        },
        (error: Error) => next.retired || log.warn(error.message),
      );
    }, delay);
  }

  /**
   * A rolling reload (what SIGHUP and the control socket's `reload` do): replaces every shard, one
   * at a time; the new one must be listening before the old one drains, so N shards are always
   * ready. It waits for the start and for a running reload to finish; asked for again while it
   * waits, it is the same reload (several coalesce into one). Never rejects.
   */
  reload(): Promise<ReloadResult> {
    if (this.queuedReload) return this.queuedReload;
    const queued = this.exclusive(() => {
      this.queuedReload = undefined;
      return this.rollingReload().catch(
        (error: Error): ReloadResult => ({ error: `reload failed: ${error?.message ?? error}` }),
      );
    });
    this.queuedReload = queued;
    return queued;
  }

  /** Runs `task` once the start and every task queued before it have finished. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.reloadChain.then(task).finally(() => this.pending--);
    this.reloadChain = run.catch(() => {});
    return run;
  }

  /** A reload, recycle or scaling runs or waits. */
  get busy(): boolean {
    return this.pending > 0;
  }

  private async rollingReload(): Promise<ReloadResult> {
    this.replacing = "reload";
    const generation = this.generation + 1;
    const total = this.slots.length;
    const started = Date.now();
    this.onReloadStart?.(generation, new Set([...this.generations, this.generation]));
    event("reload", `reload started: replacing ${total} shards one by one (generation ${generation})`);
    for (let index = 0; index < total; index++) {
      if (this.stopping) return STOPPED;
      let replaced: { old?: Shard; next: Shard };
      try {
        replaced = await this.replace(index, generation);
      } catch (error) {
        if (this.stopping) return STOPPED;
        const message = `reload stopped at ${index + 1}/${total}: ${(error as Error).message}; the running shards keep serving`;
        event("reload", message, { level: "error", shard: index });
        return { error: message };
      }
      const { old, next } = replaced;
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
    return { generation };
  }

  /**
   * Replaces slot `index`'s shard with a new one of `generation`, which must be ready before the
   * old one drains: the slot never goes without a ready shard. Throws if the new one fails to
   * start (the old one serves on; a slot whose shard died meanwhile restarts as after a crash),
   * or if a stop came (stop() drains the new one with the rest).
   */
  private async replace(index: number, generation: number): Promise<{ old?: Shard; next: Shard }> {
    // The slot is this replacement's now: no crash restart goes into it.
    clearTimeout(this.restartTimers[index]);
    this.restartTimers[index] = undefined;
    let next: Shard | undefined;
    try {
      next = this.spawn(index, generation);
      this.incoming[index] = next;
      await next.ready;
    } catch (error) {
      if (this.stopping) throw error;
      this.incoming[index] = undefined;
      next?.kill();
      if (!this.slots[index]) this.restartLater(index, RESTART_DELAY_MS);
      throw error;
    }
    this.incoming[index] = undefined;
    if (this.stopping) throw new Error(STOPPED.error);
    const old = this.slots[index];
    this.slots[index] = next;
    this.generations[index] = generation;
    this.crashes[index] = 0;
    this.startFailures[index] = 0;
    if (old) this.retire(old);
    return { old, next };
  }

  /**
   * Recycling (src/launcher/recycle.ts): replaces slot `index`'s shard as a reload would, if it is
   * still the shard `label` names and ready once the tasks queued before have run. Never rejects.
   */
  recycle(index: number, label: string, reason: string): Promise<RecycleResult> {
    return this.exclusive(async (): Promise<RecycleResult> => {
      const old = this.slots[index];
      if (this.stopping || old?.label !== label || old.state !== "ready") return { skipped: true };
      event("recycle", `shard ${index} (${label}) ${reason}: replacing it`, { shard: index });
      this.replacing = "recycle";
      const started = Date.now();
      try {
        const { next } = await this.replace(index, this.generations[index]);
        event("recycle", `shard ${index} recycled: ${label} -> ${next.label} in ${Date.now() - started} ms`, {
          shard: index,
        });
        return { done: true };
      } catch (error) {
        return this.stopping ? { skipped: true } : { error: (error as Error).message };
      }
    });
  }

  /** Every ready shard's request count and memory; those that do not answer within a second are left out. */
  async usage(): Promise<ShardUsage[]> {
    const all = await Promise.all(
      this.slots.map(async (shard, index) => {
        const stats = await shard?.stats(1000, false, true);
        return shard && stats
          ? { index, label: shard.label, requests: stats.requests, rssBytes: stats.rssBytes }
          : undefined;
      }),
    );
    return all.filter((usage): usage is ShardUsage => usage !== undefined);
  }

  /** Shard slots: --shards, or what `scale` last reached. */
  get size(): number {
    return this.slots.length;
  }

  /**
   * Runs `count` shards from now on (`scale N`), once the tasks queued before have run. Added
   * shards get a slot only once ready, one at a time; removed ones are the highest-numbered, and
   * drain. Never rejects.
   */
  scale(count: number): Promise<ScaleResult> {
    this.target = count;
    const asked = ++this.scales;
    return this.exclusive(() => this.scaleTo(count, asked));
  }

  /**
   * SIGTTIN (+1) and SIGTTOU (-1): counted from the last count asked for, so that two signals in
   * a row make two shards; undefined where that would leave 1..maxShards.
   */
  scaleBy(delta: number, maxShards: number): Promise<ScaleResult> | undefined {
    const count = this.target + delta;
    if (count < 1 || count > maxShards) {
      event(
        "scale",
        `scale: ${this.target} shards already, the ${count < 1 ? "least" : "most"} there can be`,
        {
          level: "warn",
        },
      );
      return undefined;
    }
    return this.scale(count);
  }

  /** `asked`: which scale() call this is (this.scales then). */
  private async scaleTo(count: number, asked: number): Promise<ScaleResult> {
    const from = this.slots.length;
    if (this.stopping) return STOPPED;
    if (count === from) return { shards: from };
    const started = Date.now();
    event("scale", `scale started: ${from} -> ${count} shards`);
    while (this.slots.length > count) {
      const index = this.slots.length - 1;
      const shard = this.removeLastSlot();
      if (shard) this.retire(shard);
      event("scale", `scale: shard ${index} (${shard?.label ?? "-"}) removed, draining`, { shard: index });
    }
    while (this.slots.length < count) {
      const index = this.slots.length;
      const next = this.spawn(index, this.generation);
      this.joining = next;
      try {
        await next.ready;
      } catch (error) {
        if (this.stopping) return STOPPED;
        next.kill();
        // SIGTTIN and SIGTTOU count from what serves now, unless a later scale, queued, set its own.
        if (asked === this.scales) this.target = this.slots.length;
        const message = `scale stopped at ${index}/${count} shards: ${(error as Error).message}; ${index} shards serve`;
        event("scale", message, { level: "error", shard: index });
        return { error: message };
      } finally {
        this.joining = undefined;
      }
      if (this.stopping) return STOPPED; // stop() drained it with the rest
      this.addSlot(next);
      event("scale", `scale ${index + 1}/${count}: shard ${index} (${next.label}) added, ready`, {
        shard: index,
      });
    }
    event("scale", `scale done: ${from} -> ${count} shards in ${Date.now() - started} ms`);
    return { shards: count };
  }

  /** A new last slot, served by `shard` (ready), with fresh per-slot counts. */
  private addSlot(shard: Shard): void {
    this.slots.push(shard);
    this.incoming.push(undefined);
    this.generations.push(shard.generation);
    this.crashes.push(0);
    this.startFailures.push(0);
    this.restarts.push(0);
    this.restartTimers.push(undefined);
  }

  /** Drops the last slot and its per-slot state; returns its shard, if it had one. */
  private removeLastSlot(): Shard | undefined {
    clearTimeout(this.restartTimers.pop());
    this.incoming.pop(); // empty: nothing else replaces a shard while scaling runs
    this.generations.pop();
    this.crashes.pop();
    this.startFailures.pop();
    this.restarts.pop();
    return this.slots.pop();
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
    shard.retired = true;
    this.retiring.add(shard);
    shard.drain();
    const backstop = setTimeout(() => shard.kill(), this.config.drainTimeoutMs + 5000);
    shard.exited.then(() => clearTimeout(backstop));
  }

  /** Every shard that has not exited: serving, starting, a reload's or scale's new one, or retiring. */
  live(): Shard[] {
    const all = new Set([...this.slots, ...this.incoming, ...this.retiring, this.joining]);
    return [...all].filter((shard): shard is Shard => shard !== undefined && shard.state !== "exited");
  }

  /**
   * Drains every shard, those still starting included; resolves when all have exited: true if
   * they all exited by themselves, false if the backstop (drain timeout + 5 s) had to kill one.
   */
  async stop(): Promise<boolean> {
    this.stopping = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    // A stop before start() took the early shards over ends them too.
    const early = endEarly(this.early.splice(0), this.config.drainTimeoutMs + 5000);
    const all = this.live();
    for (const shard of all) shard.drain();
    let killed = false;
    // Each shard cuts its own connections at the drain timeout; this is only the backstop.
    const backstop = setTimeout(() => {
      killed = all.some((shard) => shard.state !== "exited");
      this.kill();
    }, this.config.drainTimeoutMs + 5000);
    await Promise.all([early, ...all.map((shard) => shard.exited)]);
    clearTimeout(backstop);
    return !killed;
  }

  /** Kills every shard at once (a late second Ctrl-C, a failed start). */
  kill(): void {
    this.stopping = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    killEarly(this.early.splice(0));
    for (const shard of this.live()) shard.kill();
  }
}
