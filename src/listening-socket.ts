/**
 * Finding and stopping a TCP listening socket by its fd, on libc calls that the runtime's FFI
 * provides (Deno.dlopen in runtimes/deno-listener.ts, bun:ffi in runtimes/bun-listener.ts).
 * `shutdown(fd, SHUT_RD)` on a listening socket stops it listening while the fd stays open: the
 * kernel stops routing new connections to it and hands its accept queue to a sibling of the
 * SO_REUSEPORT group (with `net.ipv4.tcp_migrate_req=1`), while its process still reads the
 * connections it had accepted. A drain that begins so loses nothing the server had accepted.
 * @module
 */

/** The libc calls used here, as both runtimes' FFI bind them (buffers as typed arrays). */
export interface SocketCalls {
  getsockopt(fd: number, level: number, option: number, value: BigUint64Array, length: Uint32Array): number;
  getsockname(fd: number, address: Uint8Array, length: Uint32Array): number;
  shutdown(fd: number, how: number): number;
}

/** libc's signatures of those calls, in the words both FFIs accept ("ptr" is "buffer" in Deno). */
export const socketCallTypes = <P extends "buffer" | "ptr">(pointer: P) =>
  ({
    getsockopt: { parameters: ["i32", "i32", "i32", pointer, pointer], result: "i32" },
    getsockname: { parameters: ["i32", pointer, pointer], result: "i32" },
    shutdown: { parameters: ["i32", "i32"], result: "i32" },
  }) as const;

const SOL_SOCKET = 1;
const SO_ACCEPTCONN = 30;
const SO_COOKIE = 57;
const SHUT_RD = 0;
const AF_INET = 2;
const AF_INET6 = 10;
/**
 * A process's open fds, from /proc/PID/fd (PID "self" or a child), listed through the runtime's
 * own API. Not a fixed range: in threads mode every connection is an fd of the one process, so a
 * new shard thread's listener can come past 1024 during a reload under load.
 */
export type ListFds = (pid: number | "self") => number[];

function intOption(lib: SocketCalls, fd: number, option: number): bigint | undefined {
  const value = new BigUint64Array(1);
  const length = new Uint32Array([8]);
  const ok = lib.getsockopt(fd, SOL_SOCKET, option, value, length) === 0;
  if (!ok) return undefined;
  return length[0] === 4 ? BigInt(new Uint32Array(value.buffer)[0]) : value[0];
}

/** Whether `fd` is a TCP socket listening on `port`. */
export function listensOn(lib: SocketCalls, fd: number, port: number): boolean {
  if (intOption(lib, fd, SO_ACCEPTCONN) !== 1n) return false;
  const address = new Uint8Array(128);
  const length = new Uint32Array([address.length]);
  if (lib.getsockname(fd, address, length) !== 0) return false;
  const view = new DataView(address.buffer);
  const family = view.getUint16(0, true);
  return (family === AF_INET || family === AF_INET6) && view.getUint16(2) === port;
}

/** Stops listening on `fd` (the fd stays open). */
export const stopListening = (lib: SocketCalls, fd: number): boolean => lib.shutdown(fd, SHUT_RD) === 0;

/** The cookies (unique ids, never reused) of this process's own listeners on `port`. */
export function ownListeners(lib: SocketCalls, port: number, listFds: ListFds): bigint[] {
  const cookies: bigint[] = [];
  for (const fd of listFds("self")) {
    if (!listensOn(lib, fd, port)) continue;
    const cookie = intOption(lib, fd, SO_COOKIE);
    if (cookie !== undefined) cookies.push(cookie);
  }
  return cookies;
}

/** Stops this process's own listener on `port` with that cookie. */
export function stopOwnListener(lib: SocketCalls, port: number, cookie: bigint, listFds: ListFds): boolean {
  for (const fd of listFds("self")) {
    if (listensOn(lib, fd, port) && intOption(lib, fd, SO_COOKIE) === cookie) return stopListening(lib, fd);
  }
  return false;
}

/**
 * After its listener has stopped, how long a shard still reads the connections it had accepted
 * before its server's own stop closes those that sent nothing yet: a client sends its request
 * right after the handshake, so this covers a one-way trip. Waited in steps: the drain loads the
 * logger meanwhile, which can hold the event loop for a few hundred ms (seen in threads mode),
 * and every step after that is one more turn to read them.
 */
export const READ_ACCEPTED_MS = 300;
const READ_STEP_MS = 25;

export async function readAccepted(): Promise<void> {
  for (let waited = 0; waited < READ_ACCEPTED_MS; waited += READ_STEP_MS)
    await new Promise((resolve) => setTimeout(resolve, READ_STEP_MS));
}
