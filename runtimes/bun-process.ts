/**
 * A Bun shard process started with Bun.spawn and its own IPC channel, seen by the supervisor as
 * a ChildProcess is (src/types.ts ShardHandle). Not node:child_process: loading it and spawning
 * through it cost the launcher about 2.5 ms more on its way to the first shard, and its first
 * message arrives about 2.5 ms later (measured on Bun 1.4.5). The shard side is unchanged:
 * `process.send` and `process.on("message")` talk to this channel as to node:child_process's.
 * @module
 */
import { Emitter } from "../src/launcher/emitter.ts";
import type { LauncherMessage } from "../src/protocol.ts";

/** A signal's name ("SIGKILL"), however Bun gives it. */
function signalName(signal: number | string | null): string | null {
  if (typeof signal !== "number") return signal;
  const names = process.getBuiltinModule("node:os").constants.signals as Record<string, number>;
  return Object.keys(names).find((name) => names[name] === signal) ?? `signal ${signal}`;
}

export class BunShardProcess extends Emitter {
  /** Undefined where the process could not be started (then only "error" is emitted). */
  readonly pid?: number;
  connected = false;
  private readonly child?: Bun.Subprocess;
  private exitedWith?: [number | null, string | null];

  constructor(entry: string, env: Record<string, string | undefined>) {
    super();
    try {
      this.child = Bun.spawn([process.execPath, entry], {
        env,
        stdio: ["ignore", "inherit", "inherit"],
        // As node:child_process's channel: plain JSON, what the shard's process.send expects.
        serialization: "json",
        ipc: (message) => this.emit("message", message),
        onDisconnect: () => {
          this.connected = false;
          this.emit("disconnect");
          this.closeAfterExit();
        },
        onExit: (child) => {
          // "exit" as node:child_process says it: a code, or the signal that ended the process.
          const signal = signalName(child.signalCode);
          const exitedWith: [number | null, string | null] = [signal ? null : child.exitCode, signal];
          this.exitedWith = exitedWith;
          this.emit("exit", ...exitedWith);
          this.closeAfterExit();
        },
      });
    } catch (error) {
      queueMicrotask(() => this.emit("error", error));
      return;
    }
    this.pid = this.child.pid;
    this.connected = true;
  }

  /**
   * "close" once the process has exited and its channel has closed, in whichever order Bun tells
   * them: a shard's last message (why it failed) may come after its exit.
   */
  private closeAfterExit(): void {
    if (this.exitedWith && !this.connected) this.emit("close", ...this.exitedWith);
  }

  send(message: LauncherMessage): boolean {
    if (!this.connected || !this.child) return false;
    try {
      this.child.send(message);
      return true;
    } catch {
      return false;
    }
  }

  kill(signal: NodeJS.Signals | number = "SIGTERM"): boolean {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode) return false;
    this.child.kill(signal);
    return true;
  }
}
