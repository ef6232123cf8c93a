/**
 * The port guard and the end of orphaned services, with the launcher under test on each runtime:
 * a second launcher (same or overlapping address), a plain SO_REUSEPORT server, a stale group
 * are refused with one line naming the holder, --join adds to a group; a package runner's
 * SIGKILL (`bun run start`, `deno task start`, `npm start`) stops the launcher it started, a
 * shell's does not.
 * @module
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { addressesOverlap, parseIp, parseProcAddress, tcpListeners } from "../src/launcher/port-holder.ts";
import { isRunner, statFields } from "../src/launcher/runner.ts";
import {
  childrenOf,
  eventually,
  FIXTURES,
  freshPort,
  isAlive,
  killLeftovers,
  portIsFree,
  RUNTIMES,
  type RuntimeUnderTest,
  reusePortListener,
  run,
  shardPids,
  start,
} from "./helpers.ts";

const FAULT_APP = join(FIXTURES, "fault-app.ts");
const WAITS_APP = join(FIXTURES, "waits-for-file.ts");
const shardportLines = (output: string) => output.split("\n").filter((line) => line.startsWith("shardport:"));
const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

test("overlapping addresses as the kernel matches them; what a package runner is", () => {
  const ip = (text: string) => parseIp(text) ?? assert.fail(text);
  const overlap = (a: string, b: string) => addressesOverlap(ip(a), ip(b));
  assert.ok(overlap("127.0.0.1", "127.0.0.1"));
  assert.ok(overlap("0.0.0.0", "127.0.0.1"));
  assert.ok(overlap("::", "127.0.0.1"), ":: is dual-stack");
  assert.ok(overlap("::", "::1"));
  assert.ok(overlap("::ffff:127.0.0.1", "127.0.0.1"));
  assert.ok(!overlap("127.0.0.1", "127.0.0.2"));
  assert.ok(!overlap("0.0.0.0", "::1"));
  assert.ok(!overlap("::1", "127.0.0.1"));
  // /proc/net/tcp{,6} print each 32-bit word in host order (little-endian here).
  assert.deepEqual(parseProcAddress("0100007F:1F90"), ip("127.0.0.1"));
  assert.deepEqual(parseProcAddress("00000000000000000000000001000000:1F90"), ip("::1"));
  assert.deepEqual(parseProcAddress("0000000000000000FFFF00000100007F:1F90"), ip("::ffff:127.0.0.1"));
  for (const words of [
    ["bun", "run", "start", "--", "--port", "1"],
    ["bun", "start"],
    ["deno", "task", "start"],
    ["npm", "start"],
    ["/usr/bin/node", "/usr/lib/node_modules/npm/bin/npm-cli.js", "run", "start"],
    ["npx", "shardport"],
  ])
    assert.ok(isRunner(words), words.join(" "));
  for (const words of [
    ["bash"],
    ["bun", "runtimes/bun.ts"],
    ["deno", "run", "x.ts"],
    ["node", "dist/node.js"],
  ])
    assert.ok(!isRunner(words), words.join(" "));
});

for (const rt of [RUNTIMES.bun, RUNTIMES.deno, RUNTIMES.node]) {
  describe(`port guard on ${rt.name}`, () => {
    after(killLeftovers);

    /** Runs `rt` on `port`; expects exit 1, one `shardport:` line, nothing more listening. */
    async function refused(port: number, extra: string[] = []): Promise<string> {
      const before = tcpListeners(port).length;
      const proc = run(rt, ["--shards", "1", "--port", String(port), ...extra]);
      assert.equal(await proc.exited, 1, proc.output());
      const lines = shardportLines(proc.output());
      assert.equal(lines.length, 1, proc.output());
      assert.doesNotMatch(proc.output(), /listening on/);
      assert.equal(tcpListeners(port).length, before, "nothing of it is left listening");
      return lines[0];
    }

    test("a second launcher is refused with the first one's runtime, pid, shards and the --takeover command; --join adds to it", async () => {
      const port = freshPort();
      const first = await start(RUNTIMES.node, ["--shards", "2", "--port", String(port), FAULT_APP]);
      // The same address, and the wildcard that covers it.
      for (const host of ["127.0.0.1", "0.0.0.0"]) {
        const line = await refused(port, ["--host", host]);
        const command = literal(
          rt.command(["--shards", "1", "--port", String(port), "--host", host]).join(" "),
        );
        assert.match(
          line,
          new RegExp(
            `another shardport launcher \\(pid ${first.launcherPid}\\) serves 127\\.0\\.0\\.1:${port}: node [\\d.]+, 2 shards in process mode: replace it with \`${command} --takeover\`, or add shards to it with --join$`,
          ),
        );
      }
      // --join: the group grows by hand, as before the guard.
      const joined = await start(rt, ["--shards", "1", "--port", String(port), "--join", FAULT_APP]);
      assert.equal(tcpListeners(port).length, 3);
      const pids = await shardPids(first.url, 3);
      const joinedShard = childrenOf(joined.launcherPid);
      assert.ok(
        joinedShard.some((pid) => pids.has(pid)),
        `the joined shard answers too: ${[...pids]}`,
      );
      process.kill(joined.launcherPid, "SIGTERM");
      assert.equal(await joined.exited, 0, joined.output());
      process.kill(first.launcherPid, "SIGTERM");
      assert.equal(await first.exited, 0);
    });

    test("a plain SO_REUSEPORT server of this user is refused with its pid and program; --takeover too", async () => {
      const port = freshPort();
      const holder = await reusePortListener(port, "0.0.0.0");
      try {
        assert.match(
          await refused(port),
          new RegExp(
            `^shardport: error: 0\\.0\\.0\\.0:${port} is in use by pid ${holder.pid} \\(python3 -c .*\\): stop it or choose another --port`,
          ),
        );
        assert.match(
          await refused(port, ["--takeover"]),
          new RegExp(
            `--takeover refused: 0\\.0\\.0\\.0:${port} is in use by pid ${holder.pid} \\(python3 .*\\); only one shardport launcher of this user can be taken over`,
          ),
        );
      } finally {
        holder.close();
      }
      assert.ok(await eventually(() => portIsFree(port), 5000));
    });

    test("a SO_REUSEPORT server that binds while the first shards load is refused once they listen", async () => {
      const port = freshPort();
      // In the app's folder: a Deno shard may read only there and in the project.
      const dir = mkdtempSync(join(FIXTURES, "flag-"));
      const flag = join(dir, "go");
      // The launcher's bind probe finds the port free, and its first shard starts loading the app.
      const proc = run(rt, ["--shards", "1", "--port", String(port), WAITS_APP], { FLAG_FILE: flag });
      let holder: Awaited<ReturnType<typeof reusePortListener>> | undefined;
      try {
        assert.ok(
          await eventually(() => proc.output().includes("waiting for FLAG_FILE"), 30_000),
          proc.output(),
        );
        // Something binds now, between the probe and the shard's listen; then the app loads.
        holder = await reusePortListener(port);
        writeFileSync(flag, "");
        assert.equal(await proc.exited, 1, proc.output());
        const lines = shardportLines(proc.output());
        assert.equal(lines.length, 1, proc.output());
        assert.match(
          lines[0],
          new RegExp(
            `^shardport: error: 127\\.0\\.0\\.1:${port} was bound by pid ${holder.pid} \\(python3 -c .*\\) while the shards started, and would share their connections: stopped`,
          ),
        );
        assert.equal(tcpListeners(port).length, 1, "only the other program listens");
        assert.ok(isAlive(holder.pid), "the other program is left alone");
      } finally {
        holder?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test("a stale group (its launcher answers no control socket) is told from a live launcher", async () => {
      const port = freshPort();
      const stale = await start(RUNTIMES.node, ["--shards", "2", "--port", String(port), FAULT_APP]);
      const shards = childrenOf(stale.launcherPid).sort((a, b) => a - b);
      process.kill(stale.launcherPid, "SIGSTOP");
      try {
        assert.match(
          await refused(port),
          new RegExp(
            `a shardport launcher \\(pid ${stale.launcherPid}\\) that answers on no control socket in .* \\(a stale group\\) serves 127\\.0\\.0\\.1:${port}: its shards \\(${shards.join(", ")}\\) hold the port: stop it \\(kill ${stale.launcherPid}\\)`,
          ),
        );
      } finally {
        process.kill(stale.launcherPid, "SIGCONT");
      }
      process.kill(stale.launcherPid, "SIGTERM");
      assert.equal(await stale.exited, 0);
    });
  });
}

