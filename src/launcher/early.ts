/**
 * Cold start: the launcher's first shards start before the rest of the launcher has loaded (the
 * logger, the control socket, the supervisor), and the rest loads once they have said they are
 * ready (or failed), so that the first answer comes about one runtime start after the command,
 * not two plus the launcher's own loading, and the shards need not share the CPU with it. Only
 * where nothing could go wrong by it: a `serve` command whose flags parse, whose app module is a
 * file, without TLS (its files are checked first), on a runtime that shares ports, and only while
 * nothing at all listens on the port, so that the launcher's own checks (another launcher, a
 * foreign listener) still come before any shard of ours joins a group; what binds between the
 * probe and the shards' listen is refused after the start (guard.ts, joinedDuringStart).
 * Otherwise the launcher starts every shard itself.
 * @module
 */
import { procOf } from "../proc.ts";
import type { Runtime, ShardHandle } from "../types.ts";
import { parseConfig } from "./config.ts";
import { loadThreads, shardSpec, spawnShard } from "./spawn.ts";

/** A shard started early, with what it said before the supervisor listened. */
export interface EarlyShard {
  handle: ShardHandle;
  /** Settles on the first thing it says or does (a message, its exit, an error). */
  firstWord: Promise<void>;
  /** When it was started (Date.now()): its --ready-timeout counts from then. */
  startedAt: number;
  /** Settles once it has exited (or could not be started). */
  exited: Promise<void>;
  /** Emits again what the handle emitted before its listeners were attached, then stops recording. */
  replay(): void;
}

const RECORDED = ["message", "exit", "close", "error"] as const;
/** The longest the launcher waits for its early shards before it loads the rest of itself. */
const WAIT_CAP_MS = 1000;
/** An IPv4 or IPv6 address, not a name (node:net's isIP would cost Bun a module load here). */
const IP_LITERAL = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)$/;

/**
 * True when a plain listener (no SO_REUSEPORT) can bind host:port for a moment: then no socket
 * listens there, on this address or on an overlapping one (0.0.0.0, ::), whoever owns it. Asked
 * of the kernel by bind(), not read from /proc/net/tcp, which lists every connection (TIME_WAIT
 * included) and takes milliseconds on a busy machine. Through the runtime's own listener where it
 * has one (Bun, Deno: node:net costs them 5 to 10 ms to load), else node:net on the wildcard
 * address: node:net looks any host up through node:dns first, whose loading took 4 ms of Node's
 * 6 ms probe. The wildcard (:: or 0.0.0.0) overlaps every address, so it binds only where nothing
 * at all listens on the port: stricter, never wrong (else the guard decides, as without a probe).
 */
async function nothingListens(runtime: Runtime, host: string, port: number): Promise<boolean> {
  if (runtime.canBind) return runtime.canBind(host, port);
  const { createServer } = process.getBuiltinModule("node:net");
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/**
 * Starts the shards of generation 0 now, if it is safe to (see above); else an empty list. As
 * many as there are CPUs where their count is known without the runtime's own /proc reads (given
 * by --shards or SHARDS, or read through node:fs on Bun and Node); else shard 0 only (Deno, which
 * would run a program for each cgroup file). The supervisor starts the others.
 */
export async function startEarly(
  runtime: Runtime,
  defaultApp: string,
  argv: string[],
): Promise<EarlyShard[]> {
  // The process as the runtime tells it: no `process`, no node: module on Deno (Runtime.proc).
  const proc = procOf(runtime);
  let config: ReturnType<typeof parseConfig>;
  let countKnown = true;
  try {
    config = parseConfig(
      argv,
      proc.env(),
      defaultApp,
      runtime.readProc
        ? () => {
            countKnown = false;
            throw new Error("not now");
          }
        : undefined,
      proc,
    );
  } catch {
    return []; // the launcher says what is wrong
  }
  if (config.command !== "serve" || config.help || config.tls || runtime.reusePortGap) return [];
  if (runtime.refusesHttp?.[config.http] || proc.platform() !== "linux") return [];
  if (runtime.environmentProblem?.()) return []; // the launcher refuses it
  if (!(await proc.isFile(config.app))) return [];
  // A name (localhost) may stand for several addresses, and the probe binds one: the guard, which
  // looks at every address the name resolves to, goes first then.
  if (!IP_LITERAL.test(config.host)) return [];
  if (!(await nothingListens(runtime, config.host, config.port))) return [];
  if (config.mode === "threads") await loadThreads(runtime);
  // No more at once than there are CPUs to start them: the first answer waits for none of them.
  const count = countKnown ? Math.min(config.shards, proc.cpus()) : 1;
  return Array.from({ length: count }, (_, index) =>
    record(spawnShard(runtime, config, shardSpec(config, index, 0))),
  );
}

/** Records what `handle` emits until replay(). */
function record(handle: ShardHandle): EarlyShard {
  const recorded: [string, unknown[]][] = [];
  let heard: () => void = () => {};
  const firstWord = new Promise<void>((resolve) => {
    heard = resolve;
  });
  const recorders = RECORDED.map((name) => {
    const recorder = (...args: unknown[]) => {
      recorded.push([name, args]);
      heard();
    };
    handle.on(name, recorder);
    return [name, recorder] as const;
  });
  const exited = new Promise<void>((resolve) => {
    handle.once("exit", () => resolve());
    handle.once("error", () => handle.pid === undefined && resolve());
  });
  return {
    handle,
    firstWord,
    startedAt: Date.now(),
    exited,
    replay() {
      for (const [name, recorder] of recorders) handle.off(name, recorder);
      for (const [name, args] of recorded) handle.emit(name, ...args);
    },
  };
}

/**
 * Waits until every early shard has said something (ready, failed) or ended, at most `capMs`:
 * the rest of the launcher then loads on a CPU that the shards no longer need for their start.
 * On a machine with as many cores as shards this costs nothing; on fewer, the shards get the
 * CPU first (the first answer comes sooner, the launcher's own readiness later).
 */
export async function firstWords(shards: EarlyShard[], capMs = WAIT_CAP_MS): Promise<void> {
  if (shards.length > 0) await settlesWithin(Promise.all(shards.map((shard) => shard.firstWord)), capMs);
}

/** True if `promise` settles within `ms`, else false (when the time is up). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = await Promise.race([promise.then(() => true), late]);
  clearTimeout(timer);
  return settled;
}

/** Kills early shards at once (those not taken over, or not ended in time). */
export function killEarly(shards: (EarlyShard | undefined)[]): void {
  for (const shard of shards) shard?.handle.kill("SIGKILL");
}

/**
 * Ends early shards that no supervisor has taken over (a stop signal or a refusal before the
 * start): SIGTERM, which drains a shard that listens and ends one that does not yet; resolves
 * once all have exited, or after `capMs` (then they are killed).
 */
export async function endEarly(shards: EarlyShard[], capMs = 10_000): Promise<void> {
  const left = shards.filter(Boolean);
  if (left.length === 0) return;
  for (const shard of left) shard.handle.kill("SIGTERM");
  if (!(await settlesWithin(Promise.all(left.map((shard) => shard.exited)), capMs))) killEarly(left);
}
