/**
 * The launcher: parse the command line, answer `status`, `reload` and `stop`, or start the shards
 * and handle signals. Loaded only where no shard runs (src/main.ts decides).
 * @module
 */
import { existsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { loadLog, log, say } from "../log.ts";
import { procOf } from "../proc.ts";
import type { Runtime } from "../types.ts";
import { type Config, MAX_SHARDS, parseConfig, USAGE, UsageError } from "./config.ts";
import {
  type ControlSocket,
  LauncherLiveError,
  queryLauncher,
  serveControl,
  sweepStaleControlFiles,
  writePidFile,
} from "./control.ts";
import { type ReadText, readFs } from "./cpus.ts";
import { type EarlyShard, endEarly } from "./early.ts";
import { event, recentEvents } from "./events.ts";
import { guard, joinedDuringStart } from "./guard.ts";
import { migrateWarning } from "./migrate-warning.ts";
import { Monitor } from "./monitor.ts";
import { explainAddrInUse } from "./port-holder.ts";
import { stopWithRunner } from "./runner.ts";
import { LauncherSignals } from "./signals.ts";
import {
  type ReloadResult,
  type ScaleResult,
  ShardStartError,
  type ShardStatus,
  Supervisor,
} from "./supervisor.ts";
import type { Takeover, TakeoverStatus } from "./takeover.ts";

/**
 * Documented exit codes (README, Options). `failed` is also a stop that had to kill a shard that
 * outlived its drain timeout by 5 s, and a `reload` command whose reload stopped.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, forced: 130 } as const;

/** Exits after a one-line refusal of the command line (plain text on stderr). */
function exit(code: number, message?: string): never {
  if (message) say.error(message);
  process.exit(code);
}

/**
 * Exits after an event that ends the service (a structured line). The logger may still be
 * loading (it loads while the shards start): its lines are written before the exit.
 */
async function fail(code: number, message: string): Promise<never> {
  log.error(message);
  return exitAfterLog(code);
}

/** Exits once every log line asked for so far is written. */
async function exitAfterLog(code: number): Promise<never> {
  await loadLog();
  process.exit(code);
}

export const urlOf = (config: Pick<Config, "host" | "port" | "tls">) =>
  `${config.tls ? "https" : "http"}://${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`;

const readProcFile = (runtime: Runtime): ReadText => runtime.readProc ?? readFs;

/** The app module must be a file; whether it imports is for the shards to find out. */
function checkAppFile(path: string): void {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch {
    throw new LaunchError(EXIT.usage, `app module not found: ${path}`);
  }
  if (!isFile) throw new LaunchError(EXIT.usage, `app module ${path} is not a file`);
}

/** Why the launcher cannot serve, with the exit code the CLI gives it. */
export class LaunchError extends Error {
  readonly exitCode: number;
  constructor(exitCode: number, message: string) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** A running launcher, as `start()` returns it. */
export interface Launched {
  url: string;
  shards: number;
  /** Rolling reload (what SIGHUP does); resolves when it has finished or stopped. */
  reload(): Promise<void>;
  /** Drains every shard; resolves when all have exited. */
  stop(): Promise<void>;
}

export async function runLauncher(
  runtime: Runtime,
  defaultApp: string,
  signals = new LauncherSignals(),
  early: EarlyShard[] = [],
): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2), process.env, defaultApp, readProcFile(runtime));
  } catch (error) {
    if (error instanceof UsageError) exit(EXIT.usage, error.message);
    throw error;
  }
  if (config.help) {
    process.stdout.write(`${USAGE}\n`);
    exit(EXIT.ok);
  }
  if (config.command === "top") {
    signals.release();
    const { runTop } = await import("./top.ts"); // the terminal view, only for `top`
    exit(await runTop(config));
  }
  if (config.command !== "serve") {
    signals.release();
    return command(config);
  }
  try {
    await launch(runtime, config, signals, early);
  } catch (error) {
    if (error instanceof LaunchError) {
      await loadLog(); // the warnings said before the refusal
      await endEarly(early); // those no supervisor took over (a refusal before the start)
      exit(error.exitCode, error.message);
    }
    throw error;
  }
}

