/**
 * Reloads, crashes, drains, handler faults, the kernel's rules and tcp_migrate_req, under load.
 * Runs inside a private network namespace (test/netns.sh) as root; skips where that is not
 * possible. One shared suite, one tiny file per runtime in test/faults/.
 * @module
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
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
  joinAsOtherUser,
  killLeftovers,
  listenAddresses,
  load,
  type RuntimeUnderTest,
  run,
  shardPids,
  shardThreads,
  start,
} from "./helpers.ts";

const FAULT_APP = join(FIXTURES, "fault-app.ts");
// A sibling of fixtures/ (same depth), so that a fixture copied here still finds ../../src.
const TMP = join(FIXTURES, "..", ".tmp");
const MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";
const noNetns = process.env.SHARDPORT_NO_NETNS;

/** Only inside our own namespace may a test change tcp_migrate_req. */
function setMigrateReq(value: 0 | 1): void {
  assert.equal(process.env.SHARDPORT_IN_NETNS, "1", "refusing to change the host's sysctl");
  writeFileSync(MIGRATE_REQ, `${value}\n`);
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function faultSuite(rt: RuntimeUnderTest): void {
  describe(`faults on ${rt.name}`, {
    skip: noNetns ? `no private network namespace: ${noNetns}` : false,
  }, () => {
    mkdirSync(TMP, { recursive: true });
    after(killLeftovers);

    /** 5 rolling reloads of 4 shards under fresh-connection load; returns the load's figures. */
    async function reloadUnderLoad(extra: string[]) {
      const threads = extra.includes("threads");
      const port = freshPort();
      const app = await start(rt, ["--shards", "4", "--port", String(port), ...extra, FAULT_APP]);
      assert.doesNotMatch(app.output(), /tcp_migrate_req is 0/, "no warning where migration is on");
      const first = childrenOf(app.launcherPid);
      assert.equal(first.length, threads ? 0 : 4);
      if (threads) assert.equal(shardThreads(app.launcherPid), 4, "4 shard threads");
      const traffic = load(app.url, { concurrency: 8 });
      const retired = new Set(first);
      for (let generation = 1; generation <= 5; generation++) {
        // Let the load run between reloads: at least 500 more answers before each SIGHUP.
        const mark = traffic.stats.ok;
        assert.ok(await eventually(() => traffic.stats.ok >= mark + 500, 20_000), "the load is flowing");
        const before = childrenOf(app.launcherPid);
        process.kill(app.launcherPid, "SIGHUP");
        await app.waitFor(
          new RegExp(`reload done: 4 shards replaced in \\d+ ms \\(generation ${generation}\\)`),
        );
        for (const pid of before) retired.add(pid);
      }
      const stats = await traffic.stop();
      console.log(
        `${rt.name} ${extra.join(" ") || "--http native"}: 5 reloads of 4 shards under load, ${stats.ok} requests ok, ${stats.failed} failed, ${stats.non2xx} non-2xx`,
      );
      assert.equal(stats.non2xx, 0);
      assert.ok(stats.ok > 100, `the load ran: ${stats.ok}`);
      assert.match(app.output(), /reload 3\/4: shard 2 (pid|thread) \d+ -> (pid|thread) \d+/);
      // "reload done" comes as the last old shard is told to drain; where a shard stops its own
      // listener (Bun), it may still accept for a moment. Once 4 listeners are left, only the
      // newest generation can answer.
      const four = await eventually(() => tcpListeners(port).length === 4, 10_000);
      assert.ok(four, `listeners after the last reload: ${tcpListeners(port).length}, not 4`);
      for (let i = 0; i < 40; i++)
        assert.match((await get(app.url)).body, /generation 5/, "only the newest generation answers");

      if (threads) {
        // The 20 retired threads are gone, not only out of the table: 4 shard threads are left.
        const gone = await eventually(() => shardThreads(app.launcherPid) === 4, 20_000);
        assert.ok(gone, `shard threads after 5 reloads: ${shardThreads(app.launcherPid)}, not 4`);
      } else {
        const now = await shardPids(app.url, 4);
        assert.equal(now.size, 4);
        for (const pid of now) assert.ok(!retired.has(pid), `pid ${pid} is of an old generation`);
        // "reload done" is said once the last old shard starts draining, not once it has exited:
        // every retired shard gets its drain (and the launcher's backstop) to go.
        const gone = await eventually(() => [...retired].every((pid) => !isAlive(pid)), 20_000);
        assert.ok(
          gone,
          `no process of an old generation remains: ${[...retired].filter(isAlive).join(", ")} still alive`,
        );
      }
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      return stats;
    }

    test("threads mode: reloads under load lose nothing; a dying thread is restarted; SIGTERM drains", async () => {
      const extra = ["--mode", "threads"];
      const stats = await reloadUnderLoad(extra);
      assertNoneLost(stats);

      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), ...extra, FAULT_APP]);
      // The dying thread's own request fails (Deno's node:http answers it 400 as the thread ends).
      const dying = await get(`${app.url}/exit`).then(
        (reply) => reply.status,
        () => "lost",
      );
      assert.notEqual(dying, 200);
      // Its own exit code, as a process's would be (Deno's Worker says none by itself).
      await app.waitFor(/shard \d \(thread \d+\) exit code 3; restarting/);
      await app.waitFor(/shard \d restarted as thread \d+/);
      assert.equal((await get(app.url)).status, 200);
      // An uncaught error in a thread ends that thread only; it is restarted too.
      assert.equal((await get(`${app.url}/crash`)).status, 200);
      await app.waitFor(/shard \d restarted as thread \d+[\s\S]*shard \d restarted as thread \d+/);
      assert.equal((await get(app.url)).status, 200);
      const slow = get(`${app.url}/slow?ms=1000`, 10_000);
      await app.waitFor(/slow request started/);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal((await slow).status, 200);
      assert.equal(await app.exited, 0);
    });

    test("reload under load: 5 SIGHUP reloads, 0 failed, 0 non-2xx, only new pids after", async () => {
      const stats = await reloadUnderLoad([]);
      assertNoneLost(stats);
    });

    test("bad deploy: a module that throws at import is refused, the old shards keep serving", async () => {
      const port = freshPort();
      const module = join(TMP, `${rt.name}-deploy.ts`);
      copyFileSync(FAULT_APP, module);
      const app = await start(rt, ["--shards", "2", "--port", String(port), module]);
      const before = await shardPids(app.url, 2);
      assert.equal(before.size, 2, "both shards answered before the deploy");
      const traffic = load(app.url, { concurrency: 4 });
      writeFileSync(module, 'throw new Error("bad deploy: import failed");\n');
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(
        /reload stopped at 1\/2: .*bad deploy: import failed.*the running shards keep serving/,
      );
      const stats = await traffic.stop();
      assert.equal(stats.failed, 0, stats.errors.join("; "));
      assert.equal(stats.non2xx, 0);
      assert.deepEqual(new Set(stats.pids.keys()), before, "only the old pids answered");
      assert.deepEqual(await shardPids(app.url, 2), before);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(module);
    });

    test("a new shard that never gets ready within --ready-timeout stops the reload", async () => {
      const flag = join(TMP, `${rt.name}-hang`);
      rmSync(flag, { force: true });
      // 3 s, not 1: the first start must get ready within it too, on a loaded 2-core machine.
      const args = ["--shards", "2", "--port", String(freshPort()), "--ready-timeout", "3000"];
      const app = await start(rt, [...args, "test/fixtures/hangs-when-flagged.ts"], { FLAG_FILE: flag });
      const before = await shardPids(app.url, 2);
      assert.equal(before.size, 2, "both shards answered before the reload");
      writeFileSync(flag, "");
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(
        /reload stopped at 1\/2: shard 0 was not ready within 3000 ms; the running shards keep serving/,
      );
      assert.deepEqual(await shardPids(app.url, 2), before);
      // SIGKILLed at the log line, gone a moment later.
      const killed = await eventually(() => childrenOf(app.launcherPid).length === 2, 5000);
      assert.ok(killed, `the hung shard was killed: ${childrenOf(app.launcherPid)}`);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(flag);
    });

    test("crash storm: a random shard SIGKILLed every second for 10 s; N shards again within 2 s", async () => {
      const port = freshPort();
      const concurrency = 4;
      const app = await start(rt, ["--shards", "4", "--port", String(port), FAULT_APP]);
      const traffic = load(app.url, { concurrency });
      let kills = 0;
      for (let second = 0; second < 10; second++) {
        // Only a ready shard: killing one that is still restarting would feed its back-off.
        const { shards } = (await queryLauncher("127.0.0.1", port, "status")) as {
          shards: { state: string; label: string }[];
        };
        const ready = shards.filter((shard) => shard.state === "ready").map((shard) => shard.label);
        const victim = Number(/pid (\d+)/.exec(ready[Math.floor(Math.random() * ready.length)] ?? "")?.[1]);
        if (victim) {
          process.kill(victim, "SIGKILL");
          kills++;
        }
        await wait(1000);
      }
      const back = await eventually(
        () =>
          childrenOf(app.launcherPid).length === 4 &&
          (app.output().match(/shard \d+ restarted as pid/g) ?? []).length === kills,
        2000,
      );
      const stats = await traffic.stop();
      console.log(`${rt.name} crash storm: ${kills} kills, ${stats.ok} ok, ${stats.failed} failed`);
      assert.ok(back, `4 ready shards within 2 s of the last kill:\n${app.output()}`);
      // A killed shard loses at most what it had accepted: our in-flight requests on it.
      assert.ok(stats.failed <= kills * concurrency, `${stats.failed} failed for ${kills} kills`);
      assert.equal(stats.non2xx, 0);
      assert.ok(stats.ok > 100);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("a shard that keeps failing at start-up is given up; with none left the launcher exits 1", async () => {
      const flag = join(TMP, `${rt.name}-broken`);
      rmSync(flag, { force: true });
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(freshPort()), "test/fixtures/fails-when-flagged.ts"],
        {
          FLAG_FILE: flag,
        },
      );
      writeFileSync(flag, "");
      for (const pid of childrenOf(app.launcherPid)) process.kill(pid, "SIGKILL");
      assert.equal(await app.exited, 1, app.output());
      assert.match(app.output(), /shard \d failed to start 5 times in a row .*giving it up/);
      assert.match(
        app.output(),
        /restarting in 100 ms[\s\S]*restarting in 200 ms[\s\S]*restarting in 400 ms/,
      );
      assert.match(
        app.output(),
        /"level":"error".*"message":"no shard left: shard \d kept failing at start-up/,
      );
      rmSync(flag);
    });

    test("a slot given up at start-up leaves the others serving; status shows it exited", async () => {
      const flag = join(TMP, `${rt.name}-broken-one`);
      rmSync(flag, { force: true });
      const port = String(freshPort());
      const app = await start(rt, ["--shards", "2", "--port", port, "test/fixtures/fails-when-flagged.ts"], {
        FLAG_FILE: flag,
      });
      const pids = await shardPids(app.url, 2);
      assert.equal(pids.size, 2);
      writeFileSync(flag, "");
      const [victim, survivor] = pids;
      process.kill(victim, "SIGKILL");
      await app.waitFor(/shard \d failed to start \d+ times in a row .*giving it up/);
      for (let i = 0; i < 10; i++) assert.match((await get(app.url)).body, new RegExp(`PID ${survivor}\\b`));
      const status = run(rt, ["status", "--port", port]);
      assert.equal(await status.exited, 0, status.output());
      const states = status
        .output()
        .split("\n")
        .filter((line) => /^\d+\s/.test(line))
        .map((line) => line.split(/\s+/));
      const gaveUp = states.find((row) => row[2] === "exited");
      assert.ok(gaveUp, status.output());
      assert.equal(gaveUp[1], "-", "no process in the slot");
      assert.equal(states.filter((row) => row[3] === "ready").length, 1, status.output());
      assert.ok(app.child.exitCode === null && isAlive(app.launcherPid), "the launcher keeps serving");
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(flag);
    });

    // Written once for every runtime (src/launcher/supervisor.ts); its waits are long (about 20 s).
    if (rt.name === "node") {
      test("crash back-off doubles from 100 ms up to a cap of 5 s, and resets after 1 s ready", async () => {
        const flag = join(TMP, `${rt.name}-crashing`);
        rmSync(flag, { force: true });
        const args = [
          "--shards",
          "2",
          "--port",
          String(freshPort()),
          "test/fixtures/crashes-when-flagged.ts",
        ];
        const app = await start(rt, args, { FLAG_FILE: flag });
        const pids = await shardPids(app.url, 2);
        assert.equal(pids.size, 2);
        writeFileSync(flag, "");
        process.kill([...pids][0], "SIGKILL");
        // Each restarted shard gets ready and exits 500 ms later: a crash in a row each time.
        const capped = await app.waitFor(/shard (\d) \(pid \d+\) [^\n]*; restarting in 5000 ms/, 30_000);
        rmSync(flag); // the shard started after the cap stays up
        const slot = capped[1];
        const since = app.output().indexOf(capped[0]) + capped[0].length;
        const restarted = () =>
          new RegExp(`shard ${slot} restarted as pid (\\d+)`).exec(app.output().slice(since));
        assert.ok(await eventually(() => restarted() !== null, 10_000), app.output());
        const pid = restarted()?.[1];
        await new Promise((resolve) => setTimeout(resolve, 1200)); // ready for more than 1 s: stable
        process.kill(Number(pid), "SIGKILL");
        await app.waitFor(new RegExp(`shard ${slot} \\(pid ${pid}\\) [^\\n]*; restarting in \\d+ ms`));
        const delays = [...app.output().matchAll(/restarting in (\d+) ms/g)].map((match) => Number(match[1]));
        assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 5000, 100], app.output());
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      });
    }

    test("drain: an in-flight 2 s request completes with 200 after SIGTERM, then exit 0", async () => {
      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), FAULT_APP]);
      const slow = get(`${app.url}/slow?ms=2000`, 10_000).then((reply) => ({ reply, at: Date.now() }));
      await app.waitFor(/slow request started/);
      process.kill(app.launcherPid, "SIGTERM");
      const code = await app.exited;
      const exitedAt = Date.now();
      const { reply, at } = await slow;
      assert.equal(reply.status, 200);
      assert.match(reply.body, /slow done/);
      assert.ok(at <= exitedAt, "the request finished before the launcher exited");
      assert.equal(code, 0);
    });

    /** A stuck request in flight at SIGTERM is cut at a 1 s drain timeout; the launcher exits 0. */
    async function stuckIsCut(extra: string[]) {
      const args = ["--shards", "2", "--port", String(freshPort()), ...extra, "--drain-timeout", "1000"];
      const app = await start(rt, [...args, FAULT_APP]);
      const stuck = get(`${app.url}/stuck`, 30_000).then(
        () => "answered",
        () => "cut",
      );
      await app.waitFor(/stuck request started/);
      const signalled = Date.now();
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await stuck, "cut");
      assert.equal(await app.exited, 0);
      // The cut at 1 s, plus at most the shard's second to exit after it, plus slack for load.
      const took = Date.now() - signalled;
      assert.ok(took < 1000 + 2500, `the launcher exited ${took} ms after SIGTERM, not within 3.5 s`);
      assert.match(app.output(), /drain timeout of 1000 ms, cutting connections/);
      assert.doesNotMatch(app.output(), /uncaught/i, "the cut itself throws nothing");
    }

    test("threads mode, the runtime's own server: a stuck handler is cut at --drain-timeout", async () => {
      await stuckIsCut(["--mode", "threads"]);
    });

    test("drain: a stuck handler is cut at --drain-timeout; a SIGINT a second after the first stops at once", async () => {
      await stuckIsCut([]);

      const again = await start(rt, [
        "--shards",
        "2",
        "--port",
        String(freshPort()),
        "--drain-timeout",
        "60000",
        FAULT_APP,
      ]);
      const shards = childrenOf(again.launcherPid);
      const pending = get(`${again.url}/stuck`, 30_000).catch(() => "cut");
      await again.waitFor(/stuck request started/);
      process.kill(again.launcherPid, "SIGINT");
      await again.waitFor(/stopping: draining/);
      await wait(1100); // a repeat within a second is the same Ctrl-C
      process.kill(again.launcherPid, "SIGINT");
      assert.equal(await again.exited, 130);
      assert.equal(await pending, "cut");
      assert.ok(await eventually(() => shards.every((pid) => !isAlive(pid)), 2000));
    });

    test("handler faults: a throw answers 500, a handler exiting costs only its shard, malformed HTTP is shrugged off", async () => {
      const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), FAULT_APP]);
      const shards = new Set(childrenOf(app.launcherPid));
      for (let i = 0; i < 20; i++) assert.equal((await get(`${app.url}/throw`)).status, 500);
      for (const junk of [
        "BLAH\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        `GET /${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
        "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      ]) {
        for (let i = 0; i < 4; i++) {
          await new Promise<void>((resolve) => {
            const socket = net.connect(Number(new URL(app.url).port), "127.0.0.1", () => socket.end(junk));
            socket.on("error", () => resolve());
            socket.on("close", () => resolve());
            socket.resume();
          });
        }
      }
      assert.deepEqual(new Set(childrenOf(app.launcherPid)), shards, "every shard survived");
      assert.equal((await shardPids(app.url, 2)).size, 2);

      const traffic = load(app.url, { concurrency: 4 });
      const dying = await get(`${app.url}/exit`).then(
        () => "answered",
        () => "lost",
      );
      await app.waitFor(/shard \d restarted as pid/);
      const stats = await traffic.stop();
      assert.equal(dying, "lost");
      assert.ok(stats.failed <= 4, `only the dying shard's in-flight requests fail: ${stats.failed}`);
      assert.ok(stats.ok > 0);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("security: another user cannot join the group; shards bind only the host given", async () => {
      const port = freshPort();
      const app = await start(rt, ["--shards", "2", "--port", String(port), FAULT_APP]);
      assert.deepEqual(listenAddresses(port), [
        `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`,
        `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`,
      ]);
      if (process.getuid?.() === 0) assert.equal(await joinAsOtherUser(port), "EADDRINUSE");
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("tcp_migrate_req: 0 resets connections queued on a closing shard, 1 resets none", async () => {
      const failures: Record<number, number> = {};
      for (const migrate of [0, 1] as const) {
        setMigrateReq(migrate);
        try {
          const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), FAULT_APP]);
          if (migrate === 0) assert.match(app.output(), /tcp_migrate_req is 0/);
          // Learn one shard's pid on a kept-alive connection, then block that shard's event loop.
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          const pidOnAgent = await new Promise<number>((resolve, reject) =>
            http
              .get(app.url, { agent }, (res) => {
                let body = "";
                res.on("data", (chunk) => {
                  body += chunk;
                });
                res.on("end", () => resolve(Number(/PID (\d+)/.exec(body)?.[1])));
              })
              .on("error", reject),
          );
          http.get(`${app.url}/block?ms=3000`, { agent }).on("error", () => {});
          await app.waitFor(new RegExp(`block started in ${pidOnAgent}`));
          // New connections now queue in the blocked shard's accept queue (about half of them).
          let settled = 0;
          const probes = Array.from({ length: 40 }, () =>
            get(app.url, 10_000)
              .then(
                () => true,
                () => false,
              )
              .finally(() => {
                settled++;
              }),
          );
          const queued = () => settled + acceptQueue(Number(new URL(app.url).port)) >= 40;
          assert.ok(await eventually(queued, 5000), "the probes reached a shard or its accept queue");
          process.kill(pidOnAgent, "SIGKILL");
          failures[migrate] = (await Promise.all(probes)).filter((ok) => !ok).length;
          agent.destroy();
          process.kill(app.launcherPid, "SIGTERM");
          assert.equal(await app.exited, 0);
        } finally {
          setMigrateReq(1);
        }
      }
      console.log(
        `${rt.name} migration probe: ${failures[0]} of 40 reset with tcp_migrate_req=0, ${failures[1]} with 1`,
      );
      assert.ok(failures[0] > 0, "with tcp_migrate_req=0 closing a listener resets its queue");
      assert.equal(failures[1], 0, "with tcp_migrate_req=1 nothing is reset");
    });
  });
}

/** Connections waiting in the accept queues of the listeners on `port`. */
const acceptQueue = (port: number) => tcpListeners(port).reduce((sum, listener) => sum + listener.queued, 0);
