/**
 * `--takeover` under fresh-connection load, inside the fault suite's private network namespace
 * (tcp_migrate_req=1): a chain of launchers across runtimes and options loses no request; a new
 * launcher that cannot start, or whose canary fails, leaves the old one untouched. One suite
 * per runtime of the new launcher (test/takeover/*.test.ts), the chain in test/takeover/node.
 * @module
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { queryLauncher } from "../src/launcher/control.ts";
import { tcpListeners } from "../src/launcher/port-holder.ts";
import {
  assertNoneLost,
  childrenOf,
  eventually,
  FIXTURES,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  load,
  pidOf,
  RUNTIMES,
  type RuntimeUnderTest,
  run,
  start,
} from "./helpers.ts";

const FAULT_APP = join(FIXTURES, "fault-app.ts");
const noNetns = process.env.SHARDPORT_NO_NETNS;
const skip = noNetns ? `no private network namespace: ${noNetns}` : false;

/** Lets the load run: `count` more answers than now. */
async function flowing(traffic: ReturnType<typeof load>, count = 300): Promise<void> {
  const mark = traffic.stats.ok + traffic.stats.non2xx;
  const flows = await eventually(() => traffic.stats.ok + traffic.stats.non2xx >= mark + count, 30_000);
  assert.ok(flows, "the load is flowing");
}

/** 100 fresh connections to `url`: every one answered by one of the launcher's shards. */
async function onlyShardsOf(url: string, launcherPid: number): Promise<void> {
  const own = new Set([launcherPid, ...childrenOf(launcherPid)]);
  for (let i = 0; i < 100; i++) {
    const pid = pidOf((await get(url)).body);
    assert.ok(own.has(pid), `pid ${pid} is not of launcher ${launcherPid}`);
  }
}

/** The old launcher was never told to stop: its shards serve on, alone; then it stops cleanly. */
async function untouched(first: Awaited<ReturnType<typeof start>>, shards: number[]): Promise<void> {
  assert.doesNotMatch(first.output(), /stopping/);
  assert.deepEqual(childrenOf(first.launcherPid).sort(), shards.sort(), "the old shards serve on");
  const port = Number(new URL(first.url).port);
  const status = (await queryLauncher("127.0.0.1", port, "status")) as { launcherPid: number };
  assert.equal(status.launcherPid, first.launcherPid, "its control socket is still its own");
  await onlyShardsOf(first.url, first.launcherPid);
  process.kill(first.launcherPid, "SIGTERM");
  assert.equal(await first.exited, 0);
}

