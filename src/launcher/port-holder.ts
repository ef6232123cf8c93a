/**
 * The kernel's listening sockets on a port, from /proc/net/tcp{,6} (Linux), and who holds a port
 * when a shard gets EADDRINUSE: another user's SO_REUSEPORT group and a plain listener are the two
 * rules the kernel enforces.
 * @module
 */
import { readFileSync } from "node:fs";
import type { ReadText } from "./cpus.ts";

export interface TcpListener {
  /** Local address as the kernel prints it (`0100007F:1F90` is 127.0.0.1:8080). */
  address: string;
  /** Effective UID of the socket's owner. */
  uid: number;
  /** Connections waiting in its accept queue. */
  queued: number;
}

/** Every socket listening on `port`, on any address. */
export function tcpListeners(
  port: number,
  readText: ReadText = (path) => readFileSync(path, "utf8"),
): TcpListener[] {
  const found: TcpListener[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readText(table);
    } catch {
      continue;
    }
    for (const row of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid ...
      const cols = row.trim().split(/\s+/);
      if (cols.length < 8 || cols[3] !== "0A") continue;
      if (Number.parseInt(cols[1].split(":")[1], 16) !== port) continue;
      // For a listener, rx_queue is the length of its accept queue.
      found.push({
        address: cols[1],
        uid: Number(cols[7]),
        queued: Number.parseInt(cols[4].split(":")[1], 16),
      });
    }
  }
  return found;
}

export function explainAddrInUse(host: string, port: number, readText?: ReadText): string {
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const uids = tcpListeners(port, readText).map((listener) => listener.uid);
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
