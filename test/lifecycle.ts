/**
 * The launcher's lifecycle under races: signals during start-up and stop, a stop during a reload,
 * a crash during a reload, shards that die while their siblings start, the control socket (a
 * second launcher, a stale or foreign socket, a stale pid file), give-up counting, the stop
 * backstop. One shared suite, one tiny file per runtime in test/lifecycle/.
 * @module
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { queryLauncher } from "../src/launcher/control.ts";
import { MAX_START_FAILURES } from "../src/launcher/supervisor.ts";
import {
  assertStopDrains,
  childrenOf,
  eventually,
  FIXTURES,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  type RuntimeUnderTest,
  run,
  start,
} from "./helpers.ts";

const APP = join(FIXTURES, "lifecycle-app.ts");
const FAULT_APP = join(FIXTURES, "fault-app.ts");
// Flag files live under the project, where a Deno shard may read them.
const TMP = join(FIXTURES, "..", ".tmp");

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The launcher's own lines: one per message, all prefixed. */
const shardportLines = (output: string) => output.split("\n").filter((line) => line.startsWith("shardport:"));

interface ShardRow {
  index: number;
  label: string;
  state: string;
  restarts: number;
}
interface LauncherStatus {
  launcherPid: number;
  reloads: number;
  shards: ShardRow[];
}

/** The launcher's `status`, straight from its control socket. */
const status = async (port: number) => (await queryLauncher("127.0.0.1", port, "status")) as LauncherStatus;

/** The pid of shard `index` (process mode), from `status`. */
const shardPid = async (port: number, index: number) =>
  Number(/pid (\d+)/.exec((await status(port)).shards[index].label)?.[1]);