export function takeoverSuite(rt: RuntimeUnderTest): void {
  // The old launcher runs another runtime.
  const old = rt.runtime === "node" ? RUNTIMES.bun : RUNTIMES.node;

  describe(`takeover to ${rt.name}`, { skip }, () => {
    after(killLeftovers);

    /** The old launcher (2 shards) under fresh-connection load. */
    async function oldUnderLoad() {
      const port = String(freshPort());
      const first = await start(old, ["--shards", "2", "--port", port, FAULT_APP]);
      const traffic = load(first.url, { concurrency: 4 });
      await flowing(traffic);
      return { port, first, shards: childrenOf(first.launcherPid), traffic };
    }

    test(`from ${old.name}: new shards that do not all get ready exit 1, the old launcher untouched, 0 lost`, async () => {
      const { port, first, shards, traffic } = await oldUnderLoad();
      const args = ["--shards", "2", "--port", port, "--takeover", "--ready-timeout", "100"];
      const next = run(rt, [...args, join(FIXTURES, "slow-start.ts")]);
      assert.equal(await next.exited, 1, next.output());
      assert.match(next.output(), /takeover: starting 2 shards beside launcher pid \d+/);
      assert.match(
        next.output(),
        /shardport: error: cannot serve on .*: shard \d was not ready within 100 ms/,
      );
      await flowing(traffic);
      const stats = await traffic.stop();
      assertNoneLost(stats);
      assert.equal(stats.non2xx, 0);
      await untouched(first, shards);
    });

    test(`from ${old.name}: a canary that answers 500 rolls back (exit 1, one line), status shows it, the old shards serve on, 0 lost`, async () => {
      const { port, first, shards, traffic } = await oldUnderLoad();
      const args = ["--shards", "2", "--port", port, "--takeover", "--canary", "3"];
      const next = run(rt, [...args, join(FIXTURES, "answers-500.ts")]);
      await next.waitFor(/canary: serving beside launcher pid \d+ for 3 s/);
      const status = run(RUNTIMES.node, ["status", "--port", port]);
      assert.equal(await status.exited, 0, status.output());
      assert.match(status.output(), new RegExp(`launcher pid ${first.launcherPid}, 0 reloads`));
      assert.match(
        status.output(),
        new RegExp(`taking over from launcher pid ${first.launcherPid}: canary in progress, \\d s left`),
      );
      assert.equal(await next.exited, 1, next.output());
      const lines = next
        .output()
        .split("\n")
        .filter((line) => line.startsWith("shardport:"));
      assert.equal(lines.length, 1, next.output());
      assert.match(lines[0], /^shardport: error: canary failed: 5xx 100\.0 % vs 0\.0 % over 3 s$/);
      await flowing(traffic);
      const stats = await traffic.stop();
      console.log(
        `canary on ${rt.name}: ${stats.non2xx} answers 500 from the canary, ${stats.ok} ok, ${stats.failed} failed`,
      );
      assertNoneLost(stats);
      assert.ok(stats.non2xx > 0, "the canary got its share");
      await untouched(first, shards);
    });

    // What it checks is the launcher's, the same for every runtime: run once (CI's time).
    const once = rt.runtime === "node" ? false : "the same code as on node (run there)";
    test(`from ${old.name}: a stop during the canary, with a new shard draining past its end, leaves the old launcher serving; 0 lost`, {
      skip: once,
    }, async () => {
      const { port, first, shards, traffic } = await oldUnderLoad();
      const args = [
        "--shards",
        "2",
        "--port",
        port,
        "--takeover",
        "--canary",
        "5",
        "--drain-timeout",
        "30000",
      ];
      const next = run(rt, [...args, FAULT_APP]);
      await next.waitFor(/canary: serving beside launcher pid \d+ for 5 s/);
      // A request in flight on a new shard until after the canary's end: slow requests on fresh
      // connections until one lands there (each does with a chance of 1 in 2).
      const { pid: nextPid } = (await queryLauncher("127.0.0.1", Number(port), "pid", { next: true })) as {
        pid: number;
      };
      const newShards = () => childrenOf(nextPid);
      const onNewShard = () =>
        newShards().some((pid) => next.output().includes(`slow request started in ${pid}`));
      const slow: ReturnType<typeof get>[] = [];
      for (let i = 0; i < 40 && !onNewShard(); i++) {
        slow.push(get(`${first.url}/slow?ms=8000`, 30_000));
        await eventually(
          () => onNewShard() || first.output().split("slow request started").length > slow.length,
          5000,
        );
      }
      assert.ok(onNewShard(), "a slow request is in flight on a new shard");
      process.kill(nextPid, "SIGTERM");
      assert.equal(await next.exited, 0, next.output());
      for (const reply of await Promise.all(slow))
        assert.equal(reply.status, 200, "a slow request completed");
      await flowing(traffic);
      const stats = await traffic.stop();
      assertNoneLost(stats);
      await untouched(first, shards);
      // Said as the stop begins, before the drain: with no request held, the drain is over and
      // the process gone before the canary ends.
      const abandoned = next
        .output()
        .search(/takeover abandoned: this launcher is stopping; launcher pid \d+ serves on/);
      assert.ok(abandoned >= 0, next.output());
      assert.ok(abandoned < next.output().indexOf("stopping: draining"), next.output());
    });
  });
}

/** The time of the first JSON log line in `output` that matches `pattern` (ms since the epoch). */
function logTime(output: string, pattern: RegExp): number {
  const line = output.split("\n").find((each) => each.startsWith("{") && pattern.test(each));
  return line ? Date.parse(JSON.parse(line).time) : Number.NaN;
}

/**
 * node → bun (threads, 3 shards, a canary that passes) → deno (--http node) → node, under
 * fresh-connection load: 0 lost, each old launcher exits 0, only the last one's pids answer.
 */