const NPM: RuntimeUnderTest = {
  name: "npm start",
  runtime: "bun",
  command: (args) => ["npm", "start", "--", ...args],
};
const SHELL: RuntimeUnderTest = {
  name: "sh",
  runtime: "node",
  command: (args) => ["sh", "-c", 'node dist/node.js "$@" & wait', "sh", ...args],
};

describe("no orphaned service", () => {
  after(killLeftovers);

  for (const runner of [RUNTIMES.bun, RUNTIMES.deno, NPM]) {
    test(`${runner.command([]).join(" ")}: the runner's SIGKILL stops the launcher and its shards within a few seconds`, async () => {
      const port = freshPort();
      const app = await start(runner, ["--shards", "2", "--port", String(port), FAULT_APP]);
      const shards = childrenOf(app.launcherPid);
      assert.equal(shards.length, 2);
      assert.notEqual(app.child.pid, app.launcherPid, "the runner is another process");
      const killed = Date.now();
      process.kill(app.child.pid ?? 0, "SIGKILL");
      await app.waitFor(
        /the package runner that started this launcher \(pid \d+, .+\) is gone: stopping/,
        5000,
      );
      const gone = await eventually(() => ![app.launcherPid, ...shards].some(isAlive), 10_000);
      assert.ok(gone, `launcher and shards gone:\n${app.output()}`);
      console.log(
        `${runner.name}: runner SIGKILLed, launcher and shards gone ${Date.now() - killed} ms later`,
      );
      assert.match(app.output(), /stopped/);
      assert.ok(await portIsFree(port));
    });
  }

  test("a shell is not a runner: `node dist/node.js &` outlives its shell", async () => {
    const port = freshPort();
    const app = await start(SHELL, ["--shards", "1", "--port", String(port), FAULT_APP]);
    process.kill(app.child.pid ?? 0, "SIGKILL");
    // Three of the runner checks' periods.
    assert.equal(await eventually(() => !isAlive(app.launcherPid), 3000), false, "the launcher serves on");
    assert.doesNotMatch(app.output(), /is gone: stopping/);
    process.kill(app.launcherPid, "SIGTERM");
    assert.ok(await eventually(() => !isAlive(app.launcherPid), 15_000));
  });
});