/** Whether process `pid` catches SIGHUP (its SigCgt mask in /proc). */
function catchesSighup(pid: number): boolean {
  try {
    const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** The command line of process `pid` ("" once it is gone). */
const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
};

/**
 * The launcher's pid under `run()`: the command itself, or the runner's child (bun run, deno
 * task), once that child runs the entry (not a runner's passing helper).
 */
const launcherOf = (rt: RuntimeUnderTest, child: ChildProcess): number | undefined =>
  (rt.name === "node" ? [child.pid ?? 0] : childrenOf(child.pid ?? 0)).find((pid) =>
    /runtimes\/\w+\.ts|dist\/node\.js/.test(commandLine(pid)),
  );

export function lifecycleSuite(rt: RuntimeUnderTest): void {
  describe(`lifecycle on ${rt.name}`, () => {
    mkdirSync(TMP, { recursive: true });
    // A private directory for pid files and control sockets: the tests look into it.
    const runtimeDir = mkdtempSync(join(tmpdir(), "shardport-lifecycle-"));
    process.env.XDG_RUNTIME_DIR = runtimeDir;
    const flags = mkdtempSync(join(TMP, `${rt.name}-lifecycle-`));
    const flag = (name: string) => join(flags, name);
    /** Every launch gets the private directory, and Deno shards may write the flag files. */
    const env = (extra: Record<string, string> = {}) => ({
      XDG_RUNTIME_DIR: runtimeDir,
      SHARDPORT_DENO_FLAGS: `--allow-write=${flags}`,
      ...extra,
    });
    const socketOf = (port: number) => join(runtimeDir, "shardport", `127.0.0.1-${port}.sock`);
    after(() => {
      killLeftovers();
      rmSync(flags, { recursive: true, force: true });
      rmSync(runtimeDir, { recursive: true, force: true });
    });

    for (const mode of ["process", "threads"]) {
      test(`${mode} mode: a shard that dies after its handshake while a sibling still starts is restarted`, async () => {
        const [die, delay] = [flag(`die-${mode}`), flag(`delay-${mode}`)];
        writeFileSync(die, "");
        writeFileSync(delay, "");
        const port = freshPort();
        const app = await start(
          rt,
          ["--shards", "2", "--port", String(port), "--mode", mode, APP],
          env({ DIE_FILE: die, DELAY_FILE: delay, DELAY_SHARD: "1", DELAY_MS: "2500" }),
        );
        assert.ok(!existsSync(die), "shard 0 died while shard 1 was starting");
        await app.waitFor(/shard 0 restarted as/, 5000);
        const { shards } = await status(port);
        assert.deepEqual(
          shards.map(({ state, restarts }) => [state, restarts]),
          [
            ["ready", 1],
            ["ready", 0],
          ],
        );
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      });
    }

    for (const [signal, mode] of [
      ["SIGTERM", "process"],
      ["SIGINT", "process"],
      ["SIGINT", "threads"],
    ] as const) {
      test(`${mode} mode: ${signal} to the whole process group is one stop: the launcher drains the in-flight requests, exit 0`, async () => {
        const app = await start(
          rt,
          ["--shards", "2", "--port", String(freshPort()), "--mode", mode, APP],
          env(),
        );
        // Like Ctrl-C in a terminal or `kill -TERM -- -PGID`: the runner (bun run, deno task)
        // gets it too and forwards it, so the launcher gets it twice.
        await assertStopDrains(app, app.url, app.launcherPid, () =>
          process.kill(-(app.child.pid ?? 0), signal),
        );
        assert.equal(await app.exited, 0, app.output());
        assert.doesNotMatch(app.output(), /killing every shard/);
      });
    }

    test("SIGTERM never escalates; a SIGINT a second after the first stop signal kills at once (130)", async () => {
      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), APP], env());
      const slow = get(`${app.url}/slow?ms=2500`, 10_000);
      await app.waitFor(/slow request started/);
      process.kill(app.launcherPid, "SIGTERM");
      await app.waitFor(/stopping: draining/);
      await wait(1200); // the rule is about time since the first signal
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal((await slow).status, 200, "the second SIGTERM did not cut the request");
      assert.equal(await app.exited, 0);

      const again = await start(
        rt,
        ["--shards", "2", "--port", String(freshPort()), "--drain-timeout", "60000", FAULT_APP],
        env(),
      );
      const stuck = get(`${again.url}/stuck`, 30_000).then(
        () => "answered",
        () => "cut",
      );
      await again.waitFor(/stuck request started/);
      process.kill(again.launcherPid, "SIGINT");
      process.kill(again.launcherPid, "SIGINT"); // the same Ctrl-C, forwarded
      await again.waitFor(/stopping: draining/);
      await wait(1200);
      assert.doesNotMatch(again.output(), /killing every shard/);
      process.kill(again.launcherPid, "SIGINT");
      assert.equal(await again.exited, 130);
      assert.equal(await stuck, "cut");
    });

    test("SIGHUP during start-up: caught before any shard starts, never fatal, one reload once the start is done", async () => {
      const delay = flag("delay-hup");
      writeFileSync(delay, "");
      const port = freshPort();
      const proc = run(
        rt,
        ["--shards", "2", "--port", String(port), APP],
        env({ DELAY_FILE: delay, DELAY_MS: "1000" }),
      );
      // As early as the launcher catches SIGHUP (systemd's ExecReload right after the start).
      let launcher: number | undefined;
      const deadline = Date.now() + 20_000;
      for (;;) {
        assert.ok(Date.now() < deadline, "the launcher never caught SIGHUP");
        launcher ??= launcherOf(rt, proc.child);
        if (launcher && catchesSighup(launcher)) {
          assert.equal(childrenOf(launcher).length, 0, "SIGHUP is caught before any shard starts");
          process.kill(launcher, "SIGHUP");
          break;
        }
        await wait(2);
      }
      // And once the shards are starting (they take a second to load).
      const starting = await eventually(() => childrenOf(launcher).length > 0, 10_000, 5);
      assert.ok(starting, `no shard started:\n${proc.output()}`);
      process.kill(launcher, "SIGHUP");
      await proc.waitFor(/listening on /);
      rmSync(delay);
      await proc.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      // Both SIGHUPs made one reload: the next one is generation 2.
      const reload = run(rt, ["reload", "--port", String(port)], env());
      assert.equal(await reload.exited, 0, reload.output());
      assert.match(reload.output(), /generation 2$/m);
      process.kill(launcher, "SIGTERM");
      assert.equal(await proc.exited, 0, proc.output());
    });

    for (const mode of ["process", "threads"])
      test(`${mode} mode: SIGTERM during start-up drains: the launcher waits for the requests a ready shard accepted, exit 0`, async () => {
        // The launcher waits for its early shards before it loads (src/launcher/early.ts): a stop
        // then must drain them too (in threads mode, exiting at once would cut the request).
        const delay = flag(`delay-start-${mode}`);
        writeFileSync(delay, "");
        const port = freshPort();
        const url = `http://127.0.0.1:${port}`;
        const proc = run(
          rt,
          ["--shards", "2", "--port", String(port), "--mode", mode, APP],
          env({ DELAY_FILE: delay, DELAY_SHARD: "1", DELAY_MS: "5000" }),
        );
        // Shard 0 serves while shard 1 still loads.
        const served = async () => (await get(url, 1000).catch(() => undefined))?.status === 200;
        assert.ok(await eventually(served, 10_000), "shard 0 answers");
        const launcher = launcherOf(rt, proc.child) ?? 0;
        assert.ok(launcher > 0, "the launcher's pid");
        await assertStopDrains(proc, url, launcher, () => {
          assert.doesNotMatch(proc.output(), /listening on/, "the launcher is still starting");
          process.kill(launcher, "SIGTERM");
        });
        assert.equal(await proc.exited, 0, proc.output());
        rmSync(delay);
      });

    test("a stop during a reload drains the reload's new shard too: no orphan", async () => {
      const delay = flag("delay-reload-stop");
      const port = freshPort();
      const app = await start(rt, ["--shards", "2", "--port", String(port), APP], env({ DELAY_FILE: delay }));
      writeFileSync(delay, ""); // new shards now hang at import
      const old = new Set(childrenOf(app.launcherPid));
      process.kill(app.launcherPid, "SIGHUP");
      let incoming: number | undefined;
      assert.ok(
        await eventually(() => {
          incoming = childrenOf(app.launcherPid).find((pid) => !old.has(pid));
          return incoming !== undefined;
        }, 10_000),
      );
      process.kill(app.launcherPid, "SIGTERM");
      // The launcher exits only once every shard it has is gone, the reload's new one included.
      // (Not app.exited: the shards share its stdout, so that waits for an orphan too.)
      assert.ok(await eventually(() => !isAlive(app.launcherPid), 10_000, 2));
      assert.ok(!isAlive(incoming ?? 0), `pid ${incoming} outlived the launcher`);
      assert.equal(await app.exited, 0, app.output());
      assert.match(app.output(), /stopping: draining 3 shards/);
      rmSync(delay);
    });

    test("a crash during a reload of the same slot: no restart races the reload", async () => {
      const delay = flag("delay-reload-crash");
      const port = freshPort();
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(port), APP],
        env({ DELAY_FILE: delay, DELAY_MS: "1500" }),
      );
      writeFileSync(delay, "");
      const old = new Set(childrenOf(app.launcherPid));
      const victim = await shardPid(port, 0);
      process.kill(app.launcherPid, "SIGHUP");
      assert.ok(await eventually(() => childrenOf(app.launcherPid).some((pid) => !old.has(pid)), 10_000));
      process.kill(victim, "SIGKILL");
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      rmSync(delay);
      assert.doesNotMatch(app.output(), /restarting in|restarted as|exited before it was ready/);
      const { shards } = await status(port);
      assert.deepEqual(
        shards.map(({ state, restarts }) => [state, restarts]),
        [
          ["ready", 0],
          ["ready", 0],
        ],
      );
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 2, 5000));
      assert.match(app.output(), /shard 0 \(pid \d+\) killed by SIGKILL; the reload is replacing it/);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("a crash of a slot the running reload has already replaced restarts the new generation", async () => {
      const delay = flag("delay-generation");
      const port = freshPort();
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(port), APP],
        env({ DELAY_FILE: delay, DELAY_SHARD: "1", DELAY_MS: "4000" }),
      );
      writeFileSync(delay, ""); // shard 1 of the reload takes 4 s: the reload is still running
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload 1\/2: /);
      process.kill(await shardPid(port, 0), "SIGKILL");
      await app.waitFor(/shard 0 restarted as/);
      assert.doesNotMatch(app.output(), /reload done/, "the reload was still running");
      let answer = "";
      const fromShard0 = async () => {
        answer = (await get(app.url)).body;
        return /shard 0,/.test(answer);
      };
      assert.ok(await eventually(fromShard0, 5000));
      assert.match(answer, /generation 1/);
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      rmSync(delay);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("no shard left but a reload's shard about to be ready: the launcher serves on", async () => {
      const [fail, delay] = [flag("fail-incoming"), flag("delay-incoming")];
      const port = freshPort();
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(port), APP],
        env({ FAIL_FILE: fail, DELAY_FILE: delay, DELAY_MS: "6000" }),
      );
      writeFileSync(fail, ""); // generation 0 no longer starts: restarts fail
      writeFileSync(delay, ""); // generation 1 takes 6 s to load
      const old = [await shardPid(port, 0), await shardPid(port, 1)];
      process.kill(app.launcherPid, "SIGHUP");
      assert.ok(await eventually(() => childrenOf(app.launcherPid).length === 3, 10_000));
      for (const pid of old) process.kill(pid, "SIGKILL");
      await app.waitFor(/shard 1 failed to start \d+ times in a row .*giving it up/, 20_000);
      rmSync(delay);
      assert.doesNotMatch(app.output(), /reload 1\/2/, "given up while the reload's shard still loaded");
      await app.waitFor(/reload done: 2 shards replaced in \d+ ms \(generation 1\)/, 20_000);
      assert.deepEqual(
        (await status(port)).shards.map(({ state }) => state),
        ["ready", "ready"],
      );
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0, app.output());
      rmSync(fail);
    });

    test("a slot is given up after exactly MAX_START_FAILURES failed starts, and says how many", async () => {
      const [fail, count] = [flag("fail-count"), flag("count")];
      const port = freshPort();
      const app = await start(
        rt,
        ["--shards", "1", "--port", String(port), APP],
        env({ FAIL_FILE: fail, COUNT_FILE: count }),
      );
      const imports = () => readFileSync(count, "utf8").split("\n").filter(Boolean).length;
      const before = imports();
      writeFileSync(fail, "");
      process.kill(await shardPid(port, 0), "SIGKILL");
      assert.equal(await app.exited, 1, app.output());
      const failed = imports() - before;
      const said = Number(/failed to start (\d+) times in a row/.exec(app.output())?.[1]);
      assert.equal(failed, MAX_START_FAILURES, "failed starts before the slot was given up");
      assert.equal(said, failed, "the message counts the failed starts");
      rmSync(fail);
    });

    test("a stop whose backstop had to kill a stuck shard exits 1", async () => {
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(freshPort()), "--drain-timeout", "500", FAULT_APP],
        env(),
      );
      // A blocked event loop: the shard cannot even hear the drain; the backstop kills it at 5.5 s.
      get(`${app.url}/block?ms=9000`, 20_000).catch(() => {});
      await app.waitFor(/block started/);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 1, app.output());
      assert.match(app.output(), /a shard outlived --drain-timeout by 5 s and was killed/);
    });

    test("`reload` and `stop` never signal a process a stale pid file names", async () => {
      const port = freshPort();
      const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
      try {
        mkdirSync(join(runtimeDir, "shardport"), { recursive: true, mode: 0o700 });
        writeFileSync(join(runtimeDir, "shardport", `127.0.0.1-${port}.pid`), `${sleeper.pid}\n`);
        for (const command of ["reload", "stop"]) {
          const proc = run(rt, [command, "--port", String(port)], env());
          assert.equal(await proc.exited, 1, proc.output());
          assert.match(proc.output(), new RegExp(`no shardport launcher for 127\\.0\\.0\\.1:${port}`));
          assert.ok(isAlive(sleeper.pid ?? 0), `${command} signalled the pid in the stale pid file`);
        }
      } finally {
        sleeper.kill("SIGKILL");
      }
    });

    test("control socket: a second launcher is refused, a stale socket replaced, a foreign one left alone", async () => {
      const port = freshPort();
      const args = ["--shards", "1", "--port", String(port), APP];
      const first = await start(rt, args, env());
      const second = run(rt, args, env());
      const code = await Promise.race([second.exited, wait(15_000).then(() => "still running")]);
      assert.equal(code, 1, second.output());
      const lines = shardportLines(second.output());
      assert.equal(lines.length, 1, second.output());
      assert.match(
        lines[0],
        new RegExp(
          `another shardport launcher \\(pid ${first.launcherPid}\\) serves 127\\.0\\.0\\.1:${port}`,
        ),
      );
      assert.doesNotMatch(second.output(), /listening on/);
      assert.equal((await status(port)).launcherPid, first.launcherPid, "the first one still answers");

      // A socket that is no longer ours (someone replaced it) outlives our exit.
      const path = socketOf(port);
      rmSync(path);
      const foreign = net.createServer();
      await new Promise<void>((resolve) => foreign.listen(path, resolve));
      try {
        process.kill(first.launcherPid, "SIGTERM");
        assert.equal(await first.exited, 0);
        assert.ok(existsSync(path), "the launcher removed a socket that was not its own");
      } finally {
        await new Promise((resolve) => foreign.close(resolve));
      }

      // The socket of a SIGKILLed launcher stays behind; the next launcher replaces it.
      const killed = await start(rt, args, env());
      process.kill(killed.launcherPid, "SIGKILL");
      await killed.exited;
      assert.ok(existsSync(path));
      const next = await start(rt, args, env());
      assert.equal((await status(port)).launcherPid, next.launcherPid);
      process.kill(next.launcherPid, "SIGTERM");
      assert.equal(await next.exited, 0);
      assert.ok(!existsSync(path), "its own socket is removed at exit");
    });
  });
}
