/**
 * Says who holds a port when a shard gets EADDRINUSE, from /proc/net/tcp{,6} (Linux): another
 * user's SO_REUSEPORT group and a plain listener are the two rules the kernel enforces.
 * @module
 */
import { readFileSync } from "node:fs";
import type { Runtime } from "./types.ts";

/** Effective UIDs of the sockets listening on `port`, on any address. */
function listenerUids(port: number, runtime: Runtime): number[] {
  const uids: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = runtime.readProc?.(table) ?? readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const row of text.split("\n").slice(1)) {
      const cols = row.trim().split(/\s+/);
      // cols: sl local_address rem_address st ... uid(7)
      if (cols.length < 8 || cols[3] !== "0A") continue;
      if (Number.parseInt(cols[1].split(":")[1], 16) === port) uids.push(Number(cols[7]));
    }
  }
  return uids;
}

export function explainAddrInUse(host: string, port: number, runtime: Runtime): string {
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const uids = listenerUids(port, runtime);
  const me = process.getuid?.(); // Deno: needs --allow-sys=uid
  const other = uids.find((uid) => uid !== me);
  if (other !== undefined) {
    return `${where} is in use by another user (uid ${other}): the kernel lets sockets share a port with SO_REUSEPORT only when they have the same effective UID (EADDRINUSE)`;
  }
  if (uids.length > 0) {
    return `${where} is in use by a listener without SO_REUSEPORT: a port is shared only when every socket on it sets SO_REUSEPORT (EADDRINUSE)`;
  }
  return `${where} is already in use (EADDRINUSE)`;
}
