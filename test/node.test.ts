import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { freshPort, get, RUNTIMES, start } from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.node);

describe("node compile cache", () => {
  test("the launcher's shards keep Node's compile cache in its private folder; the next start compiles the app from it", async () => {
    const home = mkdtempSync(join(tmpdir(), "shardport-compile-cache-"));
    const args = () => ["--shards", "1", "--port", String(freshPort()), "src/app.ts"];
    try {
      const first = await start(RUNTIMES.node, args(), { XDG_RUNTIME_DIR: home });
      assert.equal((await get(first.url)).status, 200);
      process.kill(first.launcherPid, "SIGTERM");
      assert.equal(await first.exited, 0);
      assert.ok(readdirSync(join(home, "shardport", "node-compile-cache")).length > 0, "a cache is written");
      const env = { XDG_RUNTIME_DIR: home, NODE_DEBUG_NATIVE: "COMPILE_CACHE" };
      const second = await start(RUNTIMES.node, args(), env);
      try {
        assert.equal((await get(second.url)).status, 200);
        // The shard's TypeScript app: its stripped source and its V8 code both from the cache.
        assert.match(
          second.output(),
          /retrieving transpile cache for StrippedTypeScript \S+\/src\/app\.ts\.\.\.success/,
        );
        assert.match(second.output(), /V8 code cache for ESM \S+\/src\/app\.ts was accepted/);
      } finally {
        process.kill(second.launcherPid, "SIGTERM");
      }
      assert.equal(await second.exited, 0);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
