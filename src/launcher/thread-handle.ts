/**
 * The handle of a shard thread, as the supervisor drives it (src/launcher/threads.ts). Apart from
 * threads.ts so that a runtime with threads of its own (Deno's Worker, runtimes/deno.ts) does not
 * load node:worker_threads on the launcher's way to its first shard.
 * @module
 */
import type { LauncherMessage } from "../protocol.ts";
import { Emitter } from "./emitter.ts";

/**
 * What the supervisor drives for a shard thread, the same handle a child process gives it:
 * send, kill, "message", then "exit" and (later, as for a process) "close". A subclass says how
 * to post to its thread and how to end it, and calls `exited()` when the thread has ended.
 */
export abstract class ThreadHandle extends Emitter {
  /** The launcher's pid: threads share it. */
  abstract readonly pid: number;
  abstract readonly label: string;
  connected = true;

  protected abstract post(message: LauncherMessage): void;
  /** Ends the thread at once (SIGKILL). */
  protected abstract terminate(): void;

  protected exited(code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.connected) return;
    this.connected = false;
    this.emit("exit", code, signal);
    // As a child process does, "close" follows "exit" later, once its listeners are in place.
    setTimeout(() => this.emit("close", code, signal), 0);
  }

  send(message: LauncherMessage): boolean {
    if (this.connected) this.post(message);
    return this.connected;
  }

  /** SIGKILL terminates the thread at once; any other signal asks it to drain. */
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    if (signal !== "SIGKILL") return this.send({ type: "drain" });
    this.terminate();
    return true;
  }
}

/**
 * Turns taken one at a time, in the order asked for (Deno's shard threads listen in turn, so that
 * each listener is known by its thread). A turn starts once every earlier one has ended, and
 * ends when the function take() returns is called or when its thread exits; a thread that exited
 * while it waited has no turn, and the next one starts.
 */
export class Turns {
  private tail: Promise<void> = Promise.resolve();

  take(thread: ThreadHandle, start: () => void): () => void {
    let end: () => void = () => {};
    const ended = new Promise<void>((resolve) => {
      end = resolve;
    });
    this.tail = this.tail.then(
      () =>
        new Promise<void>((resolve) => {
          // Its "exit" was said while it waited: it will not be said again.
          if (!thread.connected) return resolve();
          void ended.then(resolve);
          thread.once("exit", () => resolve());
          start();
        }),
    );
    return end;
  }
}