/**
 * `status`, `reload`, `scale N` and `stop`, over the launcher's control socket: an answer proves
 * that the launcher is alive (a pid in a pid file may belong to another process by now). `reload`
 * answers once the reload has finished (exit 1 if it stopped), `scale` once the added shards are
 * ready, `stop` once the launcher has exited.
 */
async function command(config: Config): Promise<never> {
  const { host, port } = config;
  /** The launcher's URL as it answered it (https:// where it serves HTTPS). */
  const where = (answer: { url?: string }) => answer.url ?? urlOf(config);
  try {
    if (config.command === "status") {
      process.stdout.write(formatStatus((await queryLauncher(host, port, "status")) as LauncherStatus));
      // A launcher taking this one over answers beside it until the old one goes.
      const next = await queryLauncher(host, port, "status", { next: true, timeoutMs: 3000 }).catch(() => {});
      if (next) process.stdout.write(formatStatus(next as LauncherStatus));
      exit(EXIT.ok);
    }
    if (config.command === "reload") {
      const answer = (await queryLauncher(host, port, "reload", { timeoutMs: 0 })) as ReloadResult & {
        pid: number;
        url?: string;
      };
      if ("error" in answer)
        exit(EXIT.failed, `${where(answer)} (launcher pid ${answer.pid}): ${answer.error}`);
      say.out(`reloaded ${where(answer)} (launcher pid ${answer.pid}): generation ${answer.generation}`);
      exit(EXIT.ok);
    }
    if (config.command === "scale") {
      const answer = (await queryLauncher(host, port, `scale ${config.scaleTo}`, {
        timeoutMs: 0,
      })) as ScaleResult & { pid: number; url?: string };
      if ("error" in answer)
        exit(EXIT.failed, `${where(answer)} (launcher pid ${answer.pid}): ${answer.error}`);
      say.out(`scaled ${where(answer)} (launcher pid ${answer.pid}): ${answer.shards} shards`);
      exit(EXIT.ok);
    }
    const answer = (await queryLauncher(host, port, "stop", { timeoutMs: 0, untilClosed: true })) as {
      pid: number;
      url?: string;
    };
    say.out(`stopped ${where(answer)} (launcher pid ${answer.pid})`);
    exit(EXIT.ok);
  } catch (error) {
    exit(EXIT.failed, (error as Error).message);
  }
}

/**
 * Validates, serves the control socket (refused if another launcher answers on it), starts every
 * shard and waits for their handshakes. Signals act as src/launcher/signals.ts says.
 * Throws a LaunchError before or instead of serving.
 */
