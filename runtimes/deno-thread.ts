/**
 * A Deno shard thread (threads mode): the module a Deno `Worker` of the launcher runs. A web
 * Worker, not node:worker_threads, which loads Deno's Node compatibility layer in every thread
 * (about 4 MB more each). Its first message is the shard's spec.
 *
 * A web Worker tells its parent neither that it exited nor with what code, so this thread says
 * so itself before it closes: on `Deno.exit()` (which `process.exit()` calls), on `self.close()`,
 * and on the drain's own exit. An uncaught error reaches the launcher as the Worker's `error`
 * event (runtimes/deno.ts).
 * @module
 */
import type { LauncherMessage } from "../src/protocol.ts";
import { type LauncherChannel, runShard } from "../src/shard/shard.ts";
import type { Listener, ListenOptions } from "../src/types.ts";
import { denoMemory, listenDeno } from "./deno-serve.ts";

/**
 * Thread → launcher: may this thread listen now (`done: false`), it has listened (`done: true`).
 * The launcher answers `listen-go` (runtimes/deno.ts).
 */
export interface ListenTurn {
  type: "listen-turn";
  done: boolean;
}

/** Thread → launcher, besides the shard's own messages: this thread is ending. */
export interface ThreadExit {
  type: "thread-exit";
  code: number;
}

interface WorkerScope {
  postMessage(message: unknown): void;
  close(): void;
  addEventListener(type: "message", listener: (event: MessageEvent) => void): void;
  removeEventListener(type: "message", listener: (event: MessageEvent) => void): void;
}
const scope = globalThis as unknown as WorkerScope;

let ending = false;
const sayExit = (code: number) => {
  if (ending) return;
  ending = true;
  scope.postMessage({ type: "thread-exit", code } satisfies ThreadExit);
};
const denoExit = Deno.exit;
Deno.exit = ((code?: number) => {
  sayExit(code ?? Deno.exitCode ?? 0);
  return denoExit(code);
}) as typeof Deno.exit;
const close = scope.close.bind(scope);
scope.close = () => {
  sayExit(0);
  close();
};

let go: () => void = () => {};
/** Listens once the launcher says so, and tells it when done: it learns which socket is whose. */
async function listenInTurn(options: ListenOptions): Promise<Listener> {
  await new Promise<void>((resolve) => {
    go = resolve;
    scope.postMessage({ type: "listen-turn", done: false } satisfies ListenTurn);
  });
  try {
    return await listenDeno(options);
  } finally {
    scope.postMessage({ type: "listen-turn", done: true } satisfies ListenTurn);
  }
}

const listeners: ((message: LauncherMessage) => void)[] = [];
const channel: LauncherChannel = {
  ownsProcess: false,
  pid: Deno.pid,
  send: async (message) => scope.postMessage(message),
  onMessage: (listener) => listeners.push(listener),
  onGone: () => {},
  onSignal: () => {},
  exit: (code) => Deno.exit(code),
};

// Registered while this module evaluates, so the spec (the first message) cannot be missed.
scope.addEventListener("message", (event) => {
  const data = event.data;
  if (data?.type === "spec") {
    runShard({ name: "deno", listen: listenInTurn, memoryUsage: denoMemory }, data.spec, channel);
    return;
  }
  if (data?.type === "listen-go") return go();
  for (const listener of listeners) listener(data as LauncherMessage);
});
