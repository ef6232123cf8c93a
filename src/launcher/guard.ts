/**
 * The port guard. Before any shard starts, the launcher looks for listening sockets that would
 * share connections with its own: the same port on the same address, or on an overlapping one
 * (a wildcard against an address it covers). If there are any it refuses, with one line naming
 * the holder; `--join` skips the guard; `--takeover` finds the launcher to replace.
 *
 * Who holds a socket: its inode (/proc/net/tcp{,6}) in the /proc/PID/fd links of this user's
 * processes. A live shardport launcher answers `status` on its control socket, and its answer
 * names the pids (launcher and shards) that hold the port. Holders that no control socket
 * claims are a stale group when they are shardport shards (SHARDPORT_SHARD in their
 * environment) or a launcher a pid file names, else some other program.
 * @module
 */
import { lookup } from "node:dns/promises";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { basename, isAbsolute, join, relative } from "node:path";
import { log } from "../log.ts";
import { SHARD_ENV } from "../protocol.ts";
import { runtimeDir } from "../runtime-dir.ts";
import type { Runtime } from "../types.ts";
import { EXIT, LaunchError } from "./cli.ts";
import type { Config } from "./config.ts";
import { controlSockets, queryLauncher } from "./control.ts";
import type { ReadText } from "./cpus.ts";
import {
  type Address,
  addressesOverlap,
  parseIp,
  parseProcAddress,
  pidsHolding,
  readSocketLinks,
  type TcpListener,
  tcpListeners,
} from "./port-holder.ts";
import { commandLine, findRunner, parentOf, statFields } from "./runner.ts";
import { Takeover } from "./takeover.ts";

/**
 * The guard, where launch() calls it: before the control socket and any shard. Resolves with
 * the takeover to complete once the shards are ready (--takeover), or undefined.
 */
export async function guard(
  runtime: Runtime,
  config: Config,
  readText: ReadText,
  probedFree = false,
): Promise<Takeover | undefined> {
  const old = await guardPort(runtime, config, readText, probedFree);
  return old && new Takeover(old, config, readText);
}

/** The launcher a takeover replaces. */
export interface OldLauncher {
  pid: number;
  /** Its control socket, where it answered; without one it is sent SIGTERM (its pid file names it). */
  socket?: string;
  /** As its `status` said: `node 24.21.0`, shard count, mode. */
  runtime?: string;
  shards?: number;
  mode?: string;
}

/** A launcher's answer to `status`, with the socket it came from. */
interface Answer {
  socket: string;
  launcherPid: number;
  runtime: string;
  mode: string;
  shards: { label: string }[];
}

type Owner =
  | { kind: "launcher"; pid: number; pids: number[]; answer: Answer }
  /** shardport, but no control socket answers for it. */
  | { kind: "stale"; pid: number; pids: number[]; pidFile: boolean }
  | { kind: "other"; pids: number[] };

/**
 * Runs the guard (Linux; elsewhere there is no /proc to read). Resolves with the launcher to
 * take over (--takeover), or undefined to start as usual; throws a LaunchError (exit 1) naming
 * the holder of the port. `probedFree`: the early bind probe (src/launcher/early.ts) found nothing
 * listening, so there is no one to name or take over; /proc/net/tcp is not read (on a busy
 * machine it lists tens of thousands of connections and takes a CPU's tenths of a second), and
 * the early shard's own socket, which may listen by now, is not taken for someone else's.
 */