export async function launch(
  runtime: Runtime,
  config: Config,
  signals = new LauncherSignals(),
  early: EarlyShard[] = [],
  /** Filled with what undoes the launcher's hold on the process (a library's start and stop). */
  closers: (() => void)[] = [],
): Promise<Launched> {
  const refused = runtime.refusesHttp?.[config.http];
  if (refused)
    throw new LaunchError(
      EXIT.usage,
      `--http ${config.http} is not available on ${runtime.name}: ${refused}`,
    );
  const environment = runtime.environmentProblem?.();
  if (environment) throw new LaunchError(EXIT.usage, environment);
  // The app itself runs only in the shards: a shard that cannot load it refuses the start (exit 2).
  checkAppFile(config.app);
  // One pair per generation: every shard of it gets the PEM checked here (or by its reload).
  const tls = config.tls && new (await import("./tls.ts")).TlsGenerations(await checkTls(config.tls));
  if (process.platform !== "linux") {
    log.warn(
      `on ${process.platform}, SO_REUSEPORT does not spread connections across shards: only Linux balances them`,
    );
  }
  if (runtime.reusePortGap && config.mode === "threads") {
    throw new LaunchError(
      EXIT.failed,
      `${runtime.reusePortGap}, and threads mode has no node:cluster fallback`,
    );
  }
  if (runtime.reusePortGap) {
    if (config.strict) throw new LaunchError(EXIT.failed, `${runtime.reusePortGap} (--strict)`);
    log.warn(
      `${runtime.reusePortGap}: falling back to node:cluster (the launcher accepts and hands connections round robin)`,
    );
  }

  const supervisor = new Supervisor(runtime, config, (reason) => void fail(EXIT.failed, reason));
  supervisor.early = [...early];
  if (tls) {
    supervisor.onSpawn = tls.serve;
    supervisor.onReloadStart = tls.begin;
  }
  // A reload with TLS first checks the (maybe replaced) files; bad ones leave the shards serving.
  const reload = async (): Promise<ReloadResult> => {
    if (config.tls && tls) {
      try {
        tls.checked(await checkTls(config.tls));
      } catch (error) {
        if (!(error instanceof LaunchError)) throw error;
        const message = `reload refused: ${error.message}; the running shards keep serving`;
        log.error(message);
        return { error: message };
      }
    }
    return supervisor.reload();
  };
  /** `--watch`'s watcher and recycling's checks (--max-memory, --max-requests), ended at stop. */
  let watching: { close(): Promise<void> } | undefined;
  let recycling: { stop(): void } | undefined;
  let stopped: Promise<boolean> | undefined;
  let takeover: Takeover | undefined;
  /** Drains every shard, starting ones too; true if none had to be killed. */
  const stop = () =>
    (stopped ??= (async () => {
      takeover?.stopping();
      void watching?.close();
      recycling?.stop();
      event(
        "stop",
        `stopping: draining ${supervisor.live().length} shards (up to ${config.drainTimeoutMs} ms)`,
      );
      const clean = await supervisor.stop();
      if (clean) log.info("stopped");
      else log.error("stopped: a shard outlived --drain-timeout by 5 s and was killed");
      return clean;
    })());
  signals.handle({
    reload: () => void reload(),
    stop: async () => exitAfterLog((await stop()) ? EXIT.ok : EXIT.failed),
    force: () => {
      log.warn("SIGINT again: killing every shard now");
      supervisor.kill();
      void exitAfterLog(EXIT.forced);
    },
    scaleBy: (delta) => void supervisor.scaleBy(delta, MAX_SHARDS),
  });
  closers.push(stopWithRunner(readProcFile(runtime), () => signals.receive("SIGTERM")));
  // Before the control socket and any shard: who else holds the port (src/launcher/guard.ts).
  // Early shards (src/launcher/early.ts) mean that their bind probe found the port free.
  takeover = await guard(runtime, config, readProcFile(runtime), early.length > 0);
  const header = () => ({
    url: urlOf(config),
    runtime: `${runtime.name} ${runtime.version}`,
    mode: config.mode,
    launcherPid: process.pid,
    reloads: supervisor.reloads,
    takeover: takeover?.state,
  });
  const monitor = new Monitor(supervisor);
  let control: ControlSocket | undefined;
  // Before any shard starts, so that a second launcher for this host:port is refused first.
  try {
    const status = async (): Promise<LauncherStatus> => ({
      ...header(),
      shards: (await supervisor.status()).map(({ stats, ...shard }) => ({
        ...shard,
        stats: stats && { ...stats, metrics: undefined },
      })),
    });
    const top = async () => ({ ...header(), ...(await monitor.watch()), events: recentEvents() });
    // Its own URL with each answer: a client knows the host and port, not whether it is HTTPS.
    const pid = { pid: process.pid, url: urlOf(config) };
    control = await serveControl(
      config.host,
      config.port,
      {
        status,
        top,
        pid: async () => pid,
        reload: async () => ({ ...pid, ...(await reload()) }),
        scale: async ([raw = ""]) => {
          const count = /^\d+$/.test(raw) ? Number(raw) : 0;
          if (count < 1 || count > MAX_SHARDS)
            return { ...pid, error: `scale must be an integer from 1 to ${MAX_SHARDS}, got '${raw}'` };
          return { ...pid, ...(await supervisor.scale(count)) };
        },
        stop: async () => {
          signals.receive("SIGTERM");
          return pid;
        },
      },
      { next: Boolean(takeover) },
    );
    const socket = control;
    process.on("exit", socket);
    closers.push(() => {
      process.off("exit", socket);
      socket.close();
    });
    // A takeover takes the pid file over once the old launcher has been told to go.
    const pidFile = takeover ? () => takeover.removePidFile() : writePidFile(config.host, config.port);
    if (!takeover) process.on("exit", pidFile);
    closers.push(() => {
      process.off("exit", pidFile);
      pidFile();
    });
  } catch (error) {
    if (error instanceof LauncherLiveError && !config.join) throw new LaunchError(EXIT.failed, error.message);
    log.warn(
      `no pid file or control socket, so \`reload\`, \`stop\` and \`status\` cannot find this launcher: ${(error as Error).message}`,
    );
  }

  // A stop during the start drains the shards and exits the process by itself.
  const stopping = () => new Promise<never>(() => {});
  // Stopped before the start: the early shards are being ended (a stop that came before the
  // signal actions were set, or supervisor.stop()), and the process exits once they are.
  if (signals.stopping) return stopping();
  try {
    const starting = supervisor.start(); // spawns every shard at once
    // pino loads while the shards start: a line logged before then waits for it (src/log.ts).
    void loadLog();
    await starting;
  } catch (error) {
    if (signals.stopping) return stopping();
    if (!(error instanceof ShardStartError)) throw error;
    if (error.stage === "load") throw new LaunchError(EXIT.usage, error.detail);
    const reason =
      error.code === "EADDRINUSE"
        ? explainAddrInUse(config.host, config.port, readProcFile(runtime))
        : error.message;
    throw new LaunchError(EXIT.failed, `cannot serve on ${urlOf(config)}: ${reason}`);
  }
  if (signals.stopping) return stopping();
  // Early shards skipped the guard (their probe found the port free): what bound the port in the
  // moment between that probe and their listen is refused now, as the guard would have.
  if (early.length > 0 && !config.join && process.platform === "linux") {
    const ours = new Set([...supervisor.startPids, ...supervisor.live().map((shard) => shard.pid ?? 0)]);
    const intruder = await joinedDuringStart(runtime, config, readProcFile(runtime), ours);
    if (intruder) {
      await supervisor.stop();
      throw new LaunchError(EXIT.failed, intruder);
    }
  }
  // A stop during the canary leaves the old launcher serving (takeover.ts).
  if (takeover && !(await takeover.complete(supervisor, control, () => signals.stopping))) return stopping();
  if (signals.stopping) return stopping();
  // Only now: on Deno each /proc read runs a program, and the shards should not wait for it.
  if (process.platform === "linux") {
    const warning = migrateWarning({ readText: readProcFile(runtime), exists: existsSync, env: process.env });
    if (warning) log.warn(warning);
  }
  /**
   * A port of the launcher's own that it cannot serve, or a --watch whose watcher cannot be
   * loaded: before a takeover's hand-over or without
   * one, the start fails (drain, exit 1); after the old launcher was told to go, these shards are
   * all that serves, so the launcher says so and serves on without it.
   */
  const cannotServe = async (what: string, error: unknown) => {
    const message = `cannot ${what}: ${(error as Error).message}`;
    if (!takeover) {
      await stop();
      throw new LaunchError(EXIT.failed, message);
    }
    log.error(`${message}; the shards serve on without it (the launcher taken over is gone)`);
  };
  if (config.maxMemoryMb !== undefined || config.maxRequests !== undefined) {
    const { Recycler } = await import("./recycle.ts");
    if (signals.stopping) return stopping();
    recycling = new Recycler(supervisor, config).start();
  }
  if (config.watch.length > 0) {
    const { watchForChanges } = await import("./watch.ts");
    // A renewed certificate is a change too: the reload checks the files and hands them out.
    const paths = [...config.watch, ...(config.tls ? [config.tls.cert, config.tls.key] : [])];
    try {
      const watcher = await watchForChanges(paths, (changed) => {
        if (signals.stopping) return;
        log.info(`watch: ${changed} changed, reloading`);
        void reload();
      });
      watching = watcher;
      if (signals.stopping) {
        void watcher.close();
        return stopping();
      }
      log.info(`watching ${paths.join(", ")} for changes`);
    } catch (error) {
      await cannotServe(`watch ${paths.join(", ")} (--watch)`, error);
    }
  }
  // The old launcher holds its metrics and dashboard ports until it exits.
  if (config.metricsPort !== undefined || config.dashboardPort !== undefined) await takeover?.oldGone;
  if (signals.stopping) return stopping();
  let dashboard: import("./dashboard.ts").DashboardHandler | undefined;
  if (config.metricsPort !== undefined || config.dashboardPort !== undefined) {
    const { dashboardHandler, serveDashboard } = await import("./dashboard.ts");
    const where = urlOf({ host: config.host, port: config.dashboardPort ?? config.metricsPort ?? 0 });
    try {
      dashboard = dashboardHandler(monitor, dirname(dirname(runtime.entry)), header());
      if (config.dashboardPort !== undefined) {
        await serveDashboard(dashboard, config.host, config.dashboardPort);
      }
    } catch (error) {
      // With --metrics-port alone the page is a bonus: where its files cannot be read (the
      // package imported from a URL, as from JSR), /metrics serves without it.
      if (config.dashboardPort !== undefined) await cannotServe(`serve the dashboard on ${where}`, error);
      else log.warn(`no dashboard page on ${where}: ${(error as Error).message}; /metrics serves without it`);
      dashboard = undefined;
    }
  }
  if (config.metricsPort !== undefined) {
    try {
      const { serveMetrics } = await import("./metrics.ts"); // prom-client, only when asked for
      await serveMetrics(supervisor, config, dashboard);
    } catch (error) {
      await cannotServe(`serve metrics on ${urlOf({ host: config.host, port: config.metricsPort })}`, error);
    }
  }
  if (signals.stopping) return stopping();
  // What launchers killed by SIGKILL left beside its control socket, a while after the start.
  setTimeout(() => void sweepStaleControlFiles().catch(() => {}), 2000).unref();
  event(
    "start",
    `listening on ${urlOf(config)} with ${config.shards} shards (${runtime.name} ${runtime.version}, launcher pid ${process.pid}${config.mode === "threads" ? ", threads" : ""})`,
  );
  return {
    url: urlOf(config),
    shards: config.shards,
    reload: async () => {
      await reload();
    },
    stop: async () => {
      await stop();
    },
  };
}

