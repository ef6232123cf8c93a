/**
 * The launcher's private folder: its pid files and control sockets (src/launcher/control.ts),
 * and on Node the shards' compile cache (runtimes/node.ts, the entry a Node shard loads too, so
 * this module is not in src/launcher/). Its own module so that the Node launcher can ask for it
 * before its first shards, without control.ts's node:net.
 * @module
 */
import { mkdirSync, statSync } from "node:fs";
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
