/**
 * What each runtime entry runs: a shard when the launcher started this process, else the
 * launcher (parse the command line, check the app, start the shards, handle signals).
 * @module
 */
import { AppModuleError, loadApp } from "./app-module.ts";
import { type Config, parseConfig, USAGE, UsageError } from "./config.ts";
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
    config = parseConfig(process.argv.slice(2), process.env, defaultApp);
  } catch (error) {
    if (error instanceof UsageError) exit(EXIT.usage, error.message);
    throw error;
  }
  if (config.help) {
    process.stdout.write(`${USAGE}\n`);
    exit(EXIT.ok);
  }
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
  if (runtime.reusePortGap) {
    if (config.strict) exit(EXIT.failed, `${runtime.reusePortGap} (--strict)`);
    log.warn(
      `${runtime.reusePortGap}: falling back to node:cluster (the launcher accepts and hands connections round robin)`,
    );
  }

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
  log.info(
    `listening on ${urlOf(config)} with ${config.shards} shards (${runtime.name} ${runtime.version}, launcher pid ${process.pid})`,
  );
}
