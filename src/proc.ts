/**
 * The process as `process` and node: modules tell it: the launcher's Proc (src/types.ts) on Bun
 * and Node. Nothing is touched until asked, and node:fs and node:os load only when used.
 * @module
 */
import type { Proc, Runtime } from "./types.ts";

export const nodeProc: Proc = {
  args: () => process.argv.slice(2),
  env: () => process.env,
  pid: () => process.pid,
  platform: () => process.platform,
  cwd: () => process.cwd(),
  cpus: () => process.getBuiltinModule("node:os").availableParallelism(),
  isFile: (path) =>
    process
      .getBuiltinModule("node:fs")
      .promises.stat(path)
      .then(
        (stats) => stats.isFile(),
        () => false,
      ),
  exists: (path) => process.getBuiltinModule("node:fs").existsSync(path),
  onSignal: (signal, listener) => process.on(signal, listener),
  offSignal: (signal, listener) => process.off(signal, listener),
  exit: (code) => process.exit(code),
};

/** The runtime's own Proc, else `process`'s. */
export const procOf = (runtime: Pick<Runtime, "proc">): Proc => runtime.proc ?? nodeProc;
