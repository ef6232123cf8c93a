/**
 * For the app: which shard and runtime is serving. Plain reads, safe in any runtime.
 * @module
 */
import process from "node:process";
import { SHARD_ENV, type ShardSpec } from "./protocol.ts";

/** This process's shard spec, or undefined when it was not started by the launcher. */
export function currentShard(): ShardSpec | undefined {
  const raw = process.env[SHARD_ENV];
  return raw ? (JSON.parse(raw) as ShardSpec) : undefined;
}

export function runtimeName(): "bun" | "deno" | "node" {
  if ("Bun" in globalThis) return "bun";
  if ("Deno" in globalThis) return "deno";
  return "node";
}
