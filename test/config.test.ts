// Configuration: precedence of flags over env, and the CPU-aware default shard count.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseConfig } from "../src/launcher/config.ts";
import { cgroupCpuLimit, defaultShardCount } from "../src/launcher/cpus.ts";
import { freshPort, killLeftovers, RUNTIMES, start } from "./helpers.ts";

const fake = mkdtempSync(join(tmpdir(), "shardport-cgroup-"));
after(() => {
  rmSync(fake, { recursive: true, force: true });
  killLeftovers();
});

/** Lays out a fake cgroup tree and /proc/self/cgroup; returns the env that points cpus.ts at it. */
function cgroup(name: string, selfCgroup: string, files: Record<string, string>) {
  const root = join(fake, name);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  writeFileSync(join(root, "self-cgroup"), selfCgroup);
  return { SHARDPORT_CGROUP_ROOT: root, SHARDPORT_PROC_CGROUP: join(root, "self-cgroup") };
}

function withEnv<T>(env: Record<string, string>, body: () => T): T {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    return body();
  } finally {
    process.env = saved;
  }
}

describe("CPU-aware default shard count", () => {
  test("cgroup v2 cpu.max: the tightest quota on the path, rounded up", (t) => {
    // 1.5 CPUs: rounded up that is 2 shards, rounded down 1; telling them apart needs 2 CPUs.
    if (availableParallelism() < 2) return t.skip("needs 2 usable CPUs to tell 2 shards from 1");
    const env = cgroup("v2", "0::/kubepods/pod1/app\n", {
      "kubepods/cpu.max": "400000 100000\n",
      "kubepods/pod1/cpu.max": "150000 100000\n",
      "kubepods/pod1/app/cpu.max": "max 100000\n",
    });
    withEnv(env, () => {
      assert.equal(cgroupCpuLimit(), 1.5);
      assert.equal(defaultShardCount(), 2);
    });
  });

  test("cgroup v1 cfs_quota_us; -1 means no quota", () => {
    const limited = cgroup("v1", "4:cpu,cpuacct:/docker/abc\n", {
      "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    });
    withEnv(limited, () => {
      assert.equal(cgroupCpuLimit(), 0.5);
      assert.equal(defaultShardCount(), 1);
    });
    const unlimited = cgroup("v1-none", "4:cpu,cpuacct:/\n", {
      "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
      "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    });
    withEnv(unlimited, () => assert.equal(cgroupCpuLimit(), undefined));
  });

  for (const rt of [RUNTIMES.bun, RUNTIMES.deno, RUNTIMES.node]) {
    test(`${rt.name}: one shard per CPU of the quota, and of the affinity mask, without --shards`, async () => {
      const env = cgroup(`cli-${rt.name}`, "0::/svc\n", { "svc/cpu.max": "100000 100000\n" });
      const quota = await start(rt, ["--port", String(freshPort())], env);
      assert.equal(quota.shards, 1);
      process.kill(quota.launcherPid, "SIGTERM");
      assert.equal(await quota.exited, 0);

      const pinned = { ...rt, command: (args: string[]) => ["taskset", "-c", "0", ...rt.command(args)] };
      const affinity = await start(pinned, ["--port", String(freshPort())]);
      assert.equal(affinity.shards, 1);
      process.kill(affinity.launcherPid, "SIGTERM");
      assert.equal(await affinity.exited, 0);
    });
  }
});

describe("configuration", () => {
  const app = "/srv/app.ts";
  test("defaults", () => {
    const config = parseConfig([], {}, app);
    assert.equal(config.port, 8080);
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.app, app);
    assert.equal(config.shards, defaultShardCount());
  });
  test("a flag beats its environment variable", () => {
    const env = { SHARDS: "3", PORT: "9000", HOST: "0.0.0.0" };
    assert.deepEqual((({ shards, port, host }) => ({ shards, port, host }))(parseConfig([], env, app)), {
      shards: 3,
      port: 9000,
      host: "0.0.0.0",
    });
    const flagged = parseConfig(["--shards=5", "--port", "9001", "--host", "::1"], env, app);
    assert.deepEqual([flagged.shards, flagged.port, flagged.host], [5, 9001, "::1"]);
  });
  test("words with -- inside are values, not flags; flags named like object properties are unknown", () => {
    const dir = mkdtempSync(join(tmpdir(), "shardport-a--b-"));
    try {
      const tls = ["--tls-cert", `${dir}/site--1.pem`, "--tls-key", `${dir}/site--1.key`];
      const config = parseConfig(["./my--app.ts", `--watch=${dir}`, ...tls], {}, app);
      assert.match(config.app, /\/my--app\.ts$/);
      assert.deepEqual(config.watch, [dir]);
      assert.equal(config.tls?.cert, `${dir}/site--1.pem`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(
      () => parseConfig(["--constructor=1"], {}, app),
      /unknown flag --constructor \(see --help\)/,
    );
    assert.throws(() => parseConfig(["--help=1"], {}, app), /Option '-h, --help' does not take an argument/);
  });
  test("two app modules are refused", () => {
    assert.throws(() => parseConfig(["a.ts", "b.ts"], {}, app), /one app module expected/);
    assert.throws(() => parseConfig(["--app", "a.ts", "b.ts"], {}, app), /give the app module once/);
  });
});

describe("recycling and scaling", () => {
  const parse = (argv: string[]) => parseConfig(argv, {}, "/app.ts", () => "");
  test("--max-memory, --max-requests and its jitter: off by default, integers in range", () => {
    const off = parse([]);
    assert.deepEqual([off.maxMemoryMb, off.maxRequests, off.maxRequestsJitter], [undefined, undefined, 0]);
    const on = parse(["--max-memory", "512", "--max-requests=1000", "--max-requests-jitter", "50"]);
    assert.deepEqual([on.maxMemoryMb, on.maxRequests, on.maxRequestsJitter], [512, 1000, 50]);
    assert.throws(() => parse(["--max-requests", "-5"]), /--max-requests must be an integer from 1/);
    assert.throws(() => parse(["--max-requests-jitter", "5"]), /--max-requests-jitter needs --max-requests/);
    assert.throws(
      () => parse(["--mode", "threads", "--max-memory", "64"]),
      /--max-memory needs --mode process/,
    );
  });
  test("scale N: 1 to 1024, with the launcher's --host and --port", () => {
    const config = parse(["scale", "16", "--port", "9000"]);
    assert.deepEqual([config.command, config.scaleTo, config.port], ["scale", 16, 9000]);
    assert.equal(parse(["scale", "1024"]).scaleTo, 1024);
    for (const bad of ["0", "1025", "-2", "two", "1.5"]) {
      assert.throws(
        () => parse(["scale", bad]),
        new RegExp(`scale must be an integer from 1 to 1024, got '${bad}'`),
      );
    }
    assert.throws(() => parse(["scale"]), /scale needs a shard count/);
    assert.throws(() => parse(["scale", "2", "app.ts"]), /scale takes no app module/);
  });
});

describe("TLS flags", () => {
  const parse = (argv: string[], env: Record<string, string> = {}) =>
    parseConfig(argv, env, "/app.ts", () => "");
  test("--tls-cert and --tls-key (or TLS_CERT and TLS_KEY) give absolute paths; flags beat env; both or neither", () => {
    assert.equal(parse(["--shards", "1"]).tls, undefined);
    assert.deepEqual(parse(["--shards", "1", "--tls-cert", "/c.pem", "--tls-key", "k.pem"]).tls, {
      cert: "/c.pem",
      key: join(process.cwd(), "k.pem"),
    });
    assert.deepEqual(
      parse(["--shards", "1", "--tls-cert", "/flag.pem"], { TLS_CERT: "/env.pem", TLS_KEY: "/env.key" }).tls,
      { cert: "/flag.pem", key: "/env.key" },
    );
    assert.throws(
      () => parse(["--shards", "1", "--tls-key", "/k.pem"]),
      /--tls-key needs --tls-cert \(or TLS_CERT\)/,
    );
    assert.throws(
      () => parse(["--shards", "1"], { TLS_CERT: "/c.pem" }),
      /TLS_CERT needs --tls-key \(or TLS_KEY\)/,
    );
  });
});
