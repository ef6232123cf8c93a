/**
 * The shared suite: every runtime runs exactly these tests through the command a user types.
 * A runtime's own test file is one call of shardSuite().
 * @module
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { queryLauncher } from "../src/launcher/control.ts";
import {
  agentGet,
  chiSquaredUniformP,
  eventually,
  FIXTURES,
  foreignReusePortListener,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  listenAddresses,
  plainListener,
  portIsFree,
  ROOT,
  type RuntimeUnderTest,
  run,
  shardPids,
  shardThreads,
  spread,
  start,
  unreadByServer,
} from "./helpers.ts";

const FAULT_APP = join(FIXTURES, "fault-app.ts");

/** The launcher's own lines: one per message, all prefixed. */
const shardportLines = (output: string) => output.split("\n").filter((line) => line.startsWith("shardport:"));

/**
 * Starts 4 shards, sends 800 requests on fresh connections, checks every shard answered and the
 * spread is uniform (chi-squared p > 0.001, each shard at least half its fair share), then SIGTERM:
 * exit 0 and a free port. Returns the pids that answered.
 */
async function spreadAndStop(rt: RuntimeUnderTest, extra: string[]) {
  const port = freshPort();
  const app = await start(rt, ["--shards", "4", "--port", String(port), ...extra]);
  assert.equal(app.shards, 4);
  assert.equal(app.url, `http://127.0.0.1:${port}`);
  if (rt.fallback) assert.match(app.output(), /falling back to node:cluster/);

  const total = 800;
  const counts = await spread(app.url, total);
  const shards = [...counts.keys()];
  assert.equal(shards.length, 4, `4 shards answer: ${JSON.stringify([...counts])}`);
  const pids = shards.map((shard) => Number(shard.split("/")[0]));
  assert.ok(pids.every((pid) => Number.isInteger(pid)));
  if (!extra.includes("threads")) assert.ok(pids.every((pid) => pid !== app.launcherPid));
  const shares = [...counts.values()];
  const { chi2, p } = chiSquaredUniformP(shares);
  assert.ok(p > 0.001, `uniform spread: counts ${shares}, chi2 ${chi2.toFixed(2)}, p ${p}`);
  for (const share of shares)
    assert.ok(share >= total / 4 / 2, `each shard gets half its fair share: ${shares}`);

  process.kill(app.launcherPid, "SIGTERM");
  assert.equal(await app.exited, 0, app.output());
  assert.ok(await portIsFree(port), "the port is free after the launcher exits");
  return { launcherPid: app.launcherPid, pids };
}

