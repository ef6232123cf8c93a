/**
 * The everyday controls PM2 users look for, each through the same lossless path as a reload:
 * --watch (and later recycling and scaling). Runs inside the fault suite's private network
 * namespace (tcp_migrate_req=1), under fresh-connection load, counting every failed request.
 * @module
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  eventually,
  FIXTURES,
  freshPort,
  get,
  killLeftovers,
  load,
  type RuntimeUnderTest,
  start,
} from "./helpers.ts";

// A sibling of fixtures/ (same depth), so that a fixture copied here still finds ../../src.
const TMP = join(FIXTURES, "..", ".tmp");
const noNetns = process.env.SHARDPORT_NO_NETNS;

export function controlsSuite(rt: RuntimeUnderTest): void {
  describe(`controls on ${rt.name}`, {
    skip: noNetns ? `no private network namespace: ${noNetns}` : false,
  }, () => {
    after(killLeftovers);

    test("--watch: an edit is served within 3 s, a broken edit leaves the old code serving, the fix is served; 0 failed", async () => {
      const folder = join(TMP, `${rt.name}-watch`);
      rmSync(folder, { recursive: true, force: true });
      mkdirSync(folder, { recursive: true });
      const module = join(folder, "app.ts");
      const source = readFileSync(join(FIXTURES, "fault-app.ts"), "utf8").replaceAll(
        "../../src/",
        "../../../src/",
      );
      writeFileSync(module, source);
      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), "--watch", module]);
      assert.match(app.output(), /watching .*-watch for changes/);
      const traffic = load(app.url, { concurrency: 4 });
      const serves = async (text: RegExp) =>
        eventually(async () => text.test((await get(app.url).catch(() => ({ body: "" }))).body), 3000, 50);

      writeFileSync(module, source.replace("Hello from PID", "Edited from PID"));
      assert.ok(await serves(/^Edited from PID/), `the edit is served within 3 s:\n${app.output()}`);
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);

      // Written in two steps, as an editor may: one reload, refused; the running shards serve on.
      writeFileSync(module, 'throw new Error("broken edit");\n');
      writeFileSync(module, 'throw new Error("broken edit");\nexport default {};\n');
      await app.waitFor(/reload stopped at 1\/2: .*broken edit.*the running shards keep serving/);
      assert.match((await get(app.url)).body, /^Edited from PID/);

      writeFileSync(module, source.replace("Hello from PID", "Fixed from PID"));
      assert.ok(await serves(/^Fixed from PID/), "the fixed edit is served within 3 s");
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 2\)/);
      // A write under node_modules or a dotfile is not the app's: no reload.
      const reloads = () => (app.output().match(/watch: .* changed, reloading/g) ?? []).length;
      const before = reloads();
      mkdirSync(join(folder, "node_modules"), { recursive: true });
      writeFileSync(join(folder, "node_modules", "x.js"), "");
      writeFileSync(join(folder, ".env"), "X=1\n");
      const stats = await traffic.stop();
      console.log(`${rt.name} --watch: ${stats.ok} ok, ${stats.failed} failed during 3 reloads`);
      assert.equal(stats.failed, 0, stats.errors.join("; "));
      assert.equal(stats.non2xx, 0);
      // The quiet period is 300 ms: give an ignored write twice that to show it reloads nothing.
      assert.equal(await eventually(() => reloads() > before, 1000), false, "ignored files reload nothing");
      assert.equal(before, 3, "one reload per edit burst");
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(folder, { recursive: true, force: true });
    });
  });
}
