// Running it for real: library use, the health middleware, and the deploy/ manifests.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Hono } from "hono";
import { parseAllDocuments } from "yaml";
import { pidFilePath, socketPath } from "../src/launcher/control.ts";
import type { ShardSpec } from "../src/protocol.ts";
import { runtimeDir } from "../src/runtime-dir.ts";
import { health, healthRoutes, isDraining, markDraining } from "../src/shard/health.ts";
import { setCurrentShard } from "../src/shard/info.ts";
import {
  ENV,
  freshPort,
  get,
  isAlive,
  killLeftovers,
  portIsFree,
  ROOT,
  RUNTIMES,
  type RuntimeUnderTest,
  run,
  shardPids,
  start,
} from "./helpers.ts";

after(killLeftovers);

const DENO_LAUNCHER_FLAGS = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"))
  .tasks.start.split(" ")
  .filter((word: string) => word.startsWith("--"));

const library: RuntimeUnderTest[] = [
  { name: "bun", runtime: "bun", command: () => ["bun", "test/fixtures/library/bun.ts"] },
  {
    name: "deno",
    runtime: "deno",
    command: () => ["deno", "run", ...DENO_LAUNCHER_FLAGS, "test/fixtures/library/deno.ts"],
  },
  { name: "node", runtime: "node", command: () => ["node", "test/fixtures/library/node.ts"] },
];

describe('library use: import { start } from "shardport/<runtime>"', () => {
  for (const rt of library) {
    test(`${rt.name}: start() refuses a bad option, then serves the app and drains on SIGTERM`, async () => {
      const port = freshPort();
      const proc = run(rt, [], { LIBRARY_PORT: String(port) });
      await proc.waitFor(/LIBRARY-READY (\S+) 2/);
      assert.match(proc.output(), /REFUSED --shards must be an integer from 1 to 1024, got '0'/);
      const reply = await get(`http://127.0.0.1:${port}/`);
      assert.match(reply.body, /\(fixture\)/);
      const launcherPid = Number(/launcher pid (\d+)/.exec(proc.output())?.[1]);
      process.kill(launcherPid, "SIGTERM");
      assert.equal(await proc.exited, 0);
    });

    test(`${rt.name}: server.reload() replaces every shard, server.stop() drains them all`, async () => {
      const port = freshPort();
      const proc = run(rt, [], { LIBRARY_PORT: String(port) });
      await proc.waitFor(/LIBRARY-READY (\S+) 2/);
      const url = `http://127.0.0.1:${port}`;
      const before = await shardPids(url, 2);
      assert.equal(before.size, 2);
      const launcherPid = Number(/launcher pid (\d+)/.exec(proc.output())?.[1]);
      process.kill(launcherPid, "SIGUSR2"); // the fixture calls reload(), then stop()
      await proc.waitFor(/LIBRARY-RELOADED/);
      const reloaded = proc.output().split("LIBRARY-RELOADED")[0];
      assert.match(reloaded, /reload done: 2 shards replaced in \d+ ms \(generation 1\)/);
      const replaced = [...reloaded.matchAll(/reload \d\/2: shard \d pid (\d+) -> pid (\d+)/g)];
      assert.deepEqual(
        new Set(replaced.map((match) => Number(match[1]))),
        before,
        "both old shards replaced",
      );
      await proc.waitFor(/LIBRARY-STOPPED/);
      // stop() has resolved: every shard of the new generation is gone, the port is free.
      const current = replaced.map((match) => Number(match[2]));
      assert.equal(current.length, 2);
      assert.deepEqual(current.filter(isAlive), [], "no shard outlives stop()");
      assert.ok(await portIsFree(port), "the port is free once stop() resolves");
      // stop() gave back the control socket, the pid file and the signals: start() again serves.
      await proc.waitFor(/LIBRARY-RESTARTED (\S+) 1/);
      assert.match((await get(`${url}/`)).body, /\(fixture\)/);
      const status = run(RUNTIMES.node, ["status", "--port", String(port)]);
      assert.equal(await status.exited, 0, status.output());
      assert.match(status.output(), new RegExp(`launcher pid ${launcherPid}, 0 reloads`));
      // Then stop() again: nothing of shardport keeps the process alive, it ends by itself.
      process.kill(launcherPid, "SIGUSR2");
      await proc.waitFor(/LIBRARY-STOPPED-AGAIN/);
      assert.equal(await proc.exited, 0, proc.output());
      assert.equal(existsSync(pidFilePath("127.0.0.1", port)), false, "no pid file left");
      assert.equal(existsSync(socketPath("127.0.0.1", port)), false, "no control socket left");
    });
  }
});

