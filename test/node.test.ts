import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { eventually, freshPort, get, RUNTIMES, start } from "./helpers.ts";
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

describe("control files", () => {
  test("a launcher removes the control socket and pid file a SIGKILLed launcher left once they are a minute old; newer files and its own stay", async () => {
    const home = mkdtempSync(join(tmpdir(), "shardport-control-files-"));
    const dir = join(home, "shardport");
    const env = { XDG_RUNTIME_DIR: home };
    try {
      const killedPort = freshPort();
      const killed = await start(RUNTIMES.node, ["--shards", "1", "--port", String(killedPort)], env);
      process.kill(killed.launcherPid, "SIGKILL");
      await killed.exited;
      const left = [`127.0.0.1-${killedPort}.sock`, `127.0.0.1-${killedPort}.pid`].map((name) =>
        join(dir, name),
      );
      assert.ok(
        left.every((path) => existsSync(path)),
        "a SIGKILLed launcher leaves both",
      );
      const twoMinutesAgo = new Date(Date.now() - 120_000);
      for (const path of left) utimesSync(path, twoMinutesAgo, twoMinutesAgo);
      // Refuses connections too, but was just made (a launcher making its socket): it stays.
      const recent = join(dir, "127.0.0.1-1.sock");
      writeFileSync(recent, "");
      const port = freshPort();
      const next = await start(RUNTIMES.node, ["--shards", "1", "--port", String(port)], env);
      // A live launcher's files as old as the dead one's (its sweep comes 2 s after its start):
      // it answers on its socket, so they stay.
      const own = [`127.0.0.1-${port}.sock`, `127.0.0.1-${port}.pid`].map((name) => join(dir, name));
      for (const path of own) utimesSync(path, twoMinutesAgo, twoMinutesAgo);
      try {
        assert.ok(
          await eventually(() => left.every((path) => !existsSync(path)), 10_000),
          "the old pair goes",
        );
        assert.ok(existsSync(recent), "a file just made stays");
        assert.ok(
          own.every((path) => existsSync(path)),
          "a live launcher's socket and pid file stay",
        );
      } finally {
        process.kill(next.launcherPid, "SIGTERM");
      }
      assert.equal(await next.exited, 0);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
