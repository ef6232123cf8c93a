/**
 * Loading the user's app module: the same code in the launcher (to refuse a bad module before
 * any shard starts) and in each shard.
 * @module
 */
import { statSync } from "node:fs";
import { pathToFileURL } from "node:url";
import type { FetchApp, Runtime } from "./types.ts";

/** The app module is missing, throws at import, or has no fetch: exit 2. */
export class AppModuleError extends Error {}

const firstLine = (error: unknown) => String((error as Error)?.message ?? error).split("\n")[0];

export async function loadApp(path: string, runtime: Runtime): Promise<FetchApp> {
  try {
    if (!statSync(path).isFile()) throw new AppModuleError(`app module ${path} is not a file`);
  } catch (error) {
    if (error instanceof AppModuleError) throw error;
    throw new AppModuleError(`app module not found: ${path}`);
  }
  if (/\.[mc]?tsx?$/.test(path)) await runtime.loadTypeScript?.();
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(path).href);
  } catch (error) {
    throw new AppModuleError(`app module ${path} failed to load: ${firstLine(error)}`);
  }
  const candidate = (mod.default ?? mod) as Partial<FetchApp> | undefined;
  if (typeof candidate?.fetch !== "function") {
    throw new AppModuleError(
      `app module ${path} exports no fetch: default-export a Hono app or an object with fetch(request)`,
    );
  }
  // Bound once here, so the runtime calls the handler directly on every request.
  return { fetch: candidate.fetch.bind(candidate) };
}