/**
 * Reads and checks the certificate and key (src/launcher/tls.ts, loaded only with TLS): a bad
 * file is a LaunchError (exit 2); an expired certificate or a key others can read, a warning.
 * Returns the PEM read, what the shards will serve.
 */
async function checkTls(files: NonNullable<Config["tls"]>) {
  const { checkTlsFiles, TlsFileError } = await import("./tls.ts");
  try {
    const { summary, pem } = checkTlsFiles(files);
    for (const warning of summary.warnings) log.warn(warning);
    log.info(
      `TLS certificate ${summary.subject}, valid until ${summary.validTo}, sha256 ${summary.fingerprint256} (${summary.chainLength} in the chain)`,
    );
    return pem;
  } catch (error) {
    if (error instanceof TlsFileError) throw new LaunchError(EXIT.usage, error.message);
    throw error;
  }
}

/** The options of `start()`: the command line's flags, by name. */
export interface StartOptions {
  /** The app module (path or file URL); default: the demo app. */
  app?: string | URL;
  shards?: number;
  port?: number;
  host?: string;
  mode?: "process" | "threads";
  http?: "native" | "node";
  drainTimeoutMs?: number;
  readyTimeoutMs?: number;
  strict?: boolean;
  /** PEM files: serve HTTPS (as --tls-cert and --tls-key). */
  tls?: { cert: string; key: string };
}

