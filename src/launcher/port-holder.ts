/**
 * The kernel's listening sockets on a port, from /proc/net/tcp{,6} (Linux), and who holds a port
 * when a shard gets EADDRINUSE: another user's SO_REUSEPORT group and a plain listener are the two
 * rules the kernel enforces.
 * @module
 */
import { readdirSync, readlinkSync } from "node:fs";
import { isIP } from "node:net";
import { type ReadText, readFs } from "./cpus.ts";

export interface TcpListener {
  /** Local address as the kernel prints it (`0100007F:1F90` is 127.0.0.1:8080). */
  address: string;
  /** Effective UID of the socket's owner. */
  uid: number;
  /** Connections waiting in its accept queue. */
  queued: number;
  /** The socket's inode: /proc/PID/fd/N links to `socket:[inode]` in every process holding it. */
  inode: number;
}

/** Every socket listening on `port`, on any address. */
export function tcpListeners(port: number, readText: ReadText = readFs): TcpListener[] {
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
        inode: Number(cols[9]),
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

/** An address as 16 bytes (IPv4 as ::ffff:a.b.c.d), for comparing IPv4 and IPv6 listeners. */
export type Address = { v4: boolean; bytes: number[] };

/** `0100007F:1F90` (/proc/net/tcp) or its 32-hex-digit IPv6 form: each 32-bit word host-order. */
export function parseProcAddress(hex: string): Address {
  const ip = hex.split(":")[0];
  const bytes: number[] = [];
  for (let word = 0; word < ip.length; word += 8) {
    // Little-endian hosts (x86, arm64) print each word's bytes backwards.
    for (let byte = 6; byte >= 0; byte -= 2)
      bytes.push(Number.parseInt(ip.slice(word + byte, word + byte + 2), 16));
  }
  if (bytes.length === 4) return { v4: true, bytes: [...V4_MAPPED, ...bytes] };
  return { v4: V4_MAPPED.every((byte, index) => bytes[index] === byte), bytes };
}

const V4_MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/** An IP literal as an Address, or undefined for a name. */
export function parseIp(text: string): Address | undefined {
  const host = text.replace(/^\[|\]$/g, "");
  const family = isIP(host);
  if (family === 4) return { v4: true, bytes: [...V4_MAPPED, ...host.split(".").map(Number)] };
  if (family !== 6) return undefined;
  let [head, tail = ""] = host.split("::");
  if (!host.includes("::")) tail = "";
  const groups = (part: string) => {
    if (part === "") return [];
    const words = part.split(":");
    const last = words.at(-1) as string;
    // A trailing dotted quad (::ffff:127.0.0.1) is two groups.
    if (last.includes(".")) {
      const [a, b, c, d] = last.split(".").map(Number);
      words.splice(-1, 1, ((a << 8) | b).toString(16), ((c << 8) | d).toString(16));
    }
    return words.map((word) => Number.parseInt(word, 16));
  };
  const left = groups(head);
  const right = groups(tail);
  const all = [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  const bytes = all.flatMap((group) => [group >> 8, group & 0xff]);
  const mapped = V4_MAPPED.every((byte, index) => bytes[index] === byte);
  return { v4: mapped, bytes };
}

const isWildcard = (address: Address) =>
  address.bytes.every((byte, index) => byte === 0 || (address.v4 && index < 12 && byte === V4_MAPPED[index]));

/**
 * Whether a listener on `a` and one on `b` (same port) would take each other's connections, as
 * the kernel matches them: the same address, or a wildcard against an address it covers
 * (0.0.0.0 covers IPv4; :: covers everything, as it is dual-stack unless IPV6_V6ONLY, which
 * /proc does not show).
 */
export function addressesOverlap(a: Address, b: Address): boolean {
  if (a.bytes.every((byte, index) => byte === b.bytes[index])) return true;
  const covers = (wild: Address, other: Address) => isWildcard(wild) && (!wild.v4 || other.v4);
  return covers(a, b) || covers(b, a);
}

/** Pid and socket inode of every socket a process of this user has open (Deno passes its own). */
export type SocketLinks = () => { pid: number; inode: number }[];

/** Reads /proc/PID/fd/* links (only this user's processes are readable, or all as root). */
export const readSocketLinks: SocketLinks = () => {
  const found: { pid: number; inode: number }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue; // another user's, or gone
    }
    for (const fd of fds) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${name}/fd/${fd}`));
        if (match) found.push({ pid: Number(name), inode: Number(match[1]) });
      } catch {}
    }
  }
  return found;
};

/** The pids holding any of `inodes`, in order. */
export function pidsHolding(inodes: Set<number>, links: SocketLinks = readSocketLinks): number[] {
  const pids = new Set<number>();
  for (const { pid, inode } of links()) if (inodes.has(inode)) pids.add(pid);
  return [...pids].sort((a, b) => a - b);
}
