import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { freshPort, get, RUNTIMES, start } from "./helpers.ts";
import { shardSuite } from "./suite.ts";

shardSuite(RUNTIMES.deno);

describe("deno permissions", () => {
  for (const mode of ["process", "threads"]) {
    test(`a shard (${mode} mode) may serve its port and read the app, nothing more`, async () => {
      const args = ["--shards", "2", "--port", String(freshPort()), "--mode", mode];
      const app = await start(RUNTIMES.deno, [...args, "test/fixtures/deno-permissions.ts"]);
      assert.doesNotMatch(app.output(), /get the launcher's permissions/);
      for (let i = 0; i < 4; i++) {
        const reply = await get(app.url);
        assert.equal(reply.status, 200, reply.body);
        assert.deepEqual(JSON.parse(reply.body), {
          run: "NotCapable",
          write: "NotCapable",
          listen: "NotCapable",
          read: "NotCapable",
        });
      }
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });
  }
});
