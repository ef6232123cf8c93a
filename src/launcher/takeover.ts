/**
 * `--takeover`: replaces a running shardport launcher (any runtime, any options) with no gap.
 * 1. This launcher's shards start in the existing SO_REUSEPORT group (same address, port and
 *    user), while it answers on a second control socket, `<host>-<port>.next.sock`.
 * 2. It waits until every one is ready (else it exits as any start would, 2 for a module that
 *    does not load, 1 otherwise, and the old launcher never knew).
 * 3. With `--canary`, both serve for that long and the new shards are judged against the old
 *    (src/launcher/canary.ts); a failed canary drains the new shards and exits 1.
 * 4. It tells the old launcher to drain and exit (`stop` on its control socket; without one,
 *    SIGTERM to the pid its pid file names), then takes over the pid file and moves its socket
 *    onto the old one's name.
 * With tcp_migrate_req=1 the connections queued on the old shards' listeners move to the new
 * ones as the old ones close: nothing is lost.
 * @module
 */
import { log } from "../log.ts";
import { EXIT, LaunchError } from "./cli.ts";
import type { Config } from "./config.ts";
import { type ControlSocket, queryLauncher, writePidFile } from "./control.ts";
import { type ReadText, readFs } from "./cpus.ts";
import { event } from "./events.ts";
import type { OldLauncher } from "./guard.ts";
import { statFields } from "./runner.ts";
import type { Supervisor } from "./supervisor.ts";

/**
 * Whether `pid` still runs the process that had `start` (its start time in clock ticks since
 * boot, field 22 of /proc/PID/stat): false once it has exited, even as a zombie its parent never
 * reaps, or once the pid names another process. `readText`: the runtime's way to read /proc
 * (Deno reads another process's files only with -A: its launcher asks `cat`); a file it cannot
 * read means the process has gone.
 */
export function runs(pid: number, start: string | undefined, readText: ReadText = readFs): boolean {
  const stat = procStat(pid, readText);
  if (stat === undefined) return false;
  return stat.state !== "Z" && stat.state !== "X" && (start === undefined || stat.start === start);
}

function procStat(pid: number, readText: ReadText): { state: string; start: string } | undefined {
  const fields = statFields(pid, readText);
  return fields?.[19] === undefined ? undefined : { state: fields[0], start: fields[19] };
}

/** What `status` shows while a takeover runs. */
export interface TakeoverStatus {
  /** The launcher being replaced. */
  from: number;
  step: "starting" | "canary" | "handing over";
  /** With a canary: when it ends (epoch ms). */
  canaryEndsAt?: number;
}

export class Takeover {
  readonly old: OldLauncher;
  private readonly config: Config;
  state?: TakeoverStatus;
  /** Settles once the old launcher has exited (or outlived its drain): its other ports are free. */
  oldGone: Promise<void> = Promise.resolve();
  /** Removes the pid file this launcher took over, if it did and it is still its own. */
  private pidFile?: () => void;
  /** The old launcher's start time (/proc), so that a reused pid is not taken for it. */
  private readonly oldStart?: string;

  /** How this launcher's runtime reads /proc (see runs()). */
  private readonly readText: ReadText;

  constructor(old: OldLauncher, config: Config, readText: ReadText = readFs) {
    this.old = old;
    this.config = config;
    this.readText = readText;
    this.state = { from: old.pid, step: "starting" };
    this.oldStart = procStat(old.pid, readText)?.start;
    const what = old.runtime ? ` (${old.runtime}, ${old.shards} shards in ${old.mode} mode)` : "";
    event("takeover", `takeover: starting ${config.shards} shards beside launcher pid ${old.pid}${what}`);
  }

