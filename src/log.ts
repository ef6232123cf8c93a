/**
 * Two outputs. `log`: the service's events (start, reloads, restarts, drains, warnings, the
 * access log), one JSON line each on stdout through pino, with time, level, shard index (null
 * for the launcher), pid, message and fields; a readable line instead (pino-pretty) when stdout
 * is a terminal or SHARDPORT_LOG_FORMAT=pretty. Each line is one synchronous write, so lines from
 * N shards sharing stdout never interleave mid-line (below the pipe's atomic 4 KiB).
 * `say`: the command line's own answers and refusals, plain text, before anything serves.
 * @module
 */
import type { Logger, LoggerOptions } from "pino";

type Fields = Record<string, unknown>;
type Level = "info" | "warn" | "error";

let shard: number | null = null;
let logger: Logger | undefined;
let loading: Promise<void> | undefined;
let waiting: [Level, string, Fields][] = [];

/**
 * Loads pino (and pino-pretty where wanted). The launcher awaits it at start; a shard loads it at
 * its first line, so that shards that never log do not carry a logger: memory counts N times.
 */
export function loadLog(): Promise<void> {
  loading ??= (async () => {
    const { default: pino } = await import("pino");
    const wantsPretty =
      (process.env.SHARDPORT_LOG_FORMAT ?? (process.stdout.isTTY ? "pretty" : "json")) === "pretty";
    const options: LoggerOptions = {
      base: { pid: process.pid, shard },
      messageKey: "message",
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    };
    if (wantsPretty) {
      const { default: pretty } = await import("pino-pretty");
      const stream = pretty({
        sync: true,
        destination: 1,
        colorize: process.stdout.isTTY ?? false,
        messageKey: "message",
        translateTime: "HH:MM:ss.l",
        singleLine: true,
        messageFormat: (log, key) => `${log.shard === null ? "launcher" : `shard ${log.shard}`}: ${log[key]}`,
        ignore: "shard",
      });
      logger = pino(options, stream);
    } else {
      logger = pino(options, pino.destination({ fd: 1, sync: true }));
    }
    for (const [level, message, fields] of waiting) logger[level](fields, message);
    waiting = [];
  })();
  return loading;
}

/** Called once by a shard, before its first line, so that its lines carry its index. */
export function setLogShard(index: number): void {
  shard = index;
}

function write(level: Level, message: string, fields: Fields): void {
  if (logger) {
    logger[level](fields, message);
    return;
  }
  waiting.push([level, message, fields]);
  void loadLog();
}

export const log = {
  info: (message: string, fields: Fields = {}) => write("info", message, fields),
  warn: (message: string, fields: Fields = {}) => write("warn", message, fields),
  error: (message: string, fields: Fields = {}) => write("error", message, fields),
};

export const say = {
  out: (text: string) => process.stdout.write(`shardport: ${text}\n`),
  error: (text: string) => process.stderr.write(`shardport: error: ${text}\n`),
};