export async function guardPort(
  runtime: Runtime,
  config: Config,
  readText: ReadText,
  probedFree = false,
): Promise<OldLauncher | undefined> {
  if (process.platform !== "linux" || config.join) return undefined;
  const mine = probedFree ? undefined : await addressesOf(config.host);
  const listeners = probedFree ? [] : overlapping(config.port, readText, mine);
  if (listeners.length === 0) {
    if (config.takeover)
      log.info(`--takeover: nothing serves ${config.host}:${config.port}: starting as usual`);
    return undefined;
  }
  const where = `${displayAddress(listeners[0].address)}:${config.port}`;
  const pids = pidsHolding(
    new Set(listeners.map((listener) => listener.inode)),
    runtime.socketLinks ?? readSocketLinks,
  );
  let me: number | undefined;
  try {
    me = process.getuid?.(); // Deno: needs --allow-sys=uid
  } catch {}
  const foreign = listeners.find((listener) => me !== undefined && listener.uid !== me);
  if (foreign) {
    throw new LaunchError(
      EXIT.failed,
      `${displayAddress(foreign.address)}:${config.port} is in use by another user (uid ${foreign.uid})${pids.length ? `, ${describePids(pids, readText)}` : ""}: the kernel lets sockets share a port with SO_REUSEPORT only when they have the same effective UID`,
    );
  }
  const owners = await ownersOf(pids, readText);
  if (owners.length === 0) owners.push({ kind: "other", pids: [] });
  const described = owners.map((owner) => describe(owner, where, readText)).join("; ");
  if (!config.takeover) {
    const advice =
      owners.length === 1 && owners[0].kind === "launcher"
        ? `: replace it with \`${replaceCommand(readText)}\`, or add shards to it with --join`
        : owners.every((owner) => owner.kind === "stale")
          ? `: stop it (kill ${owners.map((owner) => (owner as { pid: number }).pid).join(" ")}), or add to it with --join`
          : ": stop it or choose another --port (--join shares the port where it sets SO_REUSEPORT)";
    throw new LaunchError(EXIT.failed, `${described}${advice}`);
  }
  const [owner] = owners;
  if (owners.length > 1 || owner.kind === "other" || (owner.kind === "stale" && !owner.pidFile)) {
    throw new LaunchError(
      EXIT.failed,
      `--takeover refused: ${described}; only one shardport launcher of this user can be taken over`,
    );
  }
  const other = listeners.find((listener) => !sameAddress(listener, mine));
  if (other) {
    throw new LaunchError(
      EXIT.failed,
      `--takeover refused: the launcher (pid ${owner.pid}) listens on ${displayAddress(other.address)}:${config.port}, not ${config.host}: a takeover keeps the address (--host ${displayAddress(other.address)})`,
    );
  }
  if (owner.kind === "stale") return { pid: owner.pid };
  const { answer } = owner;
  return {
    pid: owner.pid,
    socket: answer.socket,
    runtime: answer.runtime,
    shards: answer.shards.length,
    mode: answer.mode,
  };
}

/**
 * After a start whose guard was skipped (early shards: their bind probe found the port free), a
 * listener on an overlapping address that no process of ours holds: something bound the port in
 * the moment between the probe and the shards' listen, and the kernel now shares connections with
 * it. Said as one line, as the guard would refuse it; undefined if there is none. Listeners whose
 * holder cannot be seen are left out: no name to give, and a closing one of ours looks the same.
 */
export async function joinedDuringStart(
  runtime: Runtime,
  config: Config,
  readText: ReadText,
  ours: Set<number>,
): Promise<string | undefined> {
  const listeners = overlapping(config.port, readText, await addressesOf(config.host));
  if (listeners.length === 0) return undefined;
  const links = (runtime.socketLinks ?? readSocketLinks)();
  const holders = (inode: number) => links.filter((link) => link.inode === inode).map((link) => link.pid);
  const foreign = listeners.filter((listener) => {
    const pids = holders(listener.inode);
    return pids.length > 0 && !pids.some((pid) => ours.has(pid));
  });
  if (foreign.length === 0) return undefined;
  const pids = [...new Set(foreign.flatMap((listener) => holders(listener.inode)))];
  return `${displayAddress(foreign[0].address)}:${config.port} was bound by ${describePids(pids, readText)} while the shards started, and would share their connections: stopped (stop it or choose another --port; --join shares a port on purpose)`;
}

