/**
 * `shardport top`: the shards of a running launcher, live. It asks the control socket for `top`
 * once a second and redraws a full-screen view (the terminal's alternate screen) until `q` or
 * Ctrl-C; when stdout is not a terminal, it prints one view and exits. Plain ANSI escapes: the
 * view is a redrawn table, which needs no terminal library.
 * @module
 */
import { formatDuration } from "./cli.ts";
import type { Config } from "./config.ts";
import { queryLauncher } from "./control.ts";
import type { LauncherEvent } from "./events.ts";
import type { MonitorView } from "./monitor.ts";

/** What the control socket answers to `top`. */
export interface TopAnswer extends MonitorView {
  url: string;
  runtime: string;
  mode: string;
  launcherPid: number;
  reloads: number;
  events: LauncherEvent[];
  error?: string;
}

const REFRESH_MS = 1000;

/**
 * Text from elsewhere (an event's message may carry an app's error) as one line the terminal
 * shows and does not obey: control characters (escape sequences, line breaks) become spaces.
 */
const printable = (text: string) => text.replace(/\p{Cc}/gu, " ");

const mb = (bytes: number | null) => (bytes === null ? "-" : `${(bytes / 2 ** 20).toFixed(1)} MB`);
const ms = (value: number | null) =>
  value === null ? "-" : value < 10 ? value.toFixed(2) : value.toFixed(1);
const rate = (value: number | null) => (value === null ? "-" : value.toFixed(value < 100 ? 1 : 0));
const percent = (share: number | null) => (share === null ? "-" : `${(share * 100).toFixed(1)}%`);
const clock = (time: number) => new Date(time).toTimeString().slice(0, 8);

/** Aligns the columns of `rows` (the first is the header); numbers to the right. */
function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const right = (column: number) => column >= 3;
  return rows.map((row) =>
    row
      .map((cell, column) => (right(column) ? cell.padStart(widths[column]) : cell.padEnd(widths[column])))
      .join("  ")
      .trimEnd(),
  );
}

/** The view as lines of text, at most `height` of them (the events give way first). */
export function formatTop(answer: TopAnswer, height = Number.POSITIVE_INFINITY): string[] {
  const header = `${answer.url}  ${answer.runtime}, ${answer.shards.length} shards (${answer.mode}), launcher pid ${answer.launcherPid}, ${answer.reloads} reloads  ${clock(answer.time)}`;
  const rows = [["shard", "pid", "state", "req/s", "share", "p50 ms", "p99 ms", "rss", "restarts", "uptime"]];
  for (const shard of answer.shards) {
    rows.push([
      String(shard.index),
      shard.label,
      shard.state,
      rate(shard.rps),
      percent(shard.share),
      ms(shard.p50Ms),
      ms(shard.p99Ms),
      mb(shard.rssBytes),
      String(shard.restarts),
      shard.state === "exited" ? "-" : formatDuration(shard.uptimeMs),
    ]);
  }
  const { totals } = answer;
  const restarts = answer.shards.reduce((sum, shard) => sum + shard.restarts, 0);
  const shared = answer.mode === "threads" ? " (one process)" : "";
  rows.push([
    "all",
    "",
    "",
    rate(totals.rps),
    "100%",
    ms(totals.p50Ms),
    ms(totals.p99Ms),
    mb(totals.rssBytes),
    String(restarts),
    "",
  ]);
  const lines = [
    header,
    `share and latency over the last ${answer.windowMs / 1000} s${shared}; q quits`,
    "",
    ...table(rows),
    "",
    "recent events:",
  ];
  const room = Math.max(0, height - lines.length);
  const events = answer.events
    .slice(-Math.min(room, 10))
    .map((e) => `  ${clock(e.time)}  ${e.kind.padEnd(7)}  ${printable(e.message)}`);
  if (room > 0 && events.length === 0) events.push("  (none)");
  return [...lines, ...events].slice(0, height);
}

const query = (config: Config) =>
  queryLauncher(config.host, config.port, "top").then((answer) => {
    const { error } = answer as { error?: string };
    if (error) throw new Error(`the launcher does not answer top (${error}): is it an older shardport?`);
    return answer as TopAnswer;
  });

/** Runs `top`; resolves with the exit code. */
export async function runTop(config: Config): Promise<number> {
  let answer: TopAnswer;
  try {
    answer = await query(config);
  } catch (error) {
    process.stderr.write(`shardport: error: ${(error as Error).message}\n`);
    return 1;
  }
  const out = process.stdout;
  if (!out.isTTY) {
    out.write(`${formatTop(answer).join("\n")}\n`);
    return 0;
  }
  let problem = "";
  const draw = () => {
    const width = out.columns || 80;
    const height = out.rows || 24;
    const lines = formatTop(answer, height - (problem ? 1 : 0));
    if (problem) lines.unshift(`\x1b[7m${problem.slice(0, width)}\x1b[0m`);
    // Home, each line cut to the width and its rest cleared, then clear below.
    out.write(`\x1b[H${lines.map((line) => `${line.slice(0, width)}\x1b[K`).join("\r\n")}\x1b[J`);
  };
  out.write("\x1b[?1049h\x1b[?25l"); // alternate screen, cursor hidden
  const stdin = process.stdin;
  stdin.setRawMode?.(true);
  stdin.resume();
  return new Promise<number>((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    const quit = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      out.off("resize", draw);
      stdin.setRawMode?.(false);
      stdin.pause();
      out.write("\x1b[?25h\x1b[?1049l");
      resolve(0);
    };
    stdin.on("data", (data: Buffer) => {
      // q, Q, or Ctrl-C, which raw mode turns into byte 3.
      if (data.includes(3) || /q/i.test(data.toString("latin1"))) quit();
    });
    process.once("SIGTERM", quit);
    process.once("SIGHUP", quit);
    out.on("resize", draw);
    const refresh = async () => {
      try {
        answer = await query(config);
        problem = "";
      } catch (error) {
        problem = `no answer: ${(error as Error).message}`;
      }
      if (done) return;
      draw();
      timer = setTimeout(refresh, REFRESH_MS);
    };
    draw();
    timer = setTimeout(refresh, REFRESH_MS);
  });
}
