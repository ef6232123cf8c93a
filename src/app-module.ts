/**
 * The launcher's check of the user's app module before any shard starts: it must be a file, and
 * import to something with `fetch` (the same import every shard then does, src/app-import.ts).
 * @module
 */
import { statSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { AppModuleError, importApp } from "./app-import.ts";
import type { FetchApp, Runtime } from "./types.ts";

export { AppModuleError };

export async function loadApp(path: string, runtime: Pick<Runtime, "loadTypeScript">): Promise<FetchApp> {
  try {
    if (!statSync(path).isFile()) throw new AppModuleError(`app module ${path} is not a file`);
  } catch (error) {
    if (error instanceof AppModuleError) throw error;
    throw new AppModuleError(`app module not found: ${path}`);
  }
  return importApp(pathToFileURL(path).href, path, runtime);
}