describe("control files", () => {
  test("the pid file and control socket sit in a directory only the launching user can use", async () => {
    const port = freshPort();
    const node: RuntimeUnderTest = {
      name: "node",
      runtime: "node",
      command: (args) => ["node", "dist/node.js", ...args],
    };
    const app = await start(node, ["--shards", "1", "--port", String(port)]);
    const pidFile = pidFilePath("127.0.0.1", port);
    assert.equal(statSync(runtimeDir()).mode & 0o777, 0o700);
    assert.equal(statSync(pidFile).mode & 0o777, 0o600);
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(app.launcherPid));
    assert.equal(statSync(pidFile.replace(/\.pid$/, ".sock")).mode & 0o777, 0o600);
    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0);
    assert.ok(!existsSync(pidFile), "removed at exit");
  });
});

describe("control files: a directory that is not safe is refused", () => {
  const node: RuntimeUnderTest = {
    name: "node",
    runtime: "node",
    command: (args) => ["node", "dist/node.js", ...args],
  };
  const cases: [string, (dir: string) => void][] = [["mode 0755", (dir) => chmodSync(dir, 0o755)]];
  // Only root can give a directory to someone else.
  if (process.getuid?.() === 0) cases.push(["owned by nobody", (dir) => chownSync(dir, 65534, 65534)]);
  for (const [name, spoil] of cases) {
    test(`${name}: the launcher serves without a pid file, and \`status\` says why it finds none`, async () => {
      const runtimeDir = mkdtempSync(join(tmpdir(), "shardport-xdg-"));
      const dir = join(runtimeDir, "shardport");
      mkdirSync(dir, { mode: 0o700 });
      spoil(dir);
      const env = { XDG_RUNTIME_DIR: runtimeDir };
      const port = String(freshPort());
      const app = await start(node, ["--shards", "1", "--port", port], env);
      const refusal = `${dir} must belong to you with mode 0700: remove it and start again`;
      assert.ok(app.output().includes(`cannot find this launcher: ${refusal}`), app.output());
      assert.deepEqual(readdirSync(dir), [], "nothing written into it");
      const status = run(node, ["status", "--port", port], env);
      assert.equal(await status.exited, 1, status.output());
      assert.equal(status.output(), `shardport: error: ${refusal}\n`);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
      rmSync(runtimeDir, { recursive: true });
    });
  }
});

describe("shardport/shard", () => {
  test("the shard's spec and pid, the same through the sources and the bundled dist/shard.js", async () => {
    const bundled = await import("shardport/shard");
    assert.equal(bundled.currentShard(), undefined, "outside a shard");
    assert.equal(bundled.currentPid(), process.pid);
    assert.equal(bundled.runtimeName(), "node");
    const spec = { index: 3, generation: 2 } as ShardSpec;
    setCurrentShard(spec);
    try {
      assert.equal(bundled.currentShard(), spec, "one spec for the shard and the app's copy");
    } finally {
      delete (globalThis as Record<symbol, unknown>)[Symbol.for("shardport.shard")];
    }
  });
});

describe("health middleware", () => {
  test("liveness is always 200; readiness turns 503 once the shard drains", async () => {
    const app = new Hono().use(health()).get("/", (c) => c.text("app"));
    assert.equal((await app.request("/livez")).status, 200);
    assert.equal((await app.request("/readyz")).status, 200);
    assert.equal(await (await app.request("/")).text(), "app");
    assert.equal(isDraining(), false);
    markDraining();
    assert.equal((await app.request("/readyz")).status, 503);
    assert.equal((await app.request("/livez")).status, 200);
    // The same as routes of the app (HEAD too), on a shard that is draining by now.
    const routed = healthRoutes(new Hono()).get("/", (c) => c.text("app"));
    assert.equal((await routed.request("/livez")).status, 200);
    assert.equal((await routed.request("/livez", { method: "HEAD" })).status, 200);
    assert.equal((await routed.request("/readyz")).status, 503);
    assert.equal(await (await routed.request("/")).text(), "app");
  });
});

