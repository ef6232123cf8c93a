/**
 * No orphaned service: a launcher started by a package runner (`bun run`, `deno task`,
 * `npm start`/`npm run`, `npx`...) stops when that runner dies, even by SIGKILL, so that killing
 * what the user started never leaves a server behind. A shell is not a runner (`nohup node
 * dist/node.js &` keeps serving); a `sh -c` between the runner and the launcher (npm's) is
 * looked through.
 * @module
 */
import { basename } from "node:path";
import type { ReadText } from "./cpus.ts";
import { event } from "./events.ts";

/** How often the runner is looked at. */
export const RUNNER_POLL_MS = 1000;

export interface Runner {
  pid: number;
  /** Its command line, as /proc shows it (npm shows its title: `npm start ...`). */
  words: string[];
}

/** A process's command line words, or undefined once it is gone. */
export function commandLine(pid: number | "self", readText: ReadText): string[] | undefined {
  try {
    const words = readText(`/proc/${pid}/cmdline`).split("\0");
    while (words.at(-1) === "") words.pop(); // a title set over the arguments (npm) leaves NULs
    // A process that set its title (npm) shows it as one string.
    if (words.length === 1 && !words[0].startsWith("/")) return words[0].split(" ");
    return words.length > 0 ? words : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The fields of /proc/PID/stat from the 3rd on (the state is [0], the parent pid [1], the start
 * time in clock ticks since boot [19]): counted from the end of the command's name, which may
 * hold spaces and parentheses. Undefined once the process is gone.
 */
export function statFields(pid: number, readText: ReadText): string[] | undefined {
  try {
    const stat = readText(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** The parent pid of `pid`, from /proc/PID/stat. */
export function parentOf(pid: number, readText: ReadText): number | undefined {
  const fields = statFields(pid, readText);
  return fields && Number(fields[1]);
}

const SCRIPT_RUNNERS = new Set(["npm", "npx", "pnpm", "pnpx", "yarn", "bunx"]);
const SHELLS = new Set(["sh", "bash", "dash", "zsh", "ash", "ksh"]);

/** Whether a command line is a package runner's. */
export function isRunner(words: string[]): boolean {
  const [first, second = ""] = words.map((word) => basename(word));
  if (SCRIPT_RUNNERS.has(first)) return true;
  // node .../npm-cli.js start (before npm sets its title)
  if (first === "node" && /^(npm|npx|pnpm|yarn)(-cli)?(\.c?js)?$/.test(second)) return true;
  // bun run start, bun x, and bun start (a package script: a word that is not a file)
  if (first === "bun") return ["run", "x", "exec"].includes(second) || /^\w[\w:-]*$/.test(words[1] ?? "/");
  return first === "deno" && second === "task";
}

/**
 * The package runner that started this process, if one did: its parent, or the parent of a
 * `sh -c` that is its parent. `readText` reads /proc files (Deno passes its own).
 */
export function findRunner(readText: ReadText): Runner | undefined {
  let pid = process.ppid;
  for (let depth = 0; depth < 2 && pid > 1; depth++) {
    const words = commandLine(pid, readText);
    if (!words) return undefined;
    if (isRunner(words)) return { pid, words };
    if (!(SHELLS.has(basename(words[0])) && words.includes("-c"))) return undefined;
    pid = parentOf(pid, readText) ?? 0;
  }
  return undefined;
}

/** Whether `pid` still exists (a process we may not signal exists too). */
export function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/**
 * Calls `onGone` once, when the runner has died: this process or its `sh -c` parent was
 * re-parented, or the runner's pid is gone. Polls once a second; the timer keeps nothing alive.
 */
export function watchRunner(runner: Runner, onGone: () => void): () => void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent && exists(runner.pid)) return;
    clearInterval(timer);
    onGone();
  }, RUNNER_POLL_MS);
  (timer as { unref?: () => void }).unref?.();
  return () => clearInterval(timer);
}

/**
 * Where a package runner started this launcher (Linux), calls `stop` once that runner is gone,
 * and says why. Returns what ends the watch.
 */
export function stopWithRunner(readText: ReadText, stop: () => void): () => void {
  if (process.platform !== "linux") return () => {};
  const runner = findRunner(readText);
  if (!runner) return () => {};
  const command = runner.words.map((word, index) => (index === 0 ? basename(word) : word)).join(" ");
  return watchRunner(runner, () => {
    event(
      "stop",
      `the package runner that started this launcher (pid ${runner.pid}, ${command}) is gone: stopping`,
      {
        level: "warn",
      },
    );
    stop();
  });
}
