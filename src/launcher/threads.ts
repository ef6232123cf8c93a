/**
 * Threads mode: a shard as a worker thread of the launcher, with its own SO_REUSEPORT listener.
 * `ThreadHandle` gives the supervisor the same handle a child process does (send, kill, message
 * and exit events), so start, reload, restart and drain are the same code in both modes.
 * @module
 */
import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import { log } from "../log.ts";
import type { LauncherMessage } from "../protocol.ts";

/**
 * What the supervisor drives for a shard thread, the same handle a child process gives it:
 * send, kill, "message", then "exit" and (later, as for a process) "close". A subclass says how
 * to post to its thread and how to end it, and calls `exited()` when the thread has ended.
 */
export abstract class ThreadHandle extends EventEmitter {
  /** The launcher's pid: threads share it. */
  readonly pid = process.pid;
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
 * Passed to every shard thread: a lock under which a thread opens its listener, so that it can
 * tell its own socket among the process's (runtimes/bun-listener.ts).
 */
const listenTurn = new Int32Array(new SharedArrayBuffer(4));

/** A shard as a node:worker_threads Worker running the runtime's entry (Bun, Node). */
export class ThreadShard extends ThreadHandle {
  readonly label: string;
  private readonly worker: Worker;

  constructor(entry: string, env: NodeJS.ProcessEnv) {
    super();
    // The entry module sees SHARDPORT_SHARD in its own copy of the environment and runs a shard.
    this.worker = new Worker(entry, { env, workerData: { listenTurn } });
    this.label = `thread ${this.worker.threadId}`;
    this.worker.on("message", (message) => this.emit("message", message));
    this.worker.on("error", (error) => log.warn(`shard ${this.label}: uncaught ${error?.message ?? error}`));
    this.worker.on("exit", (code) => this.exited(code, null));
  }

  protected post(message: LauncherMessage): void {
    this.worker.postMessage(message);
  }

  /** The Worker's own "exit" event follows. */
  protected terminate(): void {
    void this.worker.terminate();
  }
}
