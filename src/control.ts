/**
 * How scripts reach a running launcher: a pid file per host:port in a directory that only the
 * launching user can use, read by `shardport reload` and `shardport stop`.
 * @module
 */
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
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