describe("deploy/", () => {
  const drainTimeoutMs = 10_000;

  test("the container entrypoint starts each runtime, bound to HOST, with the probes answering", async () => {
    for (const runtime of ["bun", "deno", "node"] as const) {
      const port = freshPort();
      const entry: RuntimeUnderTest = {
        name: runtime,
        runtime,
        command: (args) => ["deploy/entrypoint.sh", ...args],
      };
      const app = await start(entry, ["--shards", "2"], {
        RUNTIME: runtime,
        HOST: "127.0.0.1",
        PORT: String(port),
      });
      assert.match(app.output(), new RegExp(`with 2 shards \\(${runtime} `));
      assert.equal((await get(`${app.url}/readyz`)).status, 200);
      assert.equal((await get(`${app.url}/livez`)).status, 200);
      process.kill(app.launcherPid, "SIGTERM");
      assert.equal(await app.exited, 0);
    }
  });

  test("Dockerfile: a build argument picks the runtime; binds 0.0.0.0; SIGTERM stops", () => {
    const lines = readFileSync(join(ROOT, "deploy", "Dockerfile"), "utf8").split("\n");
    const has = (pattern: RegExp) => lines.some((line) => pattern.test(line));
    assert.ok(has(/^FROM \S+/));
    assert.ok(has(/^ARG RUNTIME=/));
    assert.ok(has(/HOST=0\.0\.0\.0/));
    assert.ok(has(/^EXPOSE 8080$/));
    assert.ok(has(/^STOPSIGNAL SIGTERM$/));
    assert.ok(has(/^ENTRYPOINT \["\/app\/deploy\/entrypoint\.sh"\]$/));
    // The image is the last stage: production dependencies and one runtime, built dist/ copied in.
    // An `npm install` in /app would reconcile the tree with package.json and bring every dev
    // dependency back (95 packages: TypeScript, PM2, Playwright, the other runtimes).
    const stages = lines.join("\n").split(/^FROM /m);
    assert.equal(stages.length, 3, "a build stage and the image");
    const image = stages[2].replace(/\\\n/g, " ");
    for (const npm of image.match(/npm (ci|install)\b[^&\n]*/g) ?? []) {
      if (npm.startsWith("npm ci")) assert.match(npm, /--omit=dev|--prefix tools/, npm);
      else assert.match(npm, /--prefix \/opt\/\w+/, npm);
    }
    assert.match(image, /^COPY --from=build \/app\/dist dist$/m);
    assert.doesNotMatch(image, /npm run build/);
  });

  test("Kubernetes: probes, preStop, grace period above the drain, CPU limit, Service", () => {
    const docs = parseAllDocuments(readFileSync(join(ROOT, "deploy", "kubernetes.yaml"), "utf8")).map((d) =>
      d.toJS(),
    );
    const deployment = docs.find((d) => d.kind === "Deployment");
    const service = docs.find((d) => d.kind === "Service");
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    assert.equal(container.readinessProbe.httpGet.path, "/readyz");
    assert.equal(container.livenessProbe.httpGet.path, "/livez");
    const preStop = container.lifecycle.preStop.exec.command;
    assert.equal(preStop[0], "sleep");
    const drainArg = container.args[container.args.indexOf("--drain-timeout") + 1];
    assert.equal(Number(drainArg), drainTimeoutMs);
    assert.ok(
      pod.terminationGracePeriodSeconds > Number(preStop[1]) + drainTimeoutMs / 1000,
      "the grace period outlasts preStop plus the drain",
    );
    assert.ok(container.resources.limits.cpu, "a CPU limit for the default shard count to read");
    assert.deepEqual(
      container.env.find((e: { name: string }) => e.name === "HOST"),
      { name: "HOST", value: "0.0.0.0" },
    );
    assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
    assert.equal(service.spec.ports[0].targetPort, container.ports[0].name);
  });

  test("systemd: ExecReload sends SIGHUP, stop waits longer than the drain", () => {
    const unit = new Map<string, string>();
    for (const line of readFileSync(join(ROOT, "deploy", "shardport.service"), "utf8").split("\n")) {
      const match = /^(\w+)=(.*)$/.exec(line.trim());
      if (match) unit.set(match[1], match[2]);
    }
    assert.equal(unit.get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert.equal(unit.get("KillSignal"), "SIGTERM");
    assert.equal(unit.get("KillMode"), "mixed", "SIGTERM to the launcher only; it drains the shards");
    assert.ok(Number(unit.get("TimeoutStopSec")) > drainTimeoutMs / 1000);
    assert.match(unit.get("ExecStart") ?? "", /dist\/node\.js --drain-timeout 10000$/);
  });
});

describe("test/netns.sh", () => {
  test("without root it skips the fault suite with the reason, and in CI (CI=true) that is an error", (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root to run it as another user");
    // A copy that nobody can read: the checkout may sit in a folder only root can enter.
    const dir = mkdtempSync(join(tmpdir(), "shardport-netns-"));
    chmodSync(dir, 0o755);
    const script = join(dir, "netns.sh");
    copyFileSync(join(ROOT, "test", "netns.sh"), script);
    chmodSync(script, 0o755);
    after(() => rmSync(dir, { recursive: true, force: true }));
    const asNobody = (env: Record<string, string | undefined>) =>
      spawnSync(
        "/usr/bin/setpriv",
        [
          "--reuid=nobody",
          "--regid=nogroup",
          "--clear-groups",
          script,
          "sh",
          "-c",
          "echo ran: $SHARDPORT_NO_NETNS",
        ],
        { cwd: dir, env: { ...ENV, ...env }, encoding: "utf8" },
      );
    const local = asNobody({ CI: undefined });
    assert.equal(local.status, 0, local.stderr);
    assert.equal(local.stdout, "ran: needs root for unshare -n\n");
    assert.match(local.stderr, /fault tests skipped: needs root for unshare -n/);
    const ci = asNobody({ CI: "true" });
    assert.equal(ci.status, 1);
    assert.equal(ci.stdout, "", "the suite did not run");
    assert.match(ci.stderr, /^fault tests cannot run in CI: needs root for unshare -n$/m);
  });
});
