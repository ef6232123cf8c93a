/**
 * Launcher side, Deno.serve shards only: stops a shard's listening socket before its drain, with
 * `shutdown(fd, SHUT_RD)`. Deno.serve's own `shutdown()` closes the connections it accepted but
 * has not read a request from yet (denoland/deno#31959): under load, a few requests of every
 * drained shard are reset. Once the socket stops listening, the kernel moves its accept queue to
 * a sibling of the reuseport group (with `net.ipv4.tcp_migrate_req=1`) and the shard, a moment
 * later, reads what it had accepted before it closes.
 *
 * Deno has no call for that, so the launcher makes it through FFI (libc): for a shard process it
 * takes a copy of the child's socket with `pidfd_getfd` (Linux ≥ 5.6, a parent may); for a shard
 * thread the socket is in this very process. The shards themselves get no FFI permission. Where
 * FFI is not allowed or the kernel refuses, the drain is Deno.serve's own, and this says so once.
 * @module
 */
import {
  type ListFds,
  ownListeners as listenersOf,
  listensOn,
  socketCallTypes,
  stopOwnListener as stopListenerOf,
  stopListening,
} from "../src/listening-socket.ts";
import { log } from "../src/log.ts";

// The same numbers on every Linux architecture (added after the syscall tables were unified).
const SYS_PIDFD_OPEN = 434n;
const SYS_PIDFD_GETFD = 438n;

const SYMBOLS = {
  ...socketCallTypes("buffer"),
  pidfd_open: { name: "syscall", parameters: ["i64", "i64", "i64"], result: "i64" },
  pidfd_getfd: { name: "syscall", parameters: ["i64", "i64", "i64", "i64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let libc: Libc | null | undefined;
let warned = false;

function warnOnce(why: string): void {
  if (warned) return;
  warned = true;
  log.warn(
    `Deno.serve shards drain with Deno's own shutdown(), which resets a few connections under load: ${why}. --http node drains without loss.`,
  );
}

/** libc through FFI, or null (and a warning) where this launcher may not or cannot. */
function openLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") warnOnce(`stopping a listener first needs Linux, not ${Deno.build.os}`);
  else if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted")
    warnOnce("the launcher has no --allow-ffi to stop a listener first (deno task start gives it)");
  else
    try {
      libc = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
    } catch (error) {
      warnOnce(`libc.so.6 could not be opened (${(error as Error).message})`);
    }
  return libc;
}

function errno(lib: Libc): string {
  const pointer = lib.__errno_location();
  const code = pointer ? new Deno.UnsafePointerView(pointer).getInt32() : 0;
  return ({ 1: "EPERM", 3: "ESRCH", 38: "ENOSYS" } as Record<number, string>)[code] ?? `errno ${code}`;
}

/**
 * Deno lets a program read /proc/PID/fd only with --allow-all, so the fds looked at are a range:
 * the first 4096 (a shard process opens its listener among its first few; a threads-mode
 * launcher holds every connection, so its shard threads' listeners can come later under load).
 * One failed getsockopt or pidfd_getfd per fd not open: about a millisecond for the range.
 */
const FD_RANGE = Array.from({ length: 4096 }, (_, fd) => fd);
const listFds: ListFds = () => FD_RANGE;

/**
 * Stops the listener(s) on `port` of shard process `pid`. True if one was stopped: the shard
 * may then drain without loss.
 */
export function stopChildListener(pid: number, port: number): boolean {
  const lib = openLibc();
  if (!lib) return false;
  const pidfd = Number(lib.pidfd_open(SYS_PIDFD_OPEN, BigInt(pid), 0n));
  if (pidfd < 0) {
    const why = errno(lib);
    // ESRCH: the shard has just exited, nothing to stop.
    if (why !== "ESRCH") warnOnce(`pidfd_open failed (${why})`);
    return false;
  }
  let stopped = 0;
  let refused = "";
  for (const fd of listFds(pid)) {
    const copy = Number(lib.pidfd_getfd(SYS_PIDFD_GETFD, BigInt(pidfd), BigInt(fd), 0n));
    if (copy < 0) {
      const why = errno(lib);
      // EBADF: no such fd in the child. EPERM (a container's seccomp, Yama): nothing will do.
      if (why === "EPERM" || why === "ENOSYS") {
        refused = why;
        break;
      }
      continue;
    }
    if (listensOn(lib, copy, port) && stopListening(lib, copy)) stopped++;
    lib.close(copy);
  }
  lib.close(pidfd);
  if (refused) warnOnce(`pidfd_getfd failed (${refused})`);
  return stopped > 0;
}

/** The cookies (unique ids, never reused) of this process's own listeners on `port`. */
export function ownListeners(port: number): bigint[] {
  const lib = openLibc();
  return lib ? listenersOf(lib, port, listFds) : [];
}

/** Stops this process's own listener (a shard thread's) with that cookie. */
export function stopOwnListener(port: number, cookie: bigint): boolean {
  const lib = openLibc();
  return lib ? stopListenerOf(lib, port, cookie, listFds) : false;
}

/** Whether this launcher can stop listeners at all (asked before the first one, to warn early). */
export const canStopListeners = (): boolean => openLibc() !== null;
