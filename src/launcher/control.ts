/**
 * How scripts reach a running launcher: a pid file per host:port in a directory that only the
 * launching user can use, read by `shardport reload` and `shardport stop`; and a control socket
 * beside it that answers `shardport status`.
 * @module
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** `$XDG_RUNTIME_DIR/shardport`, else `<tmp>/shardport-<uid>`; created 0700, refused if not ours. */
export function runtimeDir(): string {
  const uid = process.getuid?.();
  const dir = process.env.XDG_RUNTIME_DIR
    ? join(process.env.XDG_RUNTIME_DIR, "shardport")
    : join(tmpdir(), `shardport-${uid ?? "user"}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = statSync(dir);
  if ((uid !== undefined && stat.uid !== uid) || (stat.mode & 0o077) !== 0) {
    throw new Error(`${dir} must belong to you with mode 0700: remove it and start again`);
  }
  return dir;
}

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

/** Sends `signal` to the launcher serving host:port; returns its pid or throws why it cannot. */
export function signalLauncher(host: string, port: number, signal: "SIGHUP" | "SIGTERM"): number {
  const path = pidFilePath(host, port);
  let pid: number;
  try {
    pid = Number(readFileSync(path, "utf8").trim());
  } catch {
    throw new Error(`no shardport launcher for ${host}:${port} (no ${path})`);
  }
  try {
    process.kill(pid, signal);
  } catch {
    throw new Error(`no shardport launcher for ${host}:${port} (pid ${pid} from ${path} is gone)`);
  }
  return pid;
}

const socketPath = (host: string, port: number) => pidFilePath(host, port).replace(/\.pid$/, ".sock");

/**
 * The launcher's control socket (mode 0600, beside the pid file): a client writes a command
 * line (`status`) and reads one JSON answer. Returns the function that closes and removes it.
 */
export async function serveControl(
  host: string,
  port: number,
  commands: Record<string, () => Promise<unknown>>,
): Promise<() => void> {
  const path = socketPath(host, port);
  rmSync(path, { force: true });
  const server = createServer((socket) => {
    let line = "";
    socket.setEncoding("utf8");
    socket.on("error", () => {});
    socket.on("data", async (chunk) => {
      line += chunk;
      if (!line.includes("\n")) return;
      const command = commands[line.trim()];
      const answer = command ? await command() : { error: `unknown command ${line.trim()}` };
      socket.end(`${JSON.stringify(answer)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, resolve);
  });
  chmodSync(path, 0o600);
  server.unref();
  return () => {
    server.close();
    rmSync(path, { force: true });
  };
}

/** Sends `command` to the launcher on host:port and returns its JSON answer. */
export function queryLauncher(host: string, port: number, command: string): Promise<unknown> {
  const path = socketPath(host, port);
  return new Promise((resolve, reject) => {
    let text = "";
    const socket = connect(path, () => socket.write(`${command}\n`));
    socket.setEncoding("utf8");
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer from ${path}`)));
    socket.on("data", (chunk) => {
      text += chunk;
    });
    socket.on("end", () => resolve(JSON.parse(text)));
    socket.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT" || error.code === "ECONNREFUSED"
          ? new Error(`no shardport launcher for ${host}:${port} (no ${path})`)
          : error,
      ),
    );
  });
}
