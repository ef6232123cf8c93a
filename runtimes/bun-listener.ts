/**
 * Shard side, Bun.serve only: a drain first stops the shard's own listening socket with
 * `shutdown(fd, SHUT_RD)` (src/listening-socket.ts), reads what it had accepted for a moment,
 * and only then calls `server.stop()`. Bun's graceful stop() (1.4.5) waits for a request in
 * flight, even for a partial head, but not for a connection it has accepted and not read from
 * yet: it resolves, the shard exits, and the exit resets that connection, whose request is
 * already in the kernel's buffer (`read ECONNRESET`, about one request in a few hundred reloads
 * under load). Read for a moment first, those requests are in flight when stop() comes (the open
 * oven-sh/bun#37889 is about the same blind spot: a connection before its first request).
 * Bun has no call for it, so bun:ffi calls libc, in the shard itself: Bun has no permissions to
 * narrow. Loaded once per listener, never per request.
 * @module
 */
import {
  type ListFds,
  ownListeners,
  READ_ACCEPTED_MS,
  type SocketCalls,
  socketCallTypes,
  stopOwnListener,
} from "../src/listening-socket.ts";

let libc: SocketCalls | null | undefined;

const listFds: ListFds = (pid) =>
  process.getBuiltinModule("node:fs").readdirSync(`/proc/${pid}/fd`).map(Number);

async function openLibc(): Promise<SocketCalls | null> {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== "linux") return libc;
  try {
    const { dlopen } = await import("bun:ffi");
    const symbols = Object.fromEntries(
      Object.entries(socketCallTypes("ptr")).map(([name, { parameters, result }]) => [
        name,
        { args: parameters, returns: result },
      ]),
    );
    libc = dlopen("libc.so.6", symbols).symbols as unknown as SocketCalls;
  } catch {
    // No libc.so.6 (musl): the drain is Bun's own stop().
  }
  return libc;
}

/**
 * Shard threads of one launcher listen one at a time (threads mode passes them a shared lock),
 * so that each can tell its own socket among the process's listeners: the one that appeared
 * while it held the lock. The lock holds the holder's thread id; the launcher frees it when a
 * thread ends holding it (src/launcher/threads.ts). Should that fail, it is waited for 2 s at
 * most; then the socket is told by the same difference, and none is taken where that is
 * ambiguous.
 */
function inTurn<T>(listen: () => T): T {
  const { workerData, threadId } = process.getBuiltinModule("node:worker_threads");
  const lock = (workerData as { listenTurn?: Int32Array } | null)?.listenTurn;
  if (!(lock instanceof Int32Array)) return listen();
  const deadline = Date.now() + 2000;
  let held = Atomics.compareExchange(lock, 0, 0, threadId) === 0;
  while (!held && Date.now() < deadline) {
    const holder = Atomics.load(lock, 0);
    if (holder !== 0) Atomics.wait(lock, 0, holder, 50);
    held = Atomics.compareExchange(lock, 0, 0, threadId) === 0;
  }
  try {
    return listen();
  } finally {
    if (held) {
      Atomics.store(lock, 0, 0);
      Atomics.notify(lock, 0, 1);
    }
  }
}

/** What a drain needs to stop this shard's listener first: `stop()` says if it did. */
export interface OwnListener {
  stop(): Promise<boolean>;
}

/**
 * Runs `listen` (which must open exactly one listener on `port`, synchronously) and finds the
 * socket it opened. Undefined where it cannot: the drain is then Bun's own stop().
 */
export async function listenFindingSocket<T>(
  port: number,
  listen: () => T,
): Promise<{ value: T; own?: OwnListener }> {
  // A shard process has exactly one listener on its port: it is found when the drain begins,
  // so nothing of this (libc, the fd scan) is on the way to listening.
  if (Bun.isMainThread) {
    const stop = async () => {
      const lib = await openLibc();
      const mine = lib ? ownListeners(lib, port, listFds) : [];
      return lib !== null && mine.length === 1 && stopOwnListener(lib, port, mine[0], listFds);
    };
    return { value: listen(), own: { stop } };
  }
  const lib = await openLibc();
  if (!lib) return { value: listen() };
  let before: bigint[] = [];
  let after: bigint[] = [];
  const value = inTurn(() => {
    before = ownListeners(lib, port, listFds);
    const value = listen();
    after = ownListeners(lib, port, listFds);
    return value;
  });
  const mine = after.filter((cookie) => !before.includes(cookie));
  if (mine.length !== 1) return { value };
  return { value, own: { stop: async () => stopOwnListener(lib, port, mine[0], listFds) } };
}

/**
 * Reads what the stopped listener had accepted, for READ_ACCEPTED_MS, without spinning: Bun polls
 * its listener level-triggered, and a listener stopped by SHUT_RD is ready (EPOLLHUP) on every
 * turn, so each turn retries accept() (EINVAL) at once: a CPU held for the whole wait (seen with
 * strace; 300 ms of CPU per drain, a core, measured with process.cpuUsage()). So the thread
 * sleeps in slices of 9 ms with one turn of the event loop between them (setImmediate: one
 * non-blocking poll), where the accepted connections are read and in-flight requests go on, each
 * delayed by a slice at most: 8 ms of CPU per drain, and a request sent on an accepted connection
 * during the wait is still answered.
 */
export async function readAcceptedSleeping(): Promise<void> {
  for (let waited = 0; waited < READ_ACCEPTED_MS; waited += 10) {
    Bun.sleepSync(9);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