/**
 * Starts shardport from your own entry file; resolves once every shard listens. Options are
 * validated like the flags (a UsageError names the bad one); SHARDS, PORT and HOST still apply
 * where an option is not given.
 */
export async function start(
  runtime: Runtime,
  defaultApp: string,
  options: StartOptions = {},
): Promise<Launched> {
  const argv: string[] = [];
  const flags: [string, unknown][] = [
    ["shards", options.shards],
    ["port", options.port],
    ["host", options.host],
    ["mode", options.mode],
    ["http", options.http],
    ["drain-timeout", options.drainTimeoutMs],
    ["ready-timeout", options.readyTimeoutMs],
    ["tls-cert", options.tls?.cert],
    ["tls-key", options.tls?.key],
  ];
  for (const [flag, value] of flags) if (value !== undefined) argv.push(`--${flag}=${value}`);
  if (options.strict) argv.push("--strict");
  if (options.app !== undefined) {
    argv.push(`--app=${options.app instanceof URL ? fileURLToPath(options.app) : options.app}`);
  }
  const config = parseConfig(argv, process.env, defaultApp, readProcFile(runtime));
  // What the launcher holds in this process (signal handlers, control socket, pid file, the
  // runner's watch) is given back once it has stopped, or failed to start: start() may come again.
  const signals = new LauncherSignals(procOf(runtime));
  const closers = [() => signals.release()];
  const close = () => {
    for (const closer of closers.splice(0)) closer();
  };
  try {
    const launched = await launch(runtime, config, signals, [], closers);
    return {
      ...launched,
      stop: async () => {
        await launched.stop();
        close();
      },
    };
  } catch (error) {
    close();
    throw error;
  }
}

