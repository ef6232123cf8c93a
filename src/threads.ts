/**
 * Threads mode: a shard as a worker thread of the launcher, with its own SO_REUSEPORT listener.
 * `ThreadShard` gives the supervisor the same handle a child process does (send, kill, message
 * and exit events), so start, reload, restart and drain are the same code in both modes.
 * @module
 */
import { EventEmitter } from "node:events";
import { isMainThread, Worker } from "node:worker_threads";
import { log } from "./log.ts";
import { type LauncherMessage, SHARD_ENV } from "./protocol.ts";

/** True in a shard thread (threads mode): the runtime entry then runs as a shard, not a launcher. */
export const isShardThread = () => !isMainThread && Boolean(process.env[SHARD_ENV]);

export class ThreadShard extends EventEmitter {
  /** The launcher's pid: threads share it. */
  readonly pid = process.pid;
  readonly label: string;
  connected = true;
  private readonly worker: Worker;

  constructor(entry: string, env: NodeJS.ProcessEnv) {
    super();
    // The entry module sees SHARDPORT_SHARD in its own copy of the environment and runs a shard.
    this.worker = new Worker(entry, { env });
    this.label = `thread ${this.worker.threadId}`;
    this.worker.on("message", (message) => this.emit("message", message));
    this.worker.on("error", (error) => log.warn(`shard ${this.label}: uncaught ${error?.message ?? error}`));
    this.worker.on("exit", (code) => {
      this.connected = false;
      this.emit("exit", code, null);
      // As a child process does, "close" follows "exit" later, once its listeners are in place.
      setTimeout(() => this.emit("close", code, null), 0);
    });
  }

  send(message: LauncherMessage): boolean {
    this.worker.postMessage(message);
    return true;
  }

  /** SIGKILL terminates the thread at once; any other signal asks it to drain. */
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    if (signal === "SIGKILL") void this.worker.terminate();
    else this.send({ type: "drain" });
    return true;
  }
}