export function shardSuite(rt: RuntimeUnderTest): void {
  describe(`shardport on ${rt.name}`, () => {
    after(killLeftovers);
    test("every shard answers, fresh connections spread evenly, SIGTERM drains and frees the port", async () => {
      const { pids } = await spreadAndStop(rt, []);
      assert.ok(
        pids.every((pid) => !isAlive(pid)),
        "no shard outlives the launcher",
      );
    });

    if (!rt.fallback) {
      test("threads mode: every shard thread answers, fresh connections spread evenly, SIGTERM frees the port", async () => {
        const { launcherPid, pids } = await spreadAndStop(rt, ["--mode", "threads"]);
        assert.ok(
          pids.every((pid) => pid === launcherPid),
          "the shards are threads of the launcher",
        );
      });
      test("threads mode: a port conflict exits 1, an app that fails to load in a shard exits 2, with the reason", async () => {
        const port = freshPort();
        const holder = await plainListener(port);
        // --join: past the port guard (test/guard.test.ts), to the kernel's own refusal.
        const conflict = run(rt, ["--mode", "threads", "--shards", "2", "--port", String(port), "--join"]);
        assert.equal(await conflict.exited, 1, conflict.output());
        assert.match(
          conflict.output(),
          new RegExp(`127\\.0\\.0\\.1:${port} is in use by a listener without SO_REUSEPORT`),
        );
        await new Promise((resolve) => holder.close(resolve));
        const failing = run(rt, [
          "--mode",
          "threads",
          "--shards",
          "2",
          "--port",
          String(port),
          "test/fixtures/fails-in-shard-1.ts",
        ]);
        assert.equal(await failing.exited, 2, failing.output());
        assert.match(
          failing.output(),
          /app module .*fails-in-shard-1\.ts failed to load: shard 1 refuses to start/,
        );
        assert.ok(await portIsFree(port));
      });
    }

    test("drain with keep-alive clients: idle connections close at once, a response in flight closes its connection", async () => {
      const modes = rt.fallback ? [[]] : [[], ["--mode", "threads"]];
      const https = [[], ["--http", "node"]].slice(0, rt.runtime === "deno" ? 2 : 1);
      for (const mode of modes) {
        for (const server of https) {
          const extra = [...mode, ...server];
          const app = await start(rt, ["--shards", "2", "--port", String(freshPort()), ...extra, FAULT_APP]);
          const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 60_000 });
          // Idle keep-alive connections, on whichever shards the kernel picked.
          const idle = await Promise.all(Array.from({ length: 4 }, () => agentGet(app.url, agent)));
          assert.ok(idle.every((reply) => reply.status === 200));
          const slow = agentGet(`${app.url}/slow?ms=500`, agent);
          await app.waitFor(/slow request started/);
          const signalled = Date.now();
          process.kill(app.launcherPid, "SIGTERM");
          const reply = await slow;
          const code = await app.exited;
          const took = Date.now() - signalled;
          agent.destroy();
          assert.equal(reply.status, 200, `${extra.join(" ")}: ${reply.body}`);
          assert.equal(code, 0, app.output());
          assert.ok(took < 500 + 1000, `${extra.join(" ")}: the launcher exited ${took} ms after SIGTERM`);
          if (rt.runtime === "node" || server.includes("node"))
            assert.equal(reply.headers.connection, "close", "a response sent while draining closes");
        }
      }
    });

    if (!rt.fallback) {
      test("/readyz answers 503 from a shard that is really draining (a request it had begun to read)", async () => {
        // Deno.serve drops a connection whose request it has not read when it shuts down.
        const http = rt.runtime === "deno" ? ["--http", "node"] : [];
        for (const mode of [
          ["--mode", "process"],
          ["--mode", "threads"],
        ]) {
          const port = freshPort();
          // The demo app mounts health().
          const app = await start(rt, ["--shards", "2", "--port", String(port), ...mode, ...http]);
          const socket = net.connect(port, "127.0.0.1");
          await new Promise((resolve) => socket.once("connect", resolve));
          let answer = "";
          socket.on("data", (chunk) => {
            answer += chunk;
          });
          const closed = new Promise((resolve) => socket.once("close", resolve));
          // Half a request: the shard that accepted it is busy with it, so it must answer it.
          socket.write("GET /readyz HTTP/1.1\r\nHost: x\r\n");
          const read = () => unreadByServer(port, socket.localPort ?? 0) === 0;
          assert.ok(await eventually(read, 5000), "the shard read the first half");
          process.kill(app.launcherPid, "SIGTERM");
          // Both shards closed their listeners: they are draining (they mark it before closing).
          assert.ok(await eventually(() => listenAddresses(port).length === 0, 5000), "the shards drain");
          socket.write("\r\n");
          await closed;
          assert.match(answer, /^HTTP\/1\.1 503 /, `${mode.join(" ")}: ${answer}`);
          assert.match(answer, /\r\n\r\ndraining\n$/);
          assert.equal(await app.exited, 0);
        }
      });
    }

    test("a user's app module (TypeScript Hono, or a plain { fetch }) is served; flags beat env", async () => {
      for (const [module, path, expected] of [
        ["test/fixtures/user-app.ts", "/json", /"ok":true/],
        ["test/fixtures/fetch-object.js", "/x", /^plain fetch \/x$/],
      ] as const) {
        const port = freshPort();
        const app = await start(
          rt,
          ["--shards", "2", "--port", String(port), "--host", "127.0.0.1", module],
          {
            SHARDS: "0",
            PORT: "1",
            HOST: "0.0.0.0",
          },
        );
        assert.equal(app.shards, 2, "--shards beats SHARDS");
        assert.equal(app.url, `http://127.0.0.1:${port}`, "--port and --host beat PORT and HOST");
        const reply = await get(`${app.url}${path}`);
        assert.equal(reply.status, 200);
        assert.match(reply.body, expected);
        if (module.endsWith("fetch-object.js")) {
          // A bug in a plain { fetch }: a bare 500, never the error (Bun's development page would
          // send its message, stack and the working folder), and the shard serves on.
          const failed = await get(`${app.url}/throw`);
          assert.equal(failed.status, 500);
          assert.doesNotMatch(failed.body, /app's bug|<html|fetch-object/i, failed.body);
          // ... and the error in the shard's log, where someone can look for it.
          await app.waitFor(/an app's bug, not for the client's eyes/, 5000);
          assert.equal((await get(`${app.url}/y`)).status, 200);
        }
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      }
    });

    test("SHARDS, PORT and HOST are read when no flag is given", async () => {
      const port = freshPort();
      // Not the default host: 127.0.0.2 is loopback too (all of 127/8 is, on Linux).
      const app = await start(rt, [], { SHARDS: "2", PORT: String(port), HOST: "127.0.0.2" });
      assert.equal(app.shards, 2);
      assert.equal(app.url, `http://127.0.0.2:${port}`);
      const hex = `0200007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
      // node:cluster's primary holds the one listener of the fallback.
      const listeners = rt.fallback ? [hex] : [hex, hex];
      assert.deepEqual(listenAddresses(port), listeners, "the shards listen on 127.0.0.2 only");
      assert.equal((await shardPids(app.url, 2)).size, 2);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("bad input: one line naming the problem, exit 2, nothing started", async () => {
      const cases: [string[], RegExp, Record<string, string>?][] = [
        [["--shards", "0"], /--shards must be an integer from 1 to 1024, got '0'/],
        [["--shards", "-1"], /--shards must be an integer from 1 to 1024, got '-1'/],
        [["--shards", "abc"], /--shards must be an integer from 1 to 1024, got 'abc'/],
        [["--shards", "1025"], /--shards must be an integer from 1 to 1024, got '1025'/],
        [[], /SHARDS must be an integer from 1 to 1024, got 'many'/, { SHARDS: "many" }],
        [
          ["--port", "0"],
          /--port must be .* got '0' \(port 0 would give every shard a different random port\)/,
        ],
        [["--port", "-80"], /--port must be an integer from 1 to 65535, got '-80'/],
        [["--port", "65536"], /--port must be an integer from 1 to 65535, got '65536'/],
        [["--port", "http"], /--port must be an integer from 1 to 65535, got 'http'/],
        [["--frobnicate"], /unknown flag --frobnicate/],
        [["--http", "h3"], /--http must be native or node, got 'h3'/],
        [["test/fixtures/missing.ts"], /app module not found: .*test\/fixtures\/missing\.ts/],
        [["--app", "test/fixtures/no-fetch.ts"], /app module .*no-fetch\.ts exports no fetch/],
        [
          ["test/fixtures/throws-at-import.ts"],
          /^shardport: error: app module .*throws-at-import\.ts failed to load: this app throws at import$/,
        ],
        [["--mode", "fork"], /--mode must be process or threads, got 'fork'/],
        [["--metrics-port", "0"], /--metrics-port must be an integer from 1 to 65535, got '0'/],
        [["--metrics-port", "http"], /--metrics-port must be an integer from 1 to 65535, got 'http'/],
        [["--drain-timeout", "-1"], /--drain-timeout must be an integer from 0 to 3600000, got '-1'/],
        [["--drain-timeout", "10s"], /--drain-timeout must be an integer from 0 to 3600000, got '10s'/],
        [["--ready-timeout", "0"], /--ready-timeout must be an integer from 1 to 3600000, got '0'/],
        [["--ready-timeout", "1.5"], /--ready-timeout must be an integer from 1 to 3600000, got '1.5'/],
        [["scale", "0"], /scale must be an integer from 1 to 1024, got '0'/],
        [["scale", "-1"], /scale must be an integer from 1 to 1024, got '-1'/],
        [["scale", "1025"], /scale must be an integer from 1 to 1024, got '1025'/],
        [["scale"], /scale needs a shard count, 1-1024/],
        [["--max-memory", "0"], /--max-memory must be an integer from 1 to 1048576, got '0'/],
        [["--max-requests", "many"], /--max-requests must be an integer from 1 to 1000000000, got 'many'/],
        [["--max-requests-jitter", "10"], /--max-requests-jitter needs --max-requests/],
        [["--mode", "threads", "--max-memory", "100"], /--max-memory needs --mode process/],
      ];
      // Each case its own port: two cases that get as far as the control socket must not meet there.
      const ports = cases.map(() => String(freshPort()));
      await Promise.all(
        cases.map(async ([args, message, env], i) => {
          const proc = run(rt, ["--port", ports[i], ...args], env);
          const code = await proc.exited;
          const lines = shardportLines(proc.output());
          assert.equal(code, 2, `${args.join(" ")}: exit 2\n${proc.output()}`);
          assert.equal(lines.length, 1, `${args.join(" ")}: one line\n${proc.output()}`);
          assert.match(lines[0], message);
        }),
      );
      for (const port of ports) assert.ok(await portIsFree(Number(port)), "no shard started");
    });

    test("`reload` and `stop` commands reach the launcher through its control socket", async () => {
      const port = String(freshPort());
      const app = await start(rt, ["--shards", "2", "--port", port]);
      const before = await shardPids(app.url, 2);
      assert.equal(before.size, 2, "both shards answered before the reload");
      const reload = run(rt, ["reload", "--port", port]);
      assert.equal(await reload.exited, 0, reload.output());
      // It answers once the reload is done.
      assert.match(
        reload.output(),
        new RegExp(`reloaded http://127.0.0.1:${port} \\(launcher pid ${app.launcherPid}\\): generation 1`),
      );
      assert.match(app.output(), /reload done: 2 shards replaced/);
      const after = await shardPids(app.url, 2);
      assert.equal(after.size, 2, "both new shards answered after the reload");
      assert.ok(
        [...after].every((pid) => !before.has(pid)),
        "new shards after reload",
      );
      const stop = run(rt, ["stop", "--port", port]);
      assert.equal(await stop.exited, 0);
      assert.match(
        stop.output(),
        new RegExp(`stopped http://127.0.0.1:${port} \\(launcher pid ${app.launcherPid}\\)`),
      );
      assert.equal(await app.exited, 0);
      const none = run(rt, ["reload", "--port", port]);
      assert.equal(await none.exited, 1);
      assert.match(none.output(), new RegExp(`no shardport launcher for 127.0.0.1:${port}`));
    });

    test("status table, Prometheus metrics from the launcher, access log", async () => {
      const port = freshPort();
      const metricsPort = freshPort();
      const app = await start(rt, [
        "--shards",
        "2",
        "--port",
        String(port),
        "--metrics-port",
        String(metricsPort),
        "--access-log",
      ]);
      // The only traffic the shards see: 40 requests answered 200, then one 404.
      const total = 40;
      const served = await spread(app.url, total);
      const pids = new Set([...served.keys()].map((shard) => Number(shard.split("/")[0])));
      assert.equal(pids.size, 2, `both shards answered: ${JSON.stringify([...served])}`);
      await get(`${app.url}/no-such-page`);
      const access = await app.waitFor(/^\{.*"path":"\/no-such-page".*\}$/m);
      const entry = JSON.parse(access[0]);
      assert.equal(entry.level, "info");
      assert.equal(entry.method, "GET");
      assert.equal(entry.status, 404);
      assert.ok(pids.has(entry.pid) || rt.fallback, "logged by the shard that served it");
      assert.ok(Number.isInteger(entry.shard) && typeof entry.ms === "number");

      const status = run(rt, ["status", "--port", String(port)]);
      assert.equal(await status.exited, 0, status.output());
      const rows = status
        .output()
        .split("\n")
        .filter((line) => /^\d+\s+(pid|thread) /.test(line));
      assert.equal(rows.length, 2, status.output());
      for (const row of rows)
        assert.match(row, /^\d+\s+(pid \d+|thread \d+)\s+ready\s+\d+s\s+\d+\s+[\d.]+ MB\s+0$/);
      // Exact: each shard's 200s as the bodies said, plus the 404 for the shard that logged it.
      const counted = new Map(
        rows.map((row) => row.split(/\s+/)).map((cols) => [Number(cols[0]), Number(cols[5])]),
      );
      const expected = new Map([0, 1].map((index) => [index, index === entry.shard ? 1 : 0]));
      for (const [shard, count] of served) {
        const index = Number(shard.split("/")[1]);
        expected.set(index, (expected.get(index) ?? 0) + count);
      }
      assert.deepEqual(counted, expected, `status counts every request exactly:\n${status.output()}`);

      const metrics = await get(`http://127.0.0.1:${metricsPort}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(metrics.body, /^shardport_shards_ready 2$/m);
      assert.match(metrics.body, /^shardport_requests_total\{shard="0",status="200"\} \d+$/m);
      assert.match(metrics.body, /^shardport_request_duration_seconds_bucket\{le="\+Inf",shard="1"\} \d+$/m);
      // Per shard only: a pre-summed total would fall when a shard restarts (README, Metrics).
      assert.doesNotMatch(metrics.body, /shard="all"/);
      const sum = (status: number) =>
        [
          ...metrics.body.matchAll(
            new RegExp(`^shardport_requests_total\\{shard="\\d+",status="${status}"\\} (\\d+)$`, "gm"),
          ),
        ]
          .map((match) => Number(match[1]))
          .reduce((a, b) => a + b, 0);
      assert.equal(sum(200), total, "the shards' 200s, each counted once");
      assert.equal(sum(404), 1, "and their 404s");
      assert.match(metrics.body, /^shardport_shards_configured 2$/m);
      assert.match(metrics.body, /^shardport_reloads_total 0$/m);

      if (!rt.fallback) {
        const victim = [...pids][0];
        process.kill(victim, "SIGKILL");
        await app.waitFor(/shard \d restarted as/);
        const after = await get(`http://127.0.0.1:${metricsPort}/metrics`);
        assert.match(after.body, /^shardport_shard_restarts_total\{shard="\d"\} 1$/m);
      }
      // A SIGHUP to the whole process group (a terminal's hang-up, `kill -HUP -- -PGID`) reaches
      // the shards too: they ignore it. Sent to each shard here, since a package runner may
      // forward the group's signal to the launcher once more (`deno task` does: two reloads).
      for (const pid of await shardPids(app.url, 2)) process.kill(pid, "SIGHUP");
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload done: 2 shards replaced/);
      assert.doesNotMatch(app.output(), /SIGHUP/, "no shard ended by the SIGHUP");
      const reloaded = await get(`http://127.0.0.1:${metricsPort}/metrics`);
      assert.match(reloaded.body, /^shardport_reloads_total 1$/m);
      assert.match(reloaded.body, /^shardport_shards_configured 2$/m);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0, app.output());
    });

    test("logs: one JSON line per event on stdout; a readable line with SHARDPORT_LOG_FORMAT=pretty; one SIGINT (Ctrl-C) exits 0", async () => {
      const port = freshPort();
      const app = await start(rt, ["--shards", "2", "--port", String(port)]);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      const events = app
        .output()
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line));
      const listening = events.find((e) => /^listening on /.test(e.message));
      assert.ok(listening, app.output());
      assert.equal(listening.level, "info");
      assert.equal(listening.pid, app.launcherPid);
      assert.equal(listening.shard, null);
      assert.ok(!Number.isNaN(Date.parse(listening.time)));
      assert.ok(events.some((e) => e.message === "stopped"));

      const pretty = await start(rt, ["--shards", "2", "--port", String(freshPort())], {
        SHARDPORT_LOG_FORMAT: "pretty",
      });
      assert.match(pretty.output(), /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): launcher: listening on /m);
      process.kill(pretty.launcherPid, "SIGINT");
      assert.equal(await pretty.exited, 0, "a single Ctrl-C drains and exits 0");
      assert.match(pretty.output(), /INFO \(\d+\): launcher: stopped$/m);
    });

    test("reloads asked for during a reload are queued (and coalesced), never interleaved", async () => {
      // While the flag file exists each new shard takes 1 s to load: a reload of 2 lasts 2 s.
      const delay = join(ROOT, "test", ".tmp", `${rt.name}-coalesce`);
      mkdirSync(dirname(delay), { recursive: true });
      const port = freshPort();
      const app = await start(
        rt,
        ["--shards", "2", "--port", String(port), "test/fixtures/lifecycle-app.ts"],
        {
          DELAY_FILE: delay,
          DELAY_MS: "1000",
        },
      );
      writeFileSync(delay, "");
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(/reload 1\/2: /);
      // Three more asks during generation 1, each delivered on its own (a signal sent twice before
      // it is handled is delivered once): all three are the one queued reload, generation 2.
      const ask = () => queryLauncher("127.0.0.1", port, "reload", { timeoutMs: 0 });
      const asked = [ask(), ask()];
      process.kill(app.launcherPid, "SIGHUP");
      assert.deepEqual(
        (await Promise.all(asked)).map((answer) => (answer as { generation: number }).generation),
        [2, 2],
      );
      rmSync(delay);
      // Nothing else was queued: the next reload is generation 3.
      assert.equal(((await ask()) as { generation: number }).generation, 3);
      const steps = app
        .output()
        .split("\n")
        .map((line) => /reload (\d)\/2: |reload done: .*\(generation (\d)\)/.exec(line))
        .filter((match) => match !== null)
        .map((match) => match[1] ?? `done ${match[2]}`);
      assert.deepEqual(steps, ["1", "2", "done 1", "1", "2", "done 2", "1", "2", "done 3"]);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    });

    test("--help prints usage and exits 0", async () => {
      const proc = run(rt, ["--help"]);
      assert.equal(await proc.exited, 0);
      assert.match(proc.output(), /Usage: shardport/);
      assert.match(proc.output(), /--shards N/);
    });

    test("port held by a listener without SO_REUSEPORT: exit 1 naming host:port and the cause", async () => {
      const port = freshPort();
      const holder = await plainListener(port);
      try {
        // --join: past the port guard (test/guard.test.ts), to the kernel's own refusal.
        const proc = run(rt, ["--shards", "2", "--port", String(port), "--join"]);
        assert.equal(await proc.exited, 1, proc.output());
        assert.match(
          proc.output(),
          new RegExp(`127\\.0\\.0\\.1:${port} is in use by a listener without SO_REUSEPORT`),
        );
      } finally {
        await new Promise((resolve) => holder.close(resolve));
      }
      assert.ok(await portIsFree(port), "no shard left on the port");
    });

    test("port held by another user's SO_REUSEPORT group: exit 1 naming host:port and the UID rule", async (t) => {
      const port = freshPort();
      const holder = await foreignReusePortListener(port);
      if ("skip" in holder) return t.skip(holder.skip);
      try {
        const proc = run(rt, ["--shards", "2", "--port", String(port)]);
        assert.equal(await proc.exited, 1, proc.output());
        assert.match(
          proc.output(),
          new RegExp(`127\\.0\\.0\\.1:${port} is in use by another user \\(uid \\d+\\)`),
        );
        assert.match(proc.output(), /same effective UID/);
      } finally {
        holder.close();
      }
      assert.ok(await eventually(() => portIsFree(port), 5000), "no shard left on the port");
    });

    test("an app that fails to load in one shard: exit 2 with its one line, the other shards stopped", async () => {
      const port = freshPort();
      const proc = run(rt, ["--shards", "2", "--port", String(port), "test/fixtures/fails-in-shard-1.ts"]);
      assert.equal(await proc.exited, 2, proc.output());
      const lines = shardportLines(proc.output());
      assert.equal(lines.length, 1, proc.output());
      assert.match(
        lines[0],
        /^shardport: error: app module .*fails-in-shard-1\.ts failed to load: shard 1 refuses to start$/,
      );
      assert.ok(await portIsFree(port), "shard 0 was stopped too");
    });

    test("a shard that is not ready within --ready-timeout at the start: exit 1 saying so, nothing left", async () => {
      const port = freshPort();
      const app = join(FIXTURES, "hangs-when-flagged.ts");
      // The flag file exists (the app itself): every shard hangs at import.
      const proc = run(rt, ["--shards", "2", "--port", String(port), "--ready-timeout", "1000", app], {
        FLAG_FILE: app,
      });
      assert.equal(await proc.exited, 1, proc.output());
      const lines = shardportLines(proc.output());
      assert.equal(lines.length, 1, proc.output());
      assert.match(
        lines[0],
        /^shardport: error: cannot serve on http:\/\/127\.0\.0\.1:\d+: shard \d was not ready within 1000 ms$/,
      );
      assert.ok(await portIsFree(port));
    });

    for (const mode of rt.fallback ? ["process"] : ["process", "threads"]) {
      test(`${mode} mode: the app runs in the shards only, its import-time work exactly N times`, async () => {
        const countDir = mkdtempSync(join(tmpdir(), "shardport-count-"));
        after(() => rmSync(countDir, { recursive: true, force: true }));
        const countFile = join(countDir, "imports");
        const app = await start(
          rt,
          ["--shards", "3", "--port", String(freshPort()), "--mode", mode, "test/fixtures/side-effects.ts"],
          // A Deno shard process may write only where it is allowed to.
          { COUNT_FILE: countFile, SHARDPORT_DENO_FLAGS: `--allow-write=${countFile}` },
        );
        const imports = () => readFileSync(countFile, "utf8").split("\n").filter(Boolean).sort();
        assert.deepEqual(imports(), ["0", "1", "2"], "one import per shard, none in the launcher");
        if (mode === "threads") assert.equal(shardThreads(app.launcherPid), 3, "3 shard threads");
        process.kill(app.launcherPid, "SIGHUP");
        await app.waitFor(/reload done: 3 shards replaced/);
        assert.deepEqual(imports(), ["0", "0", "1", "1", "2", "2"], "a reload imports it once per new shard");
        if (mode === "threads") {
          // The old threads are gone, not only out of the table: 3 shard threads, not 6.
          const gone = await eventually(() => shardThreads(app.launcherPid) === 3, 10_000);
          assert.ok(gone, `shard threads after the reload: ${shardThreads(app.launcherPid)}`);
        }
        process.kill(app.launcherPid, "SIGTERM");
        assert.equal(await app.exited, 0);
      });
    }

    test("launcher SIGKILLed: every shard exits within 5 s, the port is freed", async () => {
      const port = freshPort();
      const app = await start(rt, ["--shards", "2", "--port", String(port)]);
      const pids = await shardPids(app.url, 2);
      assert.equal(pids.size, 2);
      process.kill(app.launcherPid, "SIGKILL");
      assert.ok(
        await eventually(() => [...pids].every((pid) => !isAlive(pid)), 5000),
        `orphans left: ${[...pids].filter(isAlive)}`,
      );
      assert.ok(await eventually(() => portIsFree(port), 2000));
      await app.exited;
    });
  });
}