describe("takeover: is the old launcher still running?", () => {
  test("a zombie, a pid now another process's and a gone pid count as exited", async () => {
    const { runs } = await import("../src/launcher/takeover.ts");
    const stat = (pid: number) => statFields(pid, (path) => readFileSync(path, "utf8")) ?? [];
    const start = stat(process.pid)[19];
    assert.equal(runs(process.pid, start), true);
    assert.equal(runs(process.pid, undefined), true);
    assert.equal(runs(process.pid, String(Number(start) + 1)), false, "the pid names another process");
    // Deno's reader (`cat`) gives nothing for a file it cannot read: the process has gone.
    assert.equal(
      runs(process.pid, start, () => ""),
      false,
      "an empty /proc file",
    );
    // A child that has exited and is not yet reaped: spawnSync is not used, so the event loop
    // reaps it only when it next runs; the check below runs before that.
    const child = spawn("sh", ["-c", "exit 0"], { stdio: "ignore" });
    const pid = child.pid as number;
    const childStart = stat(pid)[19];
    const deadline = Date.now() + 10_000;
    while (stat(pid)[0] !== "Z" && Date.now() < deadline) {}
    assert.equal(stat(pid)[0], "Z", "the child is a zombie");
    assert.equal(runs(pid, childStart), false, "a zombie has exited");
    await new Promise((resolve) => child.on("exit", resolve));
    assert.equal(runs(pid, childStart), false, "a reaped pid is gone");
  });
});
