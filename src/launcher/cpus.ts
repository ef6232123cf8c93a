/**
 * The default shard count: the CPUs this process may really use. A container's CPU quota
 * (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`) wins over the affinity mask, which wins over
 * the machine's CPU count: starting more shards than the quota allows only adds contention.
 * @module
 */
import { nodeProc } from "../proc.ts";
import type { Proc } from "../types.ts";

/** Reads a file as text; a runtime whose fs guards /proc and /sys (Deno) passes its own. */
export type ReadText = (path: string) => string;

/** A file's text through node:fs: ReadText where the runtime reads /proc and /sys itself. */
export const readFs: ReadText = (path) => process.getBuiltinModule("node:fs").readFileSync(path, "utf8");

/** CPUs allowed by the tightest quota on this process's cgroup path, or undefined if none. */
export function cgroupCpuLimit(readText: ReadText = readFs, proc: Proc = nodeProc): number | undefined {
  const read = (path: string) => {
    try {
      return readText(path).trim() || undefined;
    } catch {
      return undefined;
    }
  };
  // Tests point these at fake cgroup files.
  const env = proc.env();
  const root = env.SHARDPORT_CGROUP_ROOT ?? "/sys/fs/cgroup";
  const self = read(env.SHARDPORT_PROC_CGROUP ?? `/proc/${proc.pid()}/cgroup`) ?? "";
  let limit: number | undefined;
  const consider = (quota: number, period: number) => {
    if (quota > 0 && period > 0) limit = Math.min(limit ?? Infinity, quota / period);
  };
  for (const line of self.split("\n")) {
    const [id, controllers, path] = line.split(":");
    if (path === undefined) continue;
    // Walk from the process's own cgroup up to the root: every ancestor's quota applies.
    const parts = path.split("/").filter(Boolean);
    for (let depth = parts.length; depth >= 0; depth--) {
      const dir = parts.slice(0, depth).join("/");
      if (id === "0" && controllers === "") {
        const max = read(`${root}/${dir}/cpu.max`)?.split(/\s+/);
        if (max && max[0] !== "max") consider(Number(max[0]), Number(max[1] ?? 100000));
      } else if (controllers?.split(",").includes("cpu")) {
        const base = `${root}/cpu,cpuacct/${dir}`;
        const v1 = read(`${base}/cpu.cfs_quota_us`) ? base : `${root}/cpu/${dir}`;
        consider(Number(read(`${v1}/cpu.cfs_quota_us`)), Number(read(`${v1}/cpu.cfs_period_us`)));
      }
    }
  }
  return limit;
}

/** How many shards to start when neither --shards nor SHARDS says. */
export function defaultShardCount(readText: ReadText = readFs, proc: Proc = nodeProc): number {
  const quota = cgroupCpuLimit(readText, proc);
  const usable = proc.cpus();
  return Math.max(1, Math.min(usable, quota === undefined ? usable : Math.ceil(quota)));
}
