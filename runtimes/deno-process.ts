/**
 * A Deno shard process, launcher side: started with `Deno.Command` (not node:child_process, whose
 * IPC channel makes Deno boot its Node layer in the shard), and driven through a handle that
 * behaves as a ChildProcess does for the supervisor: "message", "exit" (code, signal), then
 * "close", "error" (with pid undefined) when it could not be started, `kill()`, `send()`,
 * `connected`. Messages travel over runtimes/deno-channel.ts's Unix socket: one per launcher, in
 * a 0700 temporary folder removed when the launcher exits.
 * @module
 */
import { Emitter } from "../src/launcher/emitter.ts";
import type { LauncherMessage } from "../src/protocol.ts";
import { CHANNEL_ENV, type ChannelAddress, readLines, writeLine } from "./deno-channel.ts";

/** Where a connection's lines go once its first line has named it. */
interface Route {
  onLine(value: unknown): void;
  onEnd(): void;
}

interface ChannelServer {
  path: string;
  /** Who each token belongs to: a shard not yet connected, or a flush waiting for its probe. */
  expected: Map<string, (conn: Deno.Conn) => Route>;
  /** The first lines of connections accepted and not yet identified. */
  unidentified: Set<Promise<void>>;
}

let server: ChannelServer | undefined;

/** The launcher's folder: `$TMPDIR/shardport-channel-XXXX`, holding its socket. */
const PREFIX = "shardport-channel-";
const SOCKET = "channel.sock";
/** How long after its first shard a launcher looks for the folders of launchers that were killed. */
const SWEEP_AFTER_MS = 2000;
/** How long a flush waits for connections that have not named themselves yet. */
const UNNAMED_WAIT_MS = 1000;

/** The launcher's socket, made at its first shard process. */
function channelServer(): ChannelServer {
  if (server) return server;
  const dir = Deno.makeTempDirSync({ prefix: PREFIX });
  const path = `${dir}/${SOCKET}`;
  let listener: Deno.Listener;
  try {
    Deno.chmodSync(dir, 0o700);
    listener = Deno.listen({ transport: "unix", path });
  } catch (error) {
    // No socket (say, a path over the 107 bytes a Unix socket may have): no folder left behind.
    Deno.removeSync(dir, { recursive: true });
    throw error;
  }
  // The shards' processes keep the launcher alive, not this socket.
  listener.unref();
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already gone.
    }
  });
  server = { path, expected: new Map(), unidentified: new Set() };
  void accept(listener, server);
  // Not on the way to the first answer: a while after the start. Set after this turn's spawns
  // (the early shards are spawned in one go): the process's first timer costs Deno 5 to 10 ms
  // (it loads what node:util would load too).
  queueMicrotask(() => Deno.unrefTimer(setTimeout(() => void sweepStale(dir), SWEEP_AFTER_MS)));
  return server;
}

/** A folder without a socket older than this is a launcher's that never made it (killed at once). */
const EMPTY_STALE_MS = 60_000;

/**
 * Removes the folders that launchers killed by SIGKILL left behind (they had no time to): a
 * folder whose socket refuses connections has no launcher any more, nor has one still without a
 * socket a minute after it was made (a launcher makes its socket right after its folder). A
 * socket just being made, or another user's folder, is left alone.
 */