/** The listeners on `port` whose address overlaps one of `mine` (any, where `mine` is unknown). */
function overlapping(port: number, readText: ReadText, mine: Address[] | undefined): TcpListener[] {
  return tcpListeners(port, readText).filter(
    (listener) =>
      !mine || mine.some((address) => addressesOverlap(address, parseProcAddress(listener.address))),
  );
}

/** The addresses `host` stands for; undefined where a name does not resolve (then any overlaps). */
async function addressesOf(host: string) {
  const literal = parseIp(host);
  if (literal) return [literal];
  try {
    const found = (await lookup(host, { all: true })).map((entry) => parseIp(entry.address));
    return found.every((address) => address !== undefined) && found.length > 0 ? found : undefined;
  } catch {
    return undefined;
  }
}

function sameAddress(listener: TcpListener, mine: ReturnType<typeof parseIp>[] | undefined): boolean {
  const theirs = parseProcAddress(listener.address).bytes;
  return mine?.some((address) => address?.bytes.every((byte, index) => byte === theirs[index])) ?? true;
}

/** A /proc/net address as one writes it: `127.0.0.1`, `0.0.0.0`, `::`, `::1`. */
function displayAddress(hex: string): string {
  const { v4, bytes } = parseProcAddress(hex);
  if (v4 && hex.split(":")[0].length === 8) return bytes.slice(12).join(".");
  const groups = [];
  for (let index = 0; index < 16; index += 2)
    groups.push(((bytes[index] << 8) | bytes[index + 1]).toString(16));
  return groups
    .join(":")
    .replace(/(^|:)0(:0)+(:|$)/, "::")
    .replace(/:{3,}/, "::");
}

/** Every control socket's `status` answer (those that do not answer are skipped). */
async function answers(): Promise<Answer[]> {
  let sockets: string[];
  try {
    sockets = controlSockets();
  } catch {
    return [];
  }
  const found = await Promise.all(
    sockets.map(async (socket) => {
      try {
        const answer = (await queryLauncher("", 0, "status", { path: socket, timeoutMs: 3000 })) as Answer;
        return typeof answer.launcherPid === "number" ? { ...answer, socket } : undefined;
      } catch {
        return undefined;
      }
    }),
  );
  return found.filter((answer) => answer !== undefined);
}

/** Launcher pids that pid files in runtimeDir() name, with when each file was written (ms). */
function pidFilePids(): Map<number, number> {
  const pids = new Map<number, number>();
  try {
    const dir = runtimeDir();
    for (const name of readdirSync(dir)) {
      if (!name.endsWith(".pid")) continue;
      const file = join(dir, name);
      pids.set(Number(readFileSync(file, "utf8").trim()), statSync(file).mtimeMs);
    }
  } catch {}
  return pids;
}

