/**
 * What each runtime entry runs: a shard when the launcher started this process, else the
 * launcher (parse the command line, check the app, start the shards, handle signals).
 * @module
 */
import { readFileSync } from "node:fs";
import { AppModuleError, loadApp } from "./app-module.ts";
import { type Config, parseConfig, USAGE, UsageError } from "./config.ts";
import { signalLauncher, writePidFile } from "./control.ts";
import { log } from "./log.ts";
import { explainAddrInUse } from "./port-holder.ts";
import { SHARD_ENV } from "./protocol.ts";
import { runShard } from "./shard.ts";
import { ShardStartError, Supervisor } from "./supervisor.ts";
import type { Runtime } from "./types.ts";

/** Documented exit codes. */
export const EXIT = { ok: 0, failed: 1, usage: 2, forced: 130 } as const;

export async function main(runtime: Runtime, defaultApp: string): Promise<void> {
  const shardSpec = process.env[SHARD_ENV];
  if (shardSpec) return runShard(runtime, JSON.parse(shardSpec));
  await runLauncher(runtime, defaultApp);
}

function exit(code: number, message?: string): never {
  if (message) log.error(message);
  process.exit(code);
}

export const urlOf = (config: Pick<Config, "host" | "port">) =>
  `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`;

async function runLauncher(runtime: Runtime, defaultApp: string): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2), process.env, defaultApp, (path) =>
      runtime.readProc ? runtime.readProc(path) : readFileSync(path, "utf8"),
    );
  } catch (error) {
    if (error instanceof UsageError) exit(EXIT.usage, error.message);
    throw error;
  }
  if (config.help) {
    process.stdout.write(`${USAGE}\n`);
    exit(EXIT.ok);
  }
  if (config.command !== "serve") {
    const signal = config.command === "reload" ? "SIGHUP" : "SIGTERM";
    try {
      const pid = signalLauncher(config.host, config.port, signal);
      log.info(`sent ${signal} to the launcher of ${urlOf(config)} (pid ${pid})`);
      exit(EXIT.ok);
    } catch (error) {
      exit(EXIT.failed, (error as Error).message);
    }
  }
  const refused = runtime.refusesHttp?.[config.http];
  if (refused) exit(EXIT.usage, `--http ${config.http} is not available on ${runtime.name}: ${refused}`);
  try {
    await loadApp(config.app, runtime);
  } catch (error) {
    if (error instanceof AppModuleError) exit(EXIT.usage, error.message);
    throw error;
  }
  if (process.platform !== "linux") {
    log.warn(
      `on ${process.platform}, SO_REUSEPORT does not spread connections across shards: only Linux balances them`,
    );
  }
  if (runtime.reusePortGap && config.mode === "threads") {
    exit(EXIT.failed, `${runtime.reusePortGap}, and threads mode has no node:cluster fallback`);
  }
  if (runtime.reusePortGap) {
    if (config.strict) exit(EXIT.failed, `${runtime.reusePortGap} (--strict)`);
    log.warn(
      `${runtime.reusePortGap}: falling back to node:cluster (the launcher accepts and hands connections round robin)`,
    );
  }
  if (process.platform === "linux") warnUnlessMigrating(runtime);

  const supervisor = new Supervisor(runtime, config, (reason) => exit(EXIT.failed, reason));
  let stopping = false;
  const stop = async () => {
    if (stopping) {
      log.warn("second signal: killing every shard now");
      supervisor.kill();
      exit(EXIT.forced);
    }
    stopping = true;
    log.info(`stopping: draining ${config.shards} shards (up to ${config.drainTimeoutMs} ms)`);
    await supervisor.stop();
    log.info("stopped");
    exit(EXIT.ok);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  process.on("SIGHUP", () => {
    if (!stopping) supervisor.reload();
  });

  try {
    await supervisor.start();
  } catch (error) {
    if (stopping) return;
    if (!(error instanceof ShardStartError)) throw error;
    const reason =
      error.code === "EADDRINUSE" ? explainAddrInUse(config.host, config.port, runtime) : error.message;
    exit(EXIT.failed, `cannot serve on ${urlOf(config)}: ${reason}`);
  }
  if (stopping) return;
  try {
    process.on("exit", writePidFile(config.host, config.port));
  } catch (error) {
    log.warn(
      `no pid file, so \`reload\` and \`stop\` cannot find this launcher: ${(error as Error).message}`,
    );
  }
  log.info(
    `listening on ${urlOf(config)} with ${config.shards} shards (${runtime.name} ${runtime.version}, launcher pid ${process.pid}${config.mode === "threads" ? ", threads" : ""})`,
  );
}

/**
 * Closing a shard's listener resets the connections in its accept queue unless the kernel
 * migrates them to a sibling (net.ipv4.tcp_migrate_req, Linux 5.14+): reloads depend on it.
 */
function warnUnlessMigrating(runtime: Runtime): void {
  const path = "/proc/sys/net/ipv4/tcp_migrate_req";
  let value: string | undefined;
  try {
    value = (runtime.readProc?.(path) ?? readFileSync(path, "utf8")).trim();
  } catch {}
  if (value === "0") {
    log.warn(
      "net.ipv4.tcp_migrate_req is 0: a reload or crash can reset connections queued on the closing shard; enable it with `sysctl -w net.ipv4.tcp_migrate_req=1`",
    );
  } else if (value === undefined || value === "") {
    log.warn(
      "this kernel has no net.ipv4.tcp_migrate_req (Linux < 5.14): a reload can reset queued connections",
    );
  }
}
