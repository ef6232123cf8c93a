/**
 * Importing the user's app module by URL and checking that it serves `fetch`: what every shard
 * does. Imports nothing from node:, so a Deno shard thread does not load Deno's Node layer for it.
 * @module
 */
import type { FetchApp, Runtime } from "../types.ts";

/** The app module is missing, throws at import, or has no fetch: exit 2. */
export class AppModuleError extends Error {}

const firstLine = (error: unknown) => String((error as Error)?.message ?? error).split("\n")[0];

export async function importApp(
  url: string,
  path: string,
  runtime: Pick<Runtime, "loadTypeScript">,
): Promise<FetchApp> {
  if (/\.[mc]?tsx?$/.test(path)) {
    try {
      await runtime.loadTypeScript?.();
    } catch (error) {
      throw new AppModuleError(`app module ${path} is TypeScript: ${firstLine(error)}`);
    }
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
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