/** What the control socket answers to `status`. */
interface LauncherStatus {
  url: string;
  runtime: string;
  mode: string;
  launcherPid: number;
  reloads: number;
  shards: ShardStatus[];
  takeover?: TakeoverStatus;
}

export function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

/** `shardport status`: one line for the launcher, then a table of its shards. */
export function formatStatus(status: LauncherStatus): string {
  const rows = [["shard", "pid", "state", "uptime", "requests", "rss", "restarts"]];
  for (const shard of status.shards) {
    rows.push([
      String(shard.index),
      shard.label,
      shard.state,
      shard.state === "exited" ? "-" : formatDuration(shard.uptimeMs),
      shard.stats ? String(shard.stats.requests) : "-",
      shard.stats ? `${(shard.stats.rssBytes / 2 ** 20).toFixed(1)} MB` : "-",
      String(shard.restarts),
    ]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const table = rows.map((row) =>
    row
      .map((cell, column) => cell.padEnd(widths[column]))
      .join("  ")
      .trimEnd(),
  );
  const shared = status.mode === "threads" ? " (threads share one process: rss is the whole process)" : "";
  return `${status.url}: ${status.runtime}, ${status.shards.length} shards in ${status.mode} mode, launcher pid ${status.launcherPid}, ${status.reloads} reloads${shared}\n${formatTakeover(status.takeover)}${table.join("\n")}\n`;
}

/** The line `status` adds while a launcher takes over another one. */
function formatTakeover(takeover: TakeoverStatus | undefined): string {
  if (!takeover) return "";
  const left = takeover.canaryEndsAt && Math.max(0, Math.ceil((takeover.canaryEndsAt - Date.now()) / 1000));
  const step = takeover.step === "canary" ? `canary in progress, ${left} s left` : takeover.step;
  return `taking over from launcher pid ${takeover.from}: ${step}\n`;
}
