/**
 * The launcher: parse the command line, answer `status`, `reload` and `stop`, or start the shards
 * and handle signals. Loaded only where no shard runs (src/main.ts decides).
 * @module
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadLog, log, say } from "../log.ts";
import type { Runtime } from "../types.ts";
import { type Config, parseConfig, USAGE, UsageError } from "./config.ts";
import { queryLauncher, serveControl, signalLauncher, writePidFile } from "./control.ts";
import { migrateWarning } from "./migrate-warning.ts";
import { explainAddrInUse } from "./port-holder.ts";
import { ShardStartError, type ShardStatus, Supervisor } from "./supervisor.ts";

/** Documented exit codes. */
export const EXIT = { ok: 0, failed: 1, usage: 2, forced: 130 } as const;

/** Exits after a one-line refusal of the command line (plain text on stderr). */
function exit(code: number, message?: string): never {
  if (message) say.error(message);
  process.exit(code);
}

/** Exits after an event that ends the service (a structured line). */
function fail(code: number, message: string): never {
  log.error(message);
  process.exit(code);
}

export const urlOf = (config: Pick<Config, "host" | "port">) =>
  `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`;

const readProcFile = (runtime: Runtime) => (path: string) =>
  runtime.readProc ? runtime.readProc(path) : readFileSync(path, "utf8");

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

export async function runLauncher(runtime: Runtime, defaultApp: string): Promise<void> {
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
  if (config.command === "status") {
    try {
      process.stdout.write(
        formatStatus((await queryLauncher(config.host, config.port, "status")) as LauncherStatus),
      );
      exit(EXIT.ok);
    } catch (error) {
      exit(EXIT.failed, (error as Error).message);
    }
  }
  if (config.command !== "serve") {
    const signal = config.command === "reload" ? "SIGHUP" : "SIGTERM";
    try {
      const pid = signalLauncher(config.host, config.port, signal);
      say.out(`sent ${signal} to the launcher of ${urlOf(config)} (pid ${pid})`);
      exit(EXIT.ok);
    } catch (error) {
      exit(EXIT.failed, (error as Error).message);
    }
  }
  try {
    await launch(runtime, config);
  } catch (error) {
    if (error instanceof LaunchError) exit(error.exitCode, error.message);
    throw error;
  }
}

/**
 * Validates, starts every shard and waits for their handshakes, then takes SIGINT/SIGTERM
 * (drain and exit 0; a second one kills at once) and SIGHUP (rolling reload).
 * Throws a LaunchError before or instead of serving.
 */
export async function launch(runtime: Runtime, config: Config): Promise<Launched> {
  await loadLog();
  const refused = runtime.refusesHttp?.[config.http];
  if (refused)
    throw new LaunchError(
      EXIT.usage,
      `--http ${config.http} is not available on ${runtime.name}: ${refused}`,
    );
  // The app itself runs only in the shards: a shard that cannot load it refuses the start (exit 2).
  checkAppFile(config.app);
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
  if (process.platform === "linux") {
    const warning = migrateWarning({ readText: readProcFile(runtime), exists: existsSync, env: process.env });
    if (warning) log.warn(warning);
  }

  const supervisor = new Supervisor(runtime, config, (reason) => fail(EXIT.failed, reason));
  let stopping = false;
  const stop = async () => {
    stopping = true;
    log.info(`stopping: draining ${config.shards} shards (up to ${config.drainTimeoutMs} ms)`);
    await supervisor.stop();
    log.info("stopped");
  };
  const onStopSignal = async () => {
    if (stopping) {
      log.warn("second signal: killing every shard now");
      supervisor.kill();
      process.exit(EXIT.forced);
    }
    await stop();
    process.exit(EXIT.ok);
  };
  process.on("SIGINT", onStopSignal);
  process.on("SIGTERM", onStopSignal);
  process.on("SIGHUP", () => {
    if (!stopping) supervisor.reload();
  });

  try {
    await supervisor.start();
  } catch (error) {
    if (stopping) return new Promise(() => {}); // a signal is stopping us; it exits the process
    if (!(error instanceof ShardStartError)) throw error;
    if (error.stage === "load") throw new LaunchError(EXIT.usage, error.detail);
    const reason =
      error.code === "EADDRINUSE"
        ? explainAddrInUse(config.host, config.port, readProcFile(runtime))
        : error.message;
    throw new LaunchError(EXIT.failed, `cannot serve on ${urlOf(config)}: ${reason}`);
  }
  if (config.metricsPort !== undefined) {
    try {
      const { serveMetrics } = await import("./metrics.ts"); // prom-client, only when asked for
      await serveMetrics(supervisor, config);
    } catch (error) {
      await supervisor.stop();
      throw new LaunchError(
        EXIT.failed,
        `cannot serve metrics on ${urlOf({ host: config.host, port: config.metricsPort })}: ${(error as Error).message}`,
      );
    }
  }
  try {
    process.on("exit", writePidFile(config.host, config.port));
    const status = async (): Promise<LauncherStatus> => ({
      url: urlOf(config),
      runtime: `${runtime.name} ${runtime.version}`,
      mode: config.mode,
      launcherPid: process.pid,
      reloads: supervisor.reloads,
      shards: (await supervisor.status()).map(({ stats, ...shard }) => ({
        ...shard,
        stats: stats && { ...stats, metrics: undefined },
      })),
    });
    process.on("exit", await serveControl(config.host, config.port, { status }));
  } catch (error) {
    log.warn(
      `no pid file or control socket, so \`reload\`, \`stop\` and \`status\` cannot find this launcher: ${(error as Error).message}`,
    );
  }
  log.info(
    `listening on ${urlOf(config)} with ${config.shards} shards (${runtime.name} ${runtime.version}, launcher pid ${process.pid}${config.mode === "threads" ? ", threads" : ""})`,
  );
  return { url: urlOf(config), shards: config.shards, reload: () => supervisor.reload(), stop };
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
  ];
  for (const [flag, value] of flags) if (value !== undefined) argv.push(`--${flag}=${value}`);
  if (options.strict) argv.push("--strict");
  if (options.app !== undefined) {
    argv.push(`--app=${options.app instanceof URL ? fileURLToPath(options.app) : options.app}`);
  }
  return launch(runtime, parseConfig(argv, process.env, defaultApp, readProcFile(runtime)));
}

/** What the control socket answers to `status`. */
interface LauncherStatus {
  url: string;
  runtime: string;
  mode: string;
  launcherPid: number;
  reloads: number;
  shards: ShardStatus[];
}

function formatDuration(ms: number): string {
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
  return `${status.url}: ${status.runtime}, ${status.shards.length} shards in ${status.mode} mode, launcher pid ${status.launcherPid}, ${status.reloads} reloads${shared}\n${table.join("\n")}\n`;
}