  /**
   * Steps 3 and 4, once every new shard is ready. Throws a LaunchError (exit 1) after a failed
   * canary, having drained this launcher's shards. Returns false, the old launcher untouched,
   * where this one was told to stop before the hand-over (`stopping`): its own stop drains its
   * shards, and the old launcher serves on.
   */
  async complete(
    supervisor: Supervisor,
    control: ControlSocket | undefined,
    stopping: () => boolean,
  ): Promise<boolean> {
    const { old, config } = this;
    const { canary } = config;
    if (canary && old.socket) {
      this.state = { from: old.pid, step: "canary", canaryEndsAt: Date.now() + canary.seconds * 1000 };
      event("takeover", `canary: serving beside launcher pid ${old.pid} for ${canary.seconds} s`);
      const { runCanary } = await import("./canary.ts");
      let result: Awaited<ReturnType<typeof runCanary>>;
      try {
        result = await runCanary(canary, old.socket, supervisor);
      } catch (error) {
        result = {
          passed: true,
          line: `canary: the old launcher stopped answering (${(error as Error).message})`,
        };
      }
      // Stopped meanwhile: the canary judged draining shards, so its verdict means nothing.
      if (stopping()) return this.abandon();
      if (!result.passed) {
        event("takeover", `${result.line}: rolling back, launcher pid ${old.pid} serves on`, {
          level: "error",
        });
        await supervisor.stop();
        throw new LaunchError(EXIT.failed, result.line);
      }
      event("takeover", result.line);
    } else if (canary) log.warn("--canary: the old launcher has no control socket to compare with: skipped");
    if (stopping()) return this.abandon();
    this.state = { from: old.pid, step: "handing over" };
    await this.stopOld();
    control?.promote();
    this.pidFile = writePidFile(config.host, config.port);
    process.on("exit", this.pidFile);
    this.state = undefined;
    event(
      "takeover",
      `takeover: launcher pid ${old.pid} is draining; this launcher (pid ${process.pid}) owns ${config.host}:${config.port}`,
    );
    this.oldGone = this.awaitExit();
    return true;
  }

  /** This launcher is stopping before the hand-over: the old one is left alone, serving. */
  private abandon(): false {
    if (this.state)
      event(
        "takeover",
        `takeover abandoned: this launcher is stopping; launcher pid ${this.old.pid} serves on`,
      );
    this.state = undefined;
    return false;
  }

  /**
   * Said as this launcher's stop begins, if that is before the hand-over: its shards may have
   * drained and the process exited before complete() resumes (a canary still running).
   */
  stopping(): void {
    if (this.state?.step === "starting" || this.state?.step === "canary") this.abandon();
  }

  removePidFile(): void {
    if (this.pidFile) process.off("exit", this.pidFile);
    this.pidFile?.();
  }

  /** Tells the old launcher to drain and exit: over its control socket, else by SIGTERM. */
  private async stopOld(): Promise<void> {
    const { old } = this;
    if (old.socket) {
      try {
        await queryLauncher("", 0, "stop", { path: old.socket, timeoutMs: 5000 });
        return;
      } catch (error) {
        if (!runs(old.pid, this.oldStart, this.readText)) return;
        log.warn(
          `launcher pid ${old.pid} did not take \`stop\` (${(error as Error).message}): sending SIGTERM`,
        );
      }
    }
    if (!runs(old.pid, this.oldStart, this.readText)) return;
    try {
      process.kill(old.pid, "SIGTERM");
    } catch {}
  }

  /**
   * Until the old launcher has exited, however long its own drain takes (its --drain-timeout may
   * be longer than this one's); a warning once it has outlived this launcher's drain by 5 s. An
   * exit its parent never reaps (a zombie) counts, as does its pid taken by another process.
   */
  private async awaitExit(): Promise<void> {
    const { old, config } = this;
    const warnAt = Date.now() + config.drainTimeoutMs + 5000;
    let warned = false;
    while (runs(old.pid, this.oldStart, this.readText)) {
      if (!warned && Date.now() > warnAt) {
        warned = true;
        log.warn(
          `launcher pid ${old.pid} is still there after ${config.drainTimeoutMs + 5000} ms: look at it`,
        );
      }
      // Each look is a /proc read (on Deno a `cat`, run synchronously): four a second.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    event("takeover", `takeover done: launcher pid ${old.pid} has exited`);
  }
}