/** When a process started, in ms since the epoch: boot time plus its start in clock ticks (100 a second). */
function startedAt(pid: number, readText: ReadText): number | undefined {
  try {
    const ticks = Number(statFields(pid, readText)?.[19]);
    const boot = Number(/^btime (\d+)$/m.exec(readText("/proc/stat"))?.[1]);
    return Number.isFinite(ticks) && Number.isFinite(boot) ? boot * 1000 + ticks * 10 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a pid file names this process: it started before the file was written (a second of
 * slack: boot time is in whole seconds). A killed launcher leaves its pid file, and its pid may
 * since be another program's (seen in a long test run: a plain server taken for a stale group).
 */
function namedBy(files: Map<number, number>, pid: number, readText: ReadText): boolean {
  const written = files.get(pid);
  if (written === undefined) return false;
  const started = startedAt(pid, readText);
  return started === undefined || started <= written + 1000;
}

const isShard = (pid: number, readText: ReadText) => {
  try {
    return readText(`/proc/${pid}/environ`)
      .split("\0")
      .some((entry) => entry.startsWith(`${SHARD_ENV}=`));
  } catch {
    return false;
  }
};

/** Groups the holders' pids by who owns them: a live launcher, a stale group, or other programs. */
async function ownersOf(pids: number[], readText: ReadText): Promise<Owner[]> {
  const launchers = await answers();
  const named = pidFilePids();
  const owners = new Map<string, Owner>();
  const add = (key: string, make: () => Owner, pid: number) => {
    const owner = owners.get(key) ?? make();
    owners.set(key, owner);
    owner.pids.push(pid);
  };
  for (const pid of pids) {
    const parent = parentOf(pid, readText);
    const answer = launchers.find(
      (launcher) =>
        launcher.launcherPid === pid ||
        launcher.launcherPid === parent ||
        launcher.shards.some((shard) => shard.label === `pid ${pid}`),
    );
    if (answer) {
      const launcherPid = answer.launcherPid;
      add(`launcher ${launcherPid}`, () => ({ kind: "launcher", pid: launcherPid, pids: [], answer }), pid);
    } else if (parent !== undefined && isShard(pid, readText)) {
      add(
        `stale ${parent}`,
        () => ({ kind: "stale", pid: parent, pids: [], pidFile: namedBy(named, parent, readText) }),
        pid,
      );
    } else if (namedBy(named, pid, readText)) {
      add(`stale ${pid}`, () => ({ kind: "stale", pid, pids: [], pidFile: true }), pid);
    } else add("other", () => ({ kind: "other", pids: [] }), pid);
  }
  return [...owners.values()];
}

function describe(owner: Owner, where: string, readText: ReadText): string {
  if (owner.kind === "launcher") {
    const { runtime, mode, shards } = owner.answer;
    return `another shardport launcher (pid ${owner.pid}) serves ${where}: ${runtime}, ${shards.length} shard${shards.length === 1 ? "" : "s"} in ${mode} mode`;
  }
  if (owner.kind === "stale") {
    const shards = owner.pids.filter((pid) => pid !== owner.pid);
    const held = shards.length ? `its shards (${shards.join(", ")}) hold` : "it holds";
    return `a shardport launcher (pid ${owner.pid}) that answers on no control socket in ${runtimeDir()} (a stale group) serves ${where}: ${held} the port`;
  }
  if (owner.pids.length === 0) return `${where} is in use by a process this user cannot see`;
  return `${where} is in use by ${describePids(owner.pids, readText)}`;
}

/** `pid 42 (python3 -m http.server)`, or `pids 42, 43 (node server.js)`. */
function describePids(pids: number[], readText: ReadText): string {
  const words = commandLine(pids[0], readText);
  const program = words ? ` (${shorten(words).join(" ").replace(/\s+/g, " ").slice(0, 80)})` : "";
  return `${pids.length === 1 ? "pid" : "pids"} ${pids.join(", ")}${program}`;
}

/** The program's name without its folder; paths under the working folder relative to it. */
function shorten(words: string[]): string[] {
  return words.map((word, index) => {
    if (index === 0) return basename(word);
    if (!isAbsolute(word)) return word;
    const inside = relative(process.cwd(), word);
    return inside.startsWith("..") ? word : inside;
  });
}

const quote = (word: string) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`);

/**
 * The command that would replace the launcher: this one's, as the user typed it (the package
 * runner's command line where a runner started it), with --takeover.
 */
function replaceCommand(readText: ReadText): string {
  const runner = findRunner(readText);
  const words = (runner?.words ?? commandLine("self", readText) ?? process.argv).filter(
    (word) => word !== "--join" && word !== "--takeover",
  );
  // npm shows its title, without the `--` that hands the flags on to the script.
  if (runner && /^(npm|pnpm|yarn)$/.test(basename(words[0])) && !words.includes("--")) {
    words.splice(["run", "run-script"].includes(words[1]) ? 3 : 2, 0, "--");
  }
  return [...shorten(words), "--takeover"].map(quote).join(" ");
}
