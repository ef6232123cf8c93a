/**
 * What the launcher does on each signal, in one place. Caught from the launcher's first moment
 * (src/main.ts, before the logger, the config and the supervisor load), so that no signal meets
 * the runtime's default (death by SIGHUP) while the launcher starts.
 *
 * - SIGHUP: a rolling reload. One that comes while the shards start waits for the start to finish;
 *   several waiting ones make one reload (Supervisor.reload()). Ignored once stopping.
 * - SIGINT, SIGTERM: stop (drain every shard, exit 0). One that comes before the launcher has
 *   loaded ends the shards started early, if any, then the launcher, exit 0. A repeat within SAME_STOP_MS of the first is the same stop: a
 *   package runner (`bun run`, `deno task`) forwards the signal that its process group also got.
 *   SIGTERM never escalates.
 * - SIGINT SAME_STOP_MS or more after the first stop signal (a second Ctrl-C): kill every shard
 *   at once, exit 130.
 * - SIGTTIN: one shard more; SIGTTOU: one fewer (as in gunicorn and unicorn), each counted from
 *   the last count asked for. Before the start is done they wait for it; ignored once stopping.
 *   (Caught, so that they never stop the launcher as their default action would.)
 *
 * The control socket's `stop` counts as a SIGTERM, its `reload` as a SIGHUP, its `scale N` sets
 * the count that SIGTTIN and SIGTTOU change.
 * This module imports nothing but src/proc.ts, which imports nothing: it must load fast. It asks
 * the process through the runtime's Proc (src/types.ts): on Deno, `process` would boot the Node
 * layer.
 * @module
 */
import { nodeProc } from "../proc.ts";
import type { CaughtSignal as Caught, Proc } from "../types.ts";

/** A second stop signal this soon after the first is the same stop. */
export const SAME_STOP_MS = 1000;

/** What the launcher does for each signal, once it can. */
export interface SignalActions {
  reload(): void;
  /** Drains and exits; called once. */
  stop(): void;
  /** Kills every shard and exits 130. */
  force(): void;
  /** One shard more (+1) or fewer (-1). */
  scaleBy(delta: 1 | -1): void;
}

const CAUGHT: Caught[] = ["SIGHUP", "SIGINT", "SIGTERM", "SIGTTIN", "SIGTTOU"];

export class LauncherSignals {
  private actions?: SignalActions;
  private reloadAsked = false;
  /** SIGTTIN and SIGTTOU that came before the actions were set, in order. */
  private readonly scalesAsked: (1 | -1)[] = [];
  /** When the first stop signal came (0: none yet). */
  private stopAt = 0;
  private readonly listeners = new Map<Caught, () => void>();
  /**
   * What a stop signal does before the actions are set, where shards already run (the early
   * ones, src/launcher/early.ts): end them, then the launcher exits 0.
   */
  beforeStart?: () => Promise<void>;
  /** What a second Ctrl-C does then: kill those shards at once (the launcher exits 130). */
  killBeforeStart?: () => void;

  private readonly proc: Proc;

  constructor(proc: Proc = nodeProc) {
    this.proc = proc;
    for (const signal of CAUGHT) {
      const listener = () => this.receive(signal);
      this.listeners.set(signal, listener);
      proc.onSignal(signal, listener);
    }
  }

  /** From now on signals act; a reload asked for before now runs (after the start). */
  handle(actions: SignalActions): void {
    this.actions = actions;
    if (this.reloadAsked) actions.reload();
    for (const delta of this.scalesAsked.splice(0)) actions.scaleBy(delta);
  }

  /** Gives the signals back to the runtime (a command that serves nothing: status, reload, stop). */
  release(): void {
    for (const [signal, listener] of this.listeners) this.proc.offSignal(signal, listener);
  }

  get stopping(): boolean {
    return this.stopAt > 0;
  }

  receive(signal: Caught): void {
    if (signal === "SIGTTIN" || signal === "SIGTTOU") {
      if (this.stopping) return;
      const delta = signal === "SIGTTIN" ? 1 : -1;
      if (this.actions) this.actions.scaleBy(delta);
      else this.scalesAsked.push(delta);
      return;
    }
    if (signal === "SIGHUP") {
      if (this.stopping) return;
      if (this.actions) this.actions.reload();
      else this.reloadAsked = true;
      return;
    }
    if (!this.stopping) {
      this.stopAt = Date.now();
      if (this.actions) this.actions.stop();
      else if (this.beforeStart) void this.beforeStart().then(() => this.proc.exit(0));
      else this.proc.exit(0); // no shard exists yet: nothing to drain
      return;
    }
    if (signal === "SIGINT" && Date.now() - this.stopAt >= SAME_STOP_MS) {
      if (this.actions) {
        this.actions.force();
        return;
      }
      this.killBeforeStart?.();
      this.proc.exit(130);
    }
  }
}
