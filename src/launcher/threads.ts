/**
 * Threads mode: a shard as a worker thread of the launcher, with its own SO_REUSEPORT listener.
 * `ThreadHandle` gives the supervisor the same handle a child process does (send, kill, message
 * and exit events), so start, reload, restart and drain are the same code in both modes.
 * @module
 */
import { Worker } from "node:worker_threads";
import { log } from "../log.ts";
import type { LauncherMessage } from "../protocol.ts";
import { ThreadHandle } from "./thread-handle.ts";

/**
 * Passed to every shard thread: a lock under which a thread opens its listener, so that it can
 * tell its own socket among the process's (runtimes/bun-listener.ts). It holds the holder's
 * thread id, so that the lock of a thread that ended holding it (terminated mid-listen) is freed.
 */
const listenTurn = new Int32Array(new SharedArrayBuffer(4));

/** A shard as a node:worker_threads Worker running the runtime's entry (Bun, Node). */
export class ThreadShard extends ThreadHandle {
  readonly pid = process.pid;
  readonly label: string;
  private readonly worker: Worker;

  constructor(entry: string, env: NodeJS.ProcessEnv) {
    super();
    // The entry module sees SHARDPORT_SHARD in its own copy of the environment and runs a shard.
    this.worker = new Worker(entry, { env, workerData: { listenTurn } });
    this.label = `thread ${this.worker.threadId}`;
    this.worker.on("message", (message) => this.emit("message", message));
    this.worker.on("error", (error) => log.warn(`shard ${this.label}: uncaught ${error?.message ?? error}`));
    const threadId = this.worker.threadId;
    this.worker.on("exit", (code) => {
      if (Atomics.compareExchange(listenTurn, 0, threadId, 0) === threadId) Atomics.notify(listenTurn, 0);
      this.exited(code, null);
    });
  }

  protected post(message: LauncherMessage): void {
    this.worker.postMessage(message);
  }

  /**
   * Said as a SIGKILL, as Deno's threads and child processes say it (the Worker's own "exit",
   * code 1, follows and is then ignored).
   */
  protected terminate(): void {
    void this.worker.terminate();
    this.exited(null, "SIGKILL");
  }
}
