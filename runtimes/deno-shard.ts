/**
 * A Deno shard process's entry (runtimes/deno.ts spawns it): the shard side only. Not the
 * launcher's entry, whose node: modules (child_process, fs, path, url, worker_threads) cost a
 * Deno process about 13 ms of CPU before it could listen; Node's own layer still loads, for the
 * IPC channel to the launcher (`process.send`).
 * @module
 */
import { shardMain } from "../src/main.ts";
import { denoMemory, listenDeno } from "./deno-serve.ts";

shardMain({ name: "deno", listen: listenDeno, memoryUsage: denoMemory });
