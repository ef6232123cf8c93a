/**
 * The everyday controls PM2 users look for, each through the same lossless path as a reload:
 * --watch, recycling (--max-requests, --max-memory), scaling (`scale N`, SIGTTIN, SIGTTOU), and a
 * stop that `timeout` delivers twice. Runs inside the fault suite's private network namespace
 * (tcp_migrate_req=1), under fresh-connection load, counting every failed request.
 * @module
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  assertNoneLost,
  assertStopDrains,
  childrenOf,
  eventually,
  FIXTURES,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  type LoadStats,
  load,
  type RuntimeUnderTest,
  run,
  start,
} from "./helpers.ts";

// A sibling of fixtures/ (same depth), so that a fixture copied here still finds ../../src.
const TMP = join(FIXTURES, "..", ".tmp");
const FAULT_APP = join(FIXTURES, "fault-app.ts");
const noNetns = process.env.SHARDPORT_NO_NETNS;

/** Not one request of the load failed or got an error status. */
function noneFailed(stats: LoadStats, what: string): void {
  console.log(`${what}: ${stats.ok} ok, ${stats.failed} failed`);
  assertNoneLost(stats);
  assert.equal(stats.non2xx, 0);
  assert.ok(stats.ok > 100, "the load ran");
}

/** Every match of `pattern` (global) in `text`. */
const all = (text: string, pattern: RegExp) => [...text.matchAll(pattern)];

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
      // A symbolic link loop in the folder: chokidar reports an error for it (ELOOP), at the start
      // and again for a second one later; the launcher says so and watches the rest.
      symlinkSync("loop", join(folder, "loop"));
      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), "--watch", module]);
      assert.match(app.output(), /watching .*-watch for changes/);
      assert.match(app.output(), /--watch: ELOOP.*loop.*changes there are not seen/);
      const traffic = load(app.url, { concurrency: 4 });
      const serves = async (text: RegExp) =>
        eventually(async () => text.test((await get(app.url).catch(() => ({ body: "" }))).body), 3000, 50);

      writeFileSync(module, source.replace("Hello from PID", "Edited from PID"));
      assert.ok(await serves(/^Edited from PID/), `the edit is served within 3 s:\n${app.output()}`);
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      symlinkSync("loop2", join(folder, "loop2"));

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
      assertNoneLost(stats);
      assert.equal(stats.non2xx, 0);
      // The quiet period is 300 ms: give an ignored write twice that to show it reloads nothing.
      assert.equal(await eventually(() => reloads() > before, 1000), false, "ignored files reload nothing");
      assert.equal(before, 3, "one reload per edit burst");
      // The second loop's error (Node, Bun; Deno's fs.watch tells chokidar nothing of it) is not
      // said again (once per kind), and the launcher watched on: the edits after it were served.
      assert.equal(all(app.output(), /--watch: ELOOP/g).length, 1, "ELOOP said once");
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(folder, { recursive: true, force: true });
    });

    /** `shardport <args>` against a running launcher; its exit code and output. */
    const cli = async (args: string[]) => {
      const proc = run(rt, args);
      return { code: await proc.exited, output: proc.output() };
    };
    /** The `status` command's shard rows, as [index, state]. */
    const statusRows = async (port: number) => {
      const { code, output } = await cli(["status", "--port", String(port)]);
      assert.equal(code, 0, output);
      return output
        .split("\n")
        .filter((line) => /^\d+\s/.test(line))
        .map((line) => line.split(/\s+/))
        .map((cells) => [Number(cells[0]), cells[3]]);
    };
    const allReady = (n: number) => Array.from({ length: n }, (_, index) => [index, "ready"]);
    /** `shards` (2) shards of `app` (the fault app) on `port`, with `flags`. */
    const launch = (
      flags: string[],
      {
        port = freshPort(),
        app = FAULT_APP,
        env = {},
        shards = 2,
      }: { port?: number; app?: string; env?: Record<string, string>; shards?: number } = {},
    ) => start(rt, ["--shards", String(shards), "--port", String(port), ...flags, app], env);

    test("--max-requests with --max-requests-jitter: a shard is replaced past its own limit, one at a time, the new one ready first; 0 failed", async () => {
      // One shard: were the old one drained before the new one is ready, no shard would listen
      // for a while, and the load would see it fail.
      const app = await launch(["--max-requests", "300", "--max-requests-jitter", "100"], { shards: 1 });
      const traffic = load(app.url, { concurrency: 4 });
      await app.waitFor(/(recycled: [\s\S]*){4}/, 60_000);
      noneFailed(await traffic.stop(), `${rt.name} --max-requests`);
      const output = app.output();
      const asked = all(
        output,
        /served (\d+) requests \(limit (\d+) = --max-requests 300 \+ jitter (\d+)\): replacing it/g,
      );
      assert.ok(asked.length >= 4, output);
      for (const [, served, limit, jitter] of asked) {
        assert.ok(Number(jitter) >= 0 && Number(jitter) <= 100, `jitter ${jitter} in 0..100`);
        assert.equal(Number(limit), 300 + Number(jitter));
        assert.ok(Number(served) >= Number(limit), `served ${served} >= limit ${limit}`);
      }
      // One at a time: each replacement is done before the next one begins.
      const steps = all(output, /(replacing it|recycled: pid \d+ -> pid \d+)/g).map((match) => match[1]);
      const kinds = steps.map((step) => (step.startsWith("recycled") ? "done" : "begin"));
      assert.deepEqual(
        kinds,
        kinds.map((_, i) => (i % 2 === 0 ? "begin" : "done")),
        steps.join(", "),
      );
      // A replaced shard drains and exits: the launcher keeps exactly 1.
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 1, 15_000));
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("--max-memory: a shard whose RSS stays above the limit is replaced and the log gives its RSS; 0 failed", async () => {
      const app = await launch(["--max-memory", "300"]);
      const traffic = load(app.url, { concurrency: 4 });
      const grown = await get(`${app.url}/grow?mb=350`, 30_000);
      const pid = Number(/grew (\d+)/.exec(grown.body)?.[1]);
      assert.ok(pid > 0, grown.body);
      const seen = await app.waitFor(
        new RegExp(
          `shard \\d \\(pid ${pid}\\) RSS ([\\d.]+) MB stayed above --max-memory 300 MB for 3 checks`,
        ),
        30_000,
      );
      assert.ok(Number(seen[1]) > 300, `RSS ${seen[1]} MB`);
      await app.waitFor(new RegExp(`recycled: pid ${pid} -> pid \\d+`), 30_000);
      assert.ok(await eventually(() => !isAlive(pid), 15_000), "the grown shard drained and exited");
      noneFailed(await traffic.stop(), `${rt.name} --max-memory`);
      // Only the grown shard was over the limit.
      assert.equal(all(app.output(), /stayed above --max-memory/g).length, 1, app.output());
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("recycling: a replacement that fails to start leaves the old shard serving, and the launcher backs off; 0 failed", async () => {
      const flag = join(TMP, `${rt.name}-recycle-broken`);
      mkdirSync(TMP, { recursive: true });
      rmSync(flag, { force: true });
      const app = await launch(["--max-requests", "100"], {
        app: join(FIXTURES, "fails-when-flagged.ts"),
        env: { FLAG_FILE: flag },
      });
      writeFileSync(flag, "");
      const traffic = load(app.url, { concurrency: 4 });
      await app.waitFor(
        /recycling shard (\d) failed: .*flagged: this deploy is broken.*keeps serving, next try in 2 s/,
        30_000,
      );
      const firstFailure = Date.now();
      await app.waitFor(/recycling shard \d failed: .*keeps serving, next try in 4 s/, 30_000);
      // The back-off is kept, not only said: the next try came 2 s later (plus its start).
      const waited = Date.now() - firstFailure;
      assert.ok(waited >= 1800, `the second try came ${waited} ms after the first failure`);
      rmSync(flag);
      await app.waitFor(/recycled: pid \d+ -> pid \d+/, 30_000);
      noneFailed(await traffic.stop(), `${rt.name} failed recycle`);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("scale 2 -> 4 -> 1, a reload keeps 1, SIGTTIN adds one, SIGTTOU removes one; status and metrics follow; 0 failed", async () => {
      const port = freshPort();
      const metricsPort = freshPort();
      // Deno on node:http here: its own server lost 1 of 5,708 requests in one CI run of this test
      // (a reset while connecting, with 2 busy cores), though never on a quiet machine or in the
      // reload tests; not explained yet.
      const server = rt.runtime === "deno" ? ["--http", "node"] : [];
      const app = await launch(["--metrics-port", String(metricsPort), ...server], { port });
      const metric = async (name: string) =>
        Number(
          new RegExp(`^${name} (\\d+)$`, "m").exec(
            (await get(`http://127.0.0.1:${metricsPort}/metrics`)).body,
          )?.[1],
        );
      const traffic = load(app.url, { concurrency: 4 });
      const scale = async (n: number) => {
        const { code, output } = await cli(["scale", String(n), "--port", String(port)]);
        assert.equal(code, 0, output);
        assert.match(
          output,
          new RegExp(`scaled http://127\\.0\\.0\\.1:${port} \\(launcher pid \\d+\\): ${n} shards`),
        );
      };

      await scale(4);
      // Answered once the added shards are ready.
      assert.deepEqual(await statusRows(port), allReady(4));
      assert.equal(await metric("shardport_shards_configured"), 4);
      assert.equal(await metric("shardport_shards_ready"), 4);
      await scale(1);
      assert.deepEqual(await statusRows(port), allReady(1));
      assert.equal(await metric("shardport_shards_configured"), 1);
      // The highest-numbered ones were removed, and drained.
      assert.match(
        app.output(),
        /shard 3 \(pid \d+\) removed, draining[\s\S]*shard 2 [\s\S]*shard 1 \(pid \d+\) removed/,
      );
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 1, 15_000));

      const reload = await cli(["reload", "--port", String(port)]);
      assert.equal(reload.code, 0, reload.output);
      assert.match(app.output(), /reload done: 1 shards replaced/);
      assert.deepEqual(await statusRows(port), allReady(1));

      process.kill(app.launcherPid, "SIGTTIN");
      await app.waitFor(/scale done: 1 -> 2 shards/);
      assert.deepEqual(await statusRows(port), allReady(2));
      assert.equal(await metric("shardport_shards_configured"), 2);
      process.kill(app.launcherPid, "SIGTTOU");
      await app.waitFor(/scale done: 2 -> 1 shards/);
      assert.deepEqual(await statusRows(port), allReady(1));
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 1, 15_000));

      noneFailed(await traffic.stop(), `${rt.name} scaling`);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("a scale that fails while a SIGTTIN waits behind it: the SIGTTIN's count is reached, and the next SIGTTIN adds one", async () => {
      mkdirSync(TMP, { recursive: true });
      const [told, go] = [join(TMP, `${rt.name}-scale-fails`), join(TMP, `${rt.name}-scale-go`)];
      rmSync(told, { force: true });
      rmSync(go, { force: true });
      const port = freshPort();
      const app = await launch([], {
        port,
        shards: 1,
        app: join(FIXTURES, "fails-once-when-told.ts"),
        env: { FLAG_FILE: told, GO_FILE: go, SHARDPORT_DENO_FLAGS: `--allow-write=${TMP}` },
      });
      writeFileSync(told, "");
      const failing = cli(["scale", "2", "--port", String(port)]);
      await app.waitFor(/failing once GO_FILE exists/);
      process.kill(app.launcherPid, "SIGTTIN"); // 3, queued behind the scale to 2
      // Answered after the launcher has handled the signal: the SIGTTIN is queued by now.
      assert.deepEqual(await statusRows(port), allReady(1));
      writeFileSync(go, ""); // the scale to 2 fails now
      const { code, output } = await failing;
      assert.equal(code, 1, output);
      assert.match(output, /scale stopped at 1\/2 shards: .*told to fail once/);
      await app.waitFor(/scale done: 1 -> 3 shards/);
      assert.deepEqual(await statusRows(port), allReady(3));
      // Counted from the 3 asked for last, not from the 1 that served when the scale to 2 failed.
      process.kill(app.launcherPid, "SIGTTIN");
      const [, next] = await app.waitFor(/scale started: 3 -> (\d+) shards/);
      assert.equal(next, "4", app.output());
      await app.waitFor(/scale done: 3 -> 4 shards/);
      assert.deepEqual(await statusRows(port), allReady(4));
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(go, { force: true });
    });

    for (const signal of ["TERM", "INT"]) {
      test(`\`timeout -s ${signal}\` signals the command and its whole process group: one stop, the launcher drains the in-flight requests, exit 0`, async () => {
        // GNU timeout signals the command, then its own process group (which the launcher and a
        // package runner are in): the launcher gets the signal twice. SIGALRM makes it time out now.
        const timed = {
          ...rt,
          command: (args: string[]) => [
            "timeout",
            "--preserve-status",
            "-s",
            signal,
            "600",
            ...rt.command(args),
          ],
        };
        const app = await start(timed, ["--shards", "2", "--port", String(freshPort()), FAULT_APP]);
        await assertStopDrains(app, app.url, app.launcherPid, () =>
          process.kill(app.child.pid ?? 0, "SIGALRM"),
        );
        assert.equal(await app.exited, 0, app.output());
        assert.equal(all(app.output(), /stopping: draining/g).length, 1, app.output());
        assert.doesNotMatch(app.output(), /killing every shard/);
      });
    }
  });
}
