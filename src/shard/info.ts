/**
 * For the app: which shard, process and runtime is serving. Plain reads, safe in any runtime and
 * in any shard (process or thread). Import it as `shardport/shard`.
 * @module
 */
import { SHARD_ENV, type ShardSpec } from "../protocol.ts";

/** Where a shard puts its spec before it imports the app (each thread has its own globalThis). */
const SPEC = Symbol.for("shardport.shard");
const state = globalThis as { [SPEC]?: ShardSpec };
// Deno's `process` global loads its Node compatibility layer: a few MB in every Deno thread.
const deno = (globalThis as { Deno?: { pid: number; env: { get(name: string): string | undefined } } }).Deno;

/** Called by the shard before it loads the app. */
export function setCurrentShard(spec: ShardSpec): void {
  state[SPEC] = spec;
}

/**
 * This shard's spec (index, generation, host, port...), or undefined outside a shard. In a shard
 * process it is also in the environment as SHARDPORT_SHARD; Deno's shard threads share the
 * launcher's environment, so read it here.
 */
export function currentShard(): ShardSpec | undefined {
  if (state[SPEC]) return state[SPEC];
  const raw = deno ? deno.env.get(SHARD_ENV) : process.env[SHARD_ENV];
  return raw ? (JSON.parse(raw) as ShardSpec) : undefined;
}

/** The pid of the process serving (in threads mode, every shard's). */
export function currentPid(): number {
  return deno ? deno.pid : process.pid;
}

export function runtimeName(): "bun" | "deno" | "node" {
  if ("Bun" in globalThis) return "bun";
  if (deno) return "deno";
  return "node";
}