async function sweepStale(own: string): Promise<void> {
  const parent = own.slice(0, own.lastIndexOf("/"));
  try {
    for await (const entry of Deno.readDir(parent)) {
      const dir = `${parent}/${entry.name}`;
      if (!entry.isDirectory || !entry.name.startsWith(PREFIX) || dir === own) continue;
      try {
        (await Deno.connect({ transport: "unix", path: `${dir}/${SOCKET}` })).close();
      } catch (error) {
        const stale =
          error instanceof Deno.errors.ConnectionRefused ||
          (error instanceof Deno.errors.NotFound &&
            Date.now() - ((await Deno.stat(dir).catch(() => undefined))?.mtime?.getTime() ?? Date.now()) >
              EMPTY_STALE_MS);
        if (stale) await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  } catch {
    // The temporary folder cannot be listed: nothing to sweep.
  }
}

/**
 * Accepts the shards' connections for the launcher's life. A failed accept (EMFILE: no file
 * descriptor left) is said once and tried again each second: unhandled, it would end the launcher.
 */
async function accept(listener: Deno.Listener, channels: ChannelServer): Promise<void> {
  let said = false;
  for (;;) {
    try {
      return await acceptAll(listener, channels);
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return; // the listener is closed
      if (!said) {
        said = true;
        const { log } = await import("../src/log.ts");
        log.warn(
          `the shards' channel could not accept a connection (${(error as Error).message}): trying again each second`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

async function acceptAll(listener: Deno.Listener, channels: ChannelServer): Promise<void> {
  for await (const conn of listener) {
    conn.unref();
    let identified: () => void = () => {};
    const first = new Promise<void>((resolve) => {
      identified = resolve;
    });
    channels.unidentified.add(first);
    let route: Route | undefined;
    const named = () => {
      channels.unidentified.delete(first);
      identified();
    };
    void readLines(conn, (value) => {
      if (route) return route.onLine(value);
      named();
      const token = String((value as { token?: unknown } | null)?.token);
      const claim = channels.expected.get(token);
      channels.expected.delete(token);
      if (claim) route = claim(conn);
      else conn.close();
    }).finally(() => {
      named();
      route?.onEnd();
    });
  }
}

/**
 * Resolves once every connection made before now has been accepted and identified: then a shard
 * that has not connected never did (a connection's order in the accept queue is kept).
 */
async function flush(channels: ChannelServer): Promise<void> {
  const token = crypto.randomUUID();
  const probed = new Promise<void>((resolve) =>
    channels.expected.set(token, () => {
      resolve();
      return { onLine: () => {}, onEnd: () => {} };
    }),
  );
  let probe: Deno.Conn | undefined;
  try {
    probe = await Deno.connect({ transport: "unix", path: channels.path });
    await writeLine(probe, { token });
    await probed;
    // A connection that never names itself (not a shard's) holds nothing up for more than a second.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...channels.unidentified]),
      new Promise<void>((resolve) => {
        const waiting = setTimeout(resolve, UNNAMED_WAIT_MS);
        Deno.unrefTimer(waiting);
        timer = waiting;
      }),
    ]);
    clearTimeout(timer);
  } catch {
    // The socket is gone (the launcher is ending): nothing more will come.
  } finally {
    channels.expected.delete(token);
    probe?.close();
  }
}

/** A shard process started with `Deno.Command`, as the supervisor drives it. */
export class DenoShardProcess extends Emitter {
  readonly pid: number | undefined;
  connected = true;
  private child?: Deno.ChildProcess;
  private conn?: Deno.Conn;
  /** Messages sent before the shard connected. */
  private waiting: LauncherMessage[] = [];
  private writes: Promise<void> = Promise.resolve();

  /** `args(channel)`: the command's arguments, given the path of the launcher's socket. */
  constructor(command: string, env: Record<string, string | undefined>, args: (channel: string) => string[]) {
    super();
    const token = crypto.randomUUID();
    let channels: ChannelServer;
    try {
      // Its socket too: a launcher that may not make it (no --allow-write) cannot start a shard.
      channels = channelServer();
      const address: ChannelAddress = { path: channels.path, token };
      const childEnv: Record<string, string> = { [CHANNEL_ENV]: JSON.stringify(address) };
      for (const [name, value] of Object.entries(env)) if (value !== undefined) childEnv[name] = value;
      this.child = new Deno.Command(command, {
        args: args(channels.path),
        env: childEnv,
        clearEnv: true,
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
    } catch (error) {
      // As a ChildProcess says it: "error" with no pid, nothing else.
      this.connected = false;
      queueMicrotask(() => this.emit("error", error));
      return;
    }
    this.pid = this.child.pid;
    let socketEnded: Promise<void> | undefined;
    channels.expected.set(token, (conn) => {
      this.conn = conn;
      let ended: () => void = () => {};
      socketEnded = new Promise((resolve) => {
        ended = resolve;
      });
      for (const message of this.waiting.splice(0)) this.write(message);
      return {
        onLine: (message) => this.emit("message", message),
        onEnd: () => {
          this.connected = false;
          this.conn = undefined;
          ended();
        },
      };
    });
    this.child.status.then(async ({ code, signal }) => {
      this.emit("exit", signal ? null : code, signal);
      // "close" once its last messages are read: after the socket's end, or, where it never
      // connected, once it is sure that it did not.
      if (!socketEnded) await flush(channels);
      channels.expected.delete(token);
      await socketEnded;
      this.connected = false;
      this.emit("close", signal ? null : code, signal);
    });
  }

  send(message: LauncherMessage): boolean {
    if (!this.connected) return false;
    if (this.conn) this.write(message);
    else this.waiting.push(message);
    return true;
  }

  private write(message: LauncherMessage): void {
    const conn = this.conn;
    if (!conn) return;
    this.writes = this.writes.then(() => writeLine(conn, message)).catch(() => {});
  }

  kill(signal: NodeJS.Signals | number = "SIGTERM"): boolean {
    try {
      this.child?.kill(signal as Deno.Signal);
      return this.child !== undefined;
    } catch {
      return false; // it has exited
    }
  }
}
