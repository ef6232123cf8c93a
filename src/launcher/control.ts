/**
 * How scripts reach a running launcher: a control socket per host:port, in a directory that only
 * the launching user can use, that answers `shardport status`, `reload` and `stop` (an answer
 * proves the launcher is alive, where a pid may be reused); and a pid file beside it, for
 * scripts that send signals themselves.
 * @module
 */
import {
  chmodSync,
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { runtimeDir } from "../runtime-dir.ts";
import { exists } from "./runner.ts";

export const pidFilePath = (host: string, port: number) =>
  join(runtimeDir(), `${host.replace(/[^\w.-]/g, "_")}-${port}.pid`);

/** Records this launcher's pid; returns the function that removes the file again. */
export function writePidFile(host: string, port: number): () => void {
  const path = pidFilePath(host, port);
  writeFileSync(path, `${process.pid}\n`, { mode: 0o600 });
  return () => {
    try {
      if (readFileSync(path, "utf8").trim() === String(process.pid)) rmSync(path);
    } catch {}
  };
}

/**
 * The control socket of host:port; `next`: the one a launcher taking over serves until the old
 * launcher has been told to go (src/launcher/takeover.ts).
 */
export const socketPath = (host: string, port: number, next = false) =>
  pidFilePath(host, port).replace(/\.pid$/, next ? ".next.sock" : ".sock");

/** A control file at least this old with no launcher behind it is a SIGKILLed launcher's. */
const STALE_AFTER_MS = 60_000;

/**
 * Removes what launchers killed by SIGKILL left in runtimeDir() (they had no time to): a control
 * socket that refuses connections (no launcher listens there), then a pid file whose socket is
 * gone and whose process too; each a minute old at least (a launcher listens on its socket as it
 * makes it, and writes its pid file right after). Else every SIGKILL leaves two files for good
 * (a machine that ran the fault tests for a day had 1,350).
 */
export async function sweepStaleControlFiles(): Promise<void> {
  const dir = runtimeDir();
  const old = (name: string) => {
    try {
      return Date.now() - statSync(join(dir, name)).mtimeMs > STALE_AFTER_MS;
    } catch {
      return false;
    }
  };
  const names = readdirSync(dir).filter(old);
  for (const name of names.filter((each) => each.endsWith(".sock"))) {
    const path = join(dir, name);
    // The same file after the asking: a launcher starting meanwhile may have replaced it.
    const asked = fileIdentity(path);
    if ((await refuses(path)) && asked !== undefined && fileIdentity(path) === asked)
      rmSync(path, { force: true });
  }
  for (const name of names.filter((each) => each.endsWith(".pid"))) {
    const path = join(dir, name);
    if (existsSync(path.replace(/\.pid$/, ".sock"))) continue;
    let pid: number;
    try {
      pid = Number(readFileSync(path, "utf8").trim());
    } catch {
      continue; // gone meanwhile
    }
    if (!Number.isInteger(pid) || pid <= 0 || !exists(pid)) rmSync(path, { force: true });
  }
}

/**
 * Which file `path` is, or undefined once it is gone: device, inode and change time (a file system
 * may give a new file the inode number of a removed one).
 */
function fileIdentity(path: string): string | undefined {
  try {
    const stat = statSync(path);
    return `${stat.dev}:${stat.ino}:${stat.ctimeMs}`;
  } catch {
    return undefined;
  }
}

/** True if nothing listens on the Unix socket `path` (the connection is refused). */
const refuses = (path: string) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(path, () => {
      socket.destroy();
      resolve(false);
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });

/** Every control socket file in runtimeDir(), taking-over ones included. */
export function controlSockets(): string[] {
  const dir = runtimeDir();
  return readdirSync(dir)
    .filter((name) => name.endsWith(".sock"))
    .map((name) => join(dir, name));
}

/**
 * The function that removes the socket file at exit; `promote` moves a `next` one into place;
 * `close` also stops answering (a launcher started as a library, once stopped).
 */
export type ControlSocket = (() => void) & { promote(): void; close(): void };

/** Another launcher answers on this host:port's control socket. */
export class LauncherLiveError extends Error {}

/**
 * The launcher's control socket (mode 0600, beside the pid file): a client writes a command line
 * (`status`, `reload`, `stop`, `pid`, `scale N`: the command's words after the first are its
 * arguments) and reads one JSON line. After `stop` the connection stays
 * open until the launcher has exited. Throws a LauncherLiveError if another launcher answers on
 * the socket; a stale one (its launcher is gone) is replaced. Returns the function that removes
 * the socket file at exit, if it is still ours.
 */
export async function serveControl(
  host: string,
  port: number,
  commands: Record<string, (args: string[]) => Promise<unknown>>,
  { next = false } = {},
): Promise<ControlSocket> {
  let path = socketPath(host, port, next);
  const server = createServer((socket) => {
    let line = "";
    socket.setEncoding("utf8");
    socket.on("error", () => {});
    socket.on("data", async (chunk) => {
      if (line.includes("\n")) return;
      line += chunk;
      if (!line.includes("\n")) return;
      const [name, ...args] = line.trim().split(/\s+/);
      const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
      // A command that throws answers its error: it must not end the launcher.
      const answer = command
        ? await command(args).catch((error: unknown) => ({
            error: (error as Error)?.message ?? String(error),
          }))
        : { error: `unknown command ${name}` };
      socket.write(`${JSON.stringify(answer)}\n`);
      if (name !== "stop") socket.end();
    });
  });
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
  const identity = () => fileIdentity(path);
  const inUse = (error: unknown) => (error as NodeJS.ErrnoException).code === "EADDRINUSE";
  try {
    await listen();
  } catch (error) {
    if (!inUse(error)) throw error;
    const stale = identity();
    await refuseLive(host, port, path, next);
    // Stale: its launcher is gone. Only that file is removed: a launcher started at the same
    // moment may have replaced it while this one asked, and then answers on the new one.
    if (stale !== undefined && identity() === stale) rmSync(path, { force: true });
    try {
      await listen();
    } catch (again) {
      if (inUse(again)) await refuseLive(host, port, path, next);
      throw again;
    }
  }
  chmodSync(path, 0o600);
  let ours = identity();
  server.unref();
  // At exit. Not server.close(): libuv would unlink the path, whoever's file it is by now.
  const remove = () => {
    try {
      if (identity() === ours) rmSync(path);
    } catch {}
  };
  // rename(2) replaces the old launcher's file in one step: a client finds one or the other.
  const bound = path;
  const promote = () => {
    const main = socketPath(host, port);
    if (path === main) return;
    renameSync(path, main);
    path = main;
    ours = identity();
  };
  // server.close() unlinks the path it was bound to: only where that is still our file. A promoted
  // socket was bound to the `next` name, which a launcher taking this one over may hold by now:
  // that one is only removed (nobody finds it), and its server stays open, unreferenced.
  const close = () => {
    if (identity() === ours && path === bound) server.close();
    else remove();
  };
  return Object.assign(remove, { promote, close });
}

/** Throws a LauncherLiveError if a launcher listens on `path`. */
async function refuseLive(host: string, port: number, path: string, next: boolean): Promise<void> {
  let answer: { pid?: number };
  try {
    answer = (await queryLauncher(host, port, "pid", { timeoutMs: 2000, next })) as { pid?: number };
  } catch (error) {
    if ((error as NoLauncherError).noLauncher) return;
    answer = {}; // it accepts but does not answer: alive all the same
  }
  throw new LauncherLiveError(
    next
      ? `another shardport launcher${answer.pid ? ` (pid ${answer.pid})` : ""} is taking over ${host}:${port} (it answers on ${path})`
      : `another shardport launcher${answer.pid ? ` (pid ${answer.pid})` : ""} serves ${host}:${port} (it answers on ${path})`,
  );
}

type NoLauncherError = Error & { noLauncher?: boolean };

/**
 * Sends `command` to the launcher on host:port and returns its JSON answer; with `untilClosed`,
 * once the launcher has closed the connection (after `stop`: once it has exited). `timeoutMs` 0
 * waits as long as the launcher stays connected. `next`: the socket of a launcher taking over;
 * `path`: that socket file.
 */
export function queryLauncher(
  host: string,
  port: number,
  command: string,
  { timeoutMs = 5000, untilClosed = false, next = false, path = socketPath(host, port, next) } = {},
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = "";
    let answer: unknown;
    const socket = connect(path, () => socket.write(`${command}\n`));
    socket.setEncoding("utf8");
    if (timeoutMs > 0)
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer from ${path}`)));
    socket.on("data", (chunk) => {
      text += chunk;
      if (answer !== undefined || !text.includes("\n")) return;
      try {
        answer = JSON.parse(text.slice(0, text.indexOf("\n")));
      } catch (error) {
        return socket.destroy(error as Error);
      }
      socket.setTimeout(0);
      if (!untilClosed) {
        resolve(answer);
        socket.destroy();
      }
    });
    socket.on("close", () =>
      answer === undefined ? reject(new Error(`${path} closed without an answer`)) : resolve(answer),
    );
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (answer !== undefined) return resolve(answer);
      if (error.code === "ENOENT" || error.code === "ECONNREFUSED") {
        const gone: NoLauncherError = new Error(`no shardport launcher for ${host}:${port} (no ${path})`);
        gone.noLauncher = true;
        return reject(gone);
      }
      reject(error);
    });
  });
}
