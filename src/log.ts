/**
 * Two outputs. `log`: the service's events (start, reloads, restarts, drains, warnings, the
 * access log), one JSON line each on stdout, with time, level, shard index (null for the
 * launcher), pid, message and fields; a readable line instead (pino-pretty) when stdout is a
 * terminal or SHARDPORT_LOG_FORMAT=pretty. Each line is one synchronous write, so lines from N
 * shards sharing stdout never interleave mid-line (below the pipe's atomic 4 KiB).
 * `say`: the command line's own answers and refusals, plain text, before anything serves.
 *
 * The JSON lines are written here, in pino's own layout (level label, ISO time, pid, shard,
 * fields, message), without loading pino: pino and its dependencies cost about 6 MB in every
 * process or thread that loads them (measured on Deno), the launcher included. Only the readable
 * format loads pino and pino-pretty.
 * @module
 */
import type { Logger, LoggerOptions } from "pino";

// Deno's `process` global loads its Node compatibility layer, a few MB in every thread: on Deno
// the logger asks Deno itself.
interface DenoLog {
  pid: number;
  env: { get(name: string): string | undefined };
  stdout: { isTerminal(): boolean; writeSync(bytes: Uint8Array): number };
}
const deno = (globalThis as { Deno?: DenoLog }).Deno;

type Fields = Record<string, unknown>;
type Level = "info" | "warn" | "error";

let shard: number | null = null;
let logger: Pick<Logger, Level> | ReturnType<typeof jsonLogger> | undefined;
let loading: Promise<void> | undefined;
let waiting: [Level, string, Fields][] = [];

/** Writes one whole line to stdout, synchronously. */
type WriteLine = (line: string) => void;

async function lineWriter(): Promise<WriteLine> {
  const encoder = new TextEncoder();
  if (deno) {
    return (line) => {
      const bytes = encoder.encode(line);
      for (let done = 0; done < bytes.length; ) done += deno.stdout.writeSync(bytes.subarray(done));
    };
  }
  const { writeSync } = await import("node:fs");
  return (line) => {
    const bytes = encoder.encode(line);
    for (let done = 0; done < bytes.length; ) {
      try {
        done += writeSync(1, bytes, done);
      } catch (error) {
        // A non-blocking stdout that is full for a moment: try again (as pino's sync mode does).
        if ((error as { code?: string }).code !== "EAGAIN") throw error;
      }
    }
  };
}

/** pino's JSON layout, written without pino. */
function jsonLogger(pid: number, writeLine: WriteLine) {
  const line = (level: Level) => (fields: Fields, message: string) =>
    writeLine(
      `${JSON.stringify({ level, time: new Date().toISOString(), pid, shard, ...fields, message })}\n`,
    );
  return { info: line("info"), warn: line("warn"), error: line("error") };
}

/**
 * Gets the logger ready: the JSON writer, or pino with pino-pretty where wanted. The launcher
 * awaits it at start; a shard at its first line, so that shards that never log carry nothing.
 */
export function loadLog(): Promise<void> {
  loading ??= (async () => {
    const env = (name: string) => (deno ? deno.env.get(name) : process.env[name]);
    const terminal = deno ? deno.stdout.isTerminal() : (process.stdout.isTTY ?? false);
    const pid = deno ? deno.pid : process.pid;
    const wantsPretty = (env("SHARDPORT_LOG_FORMAT") ?? (terminal ? "pretty" : "json")) === "pretty";
    logger = wantsPretty ? await prettyLogger(pid, terminal) : jsonLogger(pid, await lineWriter());
    for (const [level, message, fields] of waiting) logger[level](fields, message);
    waiting = [];
  })();
  return loading;
}

/** pino with pino-pretty: readable lines, colored on a terminal. */
async function prettyLogger(pid: number, colorize: boolean): Promise<Logger> {
  const [{ default: pino }, { default: pretty }] = await Promise.all([import("pino"), import("pino-pretty")]);
  const options: LoggerOptions = {
    base: { pid, shard },
    messageKey: "message",
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  const stream = pretty({
    sync: true,
    destination: 1,
    colorize,
    messageKey: "message",
    translateTime: "HH:MM:ss.l",
    singleLine: true,
    messageFormat: (log, key) => `${log.shard === null ? "launcher" : `shard ${log.shard}`}: ${log[key]}`,
    ignore: "shard",
  });
  return pino(options, stream);
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