export function takeoverChain(): void {
  describe("takeover chain", { skip }, () => {
    after(killLeftovers);

    test("node → bun (threads, canary) → deno (--http node) → node under load: 0 lost, each old launcher exits 0", async () => {
      const port = String(freshPort());
      const steps: [RuntimeUnderTest, string[]][] = [
        [RUNTIMES.node, ["--shards", "2"]],
        [RUNTIMES.bun, ["--shards", "3", "--mode", "threads", "--canary", "2", "--canary-p99", "20"]],
        [RUNTIMES.deno, ["--shards", "2", "--http", "node"]],
        [RUNTIMES.node, ["--shards", "2"]],
      ];
      let current = await start(steps[0][0], [...steps[0][1], "--port", port, FAULT_APP]);
      const traffic = load(current.url, { concurrency: 8 });
      const gone: number[] = [];
      for (const [rt, options] of steps.slice(1)) {
        await flowing(traffic);
        const before = current;
        gone.push(before.launcherPid, ...childrenOf(before.launcherPid));
        current = await start(rt, [...options, "--port", port, "--takeover", FAULT_APP]);
        assert.match(
          current.output(),
          new RegExp(`takeover: launcher pid ${before.launcherPid} is draining`),
        );
        if (options.includes("--canary"))
          assert.match(current.output(), /canary passed: 5xx 0\.0 % vs 0\.0 %, p99 /);
        assert.equal(await before.exited, 0, before.output());
        await current.waitFor(new RegExp(`takeover done: launcher pid ${before.launcherPid} has exited`));
        // Said once the old launcher has gone, not before (Deno's launcher once read no /proc file
        // of another process and took the old launcher for gone at once).
        assert.ok(
          logTime(current.output(), /takeover done/) >= logTime(before.output(), /"message":"stopped"/),
          `takeover done before the old launcher stopped:\n${current.output()}\n${before.output()}`,
        );
      }
      await flowing(traffic);
      const stats = await traffic.stop();
      console.log(
        `takeover chain: ${stats.ok} ok, ${stats.failed} failed, ${stats.non2xx} non-2xx, by ${stats.pids.size} pids`,
      );
      assertNoneLost(stats);
      assert.equal(stats.non2xx, 0);
      assert.ok(await eventually(() => !gone.some(isAlive), 15_000), "no process of an old launcher remains");
      assert.equal(tcpListeners(Number(port)).length, 2, "only the last launcher's 2 shards listen");
      await onlyShardsOf(current.url, current.launcherPid);
      const status = (await queryLauncher("127.0.0.1", Number(port), "status")) as { launcherPid: number };
      assert.equal(status.launcherPid, current.launcherPid, "the control socket is the last launcher's");
      process.kill(current.launcherPid, "SIGTERM");
      assert.equal(await current.exited, 0);
    });

    test("an old launcher that drains longer than the new one's wait for it, under a parent that never reaps it: the new one serves metrics once it has exited (a zombie), no exit", async () => {
      const port = String(freshPort());
      const metricsPort = String(freshPort());
      const common = ["--shards", "1", "--port", port, "--metrics-port", metricsPort];
      // The launcher's parent becomes `sleep`, which never waits for it: once it exits, its pid
      // stays, a zombie, until the sleep ends (the test ends it).
      const unreaped: RuntimeUnderTest = {
        name: "node under a parent that never reaps",
        runtime: "node",
        command: (args) => ["sh", "-c", 'node dist/node.js "$@" & exec sleep 120', "sh", ...args],
      };
      const first = await start(unreaped, [...common, "--drain-timeout", "30000", FAULT_APP]);
      try {
        // In flight on the old shard well past the new launcher's wait (its --drain-timeout + 5 s).
        const slow = get(`${first.url}/slow?ms=9000`, 30_000);
        await first.waitFor(/slow request started/);
        const next = run(RUNTIMES.node, [...common, "--drain-timeout", "500", "--takeover", FAULT_APP]);
        await next.waitFor(new RegExp(`takeover: launcher pid ${first.launcherPid} is draining`));
        assert.equal((await slow).status, 200, "the old shard's request completed");
        await first.waitFor(/"stopped"|\bstopped$/m, 15_000);
        assert.ok(
          await eventually(
            () => /\) Z /.test(readFileSync(`/proc/${first.launcherPid}/stat`, "utf8")),
            10_000,
          ),
          "the old launcher is a zombie",
        );
        await next.waitFor(new RegExp(`takeover done: launcher pid ${first.launcherPid} has exited`), 5000);
        await next.waitFor(/listening on/, 15_000);
        assert.equal((await get(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200, next.output());
        assert.match(next.output(), /is still there after 5500 ms: look at it/);
        const launcherPid = Number(/this launcher \(pid (\d+)\)/.exec(next.output())?.[1]);
        process.kill(launcherPid, "SIGTERM");
        assert.equal(await next.exited, 0, next.output());
      } finally {
        try {
          process.kill(first.launcherPid, "SIGKILL"); // left running only by a failed assertion
        } catch {}
        first.child.kill("SIGTERM"); // the sleep, which then reaps nothing: the zombie goes with it
      }
    });
  });
}
