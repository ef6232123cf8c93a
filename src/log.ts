/**
 * Two outputs. `log`: the service's events (start, reloads, restarts, drains, warnings, the
 * access log), one JSON line each on stdout through pino, with time, level, shard index (null
 * for the launcher), pid, message and fields; a readable line instead (pino-pretty) when stdout
 * is a terminal or SHARDPORT_LOG_FORMAT=pretty. Each line is one synchronous write, so lines from
 * N shards sharing stdout never interleave mid-line (below the pipe's atomic 4 KiB).
 * `say`: the command line's own answers and refusals, plain text, before anything serves.
 * @module
 */
import pino from "pino";
import pretty from "pino-pretty";

type Fields = Record<string, unknown>;

function create(shard: number | null): pino.Logger {
  const pretty_ =
    (process.env.SHARDPORT_LOG_FORMAT ?? (process.stdout.isTTY ? "pretty" : "json")) === "pretty";
  const options: pino.LoggerOptions = {
    base: { pid: process.pid, shard },
    messageKey: "message",
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  if (!pretty_) return pino(options, pino.destination({ fd: 1, sync: true }));
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
  return pino(options, stream);
}

let logger = create(null);

/** Called once by a shard, so that its lines carry its index. */
export function setLogShard(index: number): void {
  logger = create(index);
}

export const log = {
  info: (message: string, fields: Fields = {}) => logger.info(fields, message),
  warn: (message: string, fields: Fields = {}) => logger.warn(fields, message),
  error: (message: string, fields: Fields = {}) => logger.error(fields, message),
};

export const say = {
  out: (text: string) => process.stdout.write(`shardport: ${text}\n`),
  error: (text: string) => process.stderr.write(`shardport: error: ${text}\n`),
};
