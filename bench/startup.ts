/**
 * `npm run bench:startup` (and the last part of `npm run bench`): how soon each configuration
 * answers after the command is typed, against a bare process serving the same app.
 * - first answer: from spawn to the first 200 on `/`;
 * - all ready: from spawn until every shard listens (N sockets, asked of `ss` once the first 200 came);
 * - restart: from SIGKILL of one shard (a second after all ready) until N sockets listen again and
 *   `/` answers.
 * Configurations alternate within each round (A B C A B C ...); the table shows medians.
 * @module
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type BenchRuntime, denoServeParallel, PLAIN, SHARDPORT } from "./commands.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const RESULTS = join(ROOT, "bench", "results");
const BIN = [join(ROOT, "node_modules", ".bin"), join(ROOT, "tools", "node_modules", ".bin")];
const ENV = { ...process.env, PATH: [...BIN, process.env.PATH].join(delimiter), NO_COLOR: "1" };

const { values: opts } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    only: { type: "string" },
    stem: { type: "string", default: "startup" },
  },
});
const rounds = Number(opts.rounds);

type Runtime = BenchRuntime;

interface StartConfig {
  name: string;
  runtime: Runtime;
  /** Sockets listening once all are ready; 0 where one socket serves every worker. */
  listeners: number;
  /** Whether a shard can be killed and is brought back (a supervisor). */
  restarts: boolean;
  command: (port: number) => { argv: string[]; env?: Record<string, string> };
}

const shardport = SHARDPORT;
/** The bare process's compile cache: a folder of this run's own (mode 0700), removed at its end. */
let benchCache: string | undefined;
const compileCache = () => (benchCache ??= mkdtempSync(join(tmpdir(), "shardport-bench-compile-cache-")));
/**
 * The app every configuration serves, shardport included: like with like. (Left to its default,
 * `node dist/node.js` would serve dist/app.js, bundled JavaScript, while the peers' Node strips
 * the types of src/app.ts and loads Hono's modules: about 45 ms of CPU more for each of them.)
 */
const APP = "src/app.ts";
const plain = PLAIN;

function configs(): StartConfig[] {
  const list: StartConfig[] = [];
  for (const runtime of ["bun", "deno", "node"] as const) {
    list.push({
      name: `${runtime} bare process`,
      runtime,
      listeners: 1,
      restarts: false,
      command: (port) => ({ argv: plain[runtime], env: { PORT: String(port) } }),
    });
    if (runtime === "node")
      list.push({
        // Node's compile cache, which shardport's Node launcher turns on for its shards (both
        // warm after the first round): what a bare process gets from it too.
        name: "node bare process, compile cache",
        runtime,
        listeners: 1,
        restarts: false,
        command: (port) => ({
          argv: plain.node,
          env: { PORT: String(port), NODE_COMPILE_CACHE: compileCache() },
        }),
      });
    for (const shards of [2, 8]) {
      list.push({
        name: `${runtime} shardport ${shards}`,
        runtime,
        listeners: shards,
        restarts: true,
        command: (port) => ({
          argv: [...shardport[runtime], "--shards", String(shards), "--port", String(port), APP],
        }),
      });
    }
    list.push({
      name: `${runtime} shardport threads 2`,
      runtime,
      listeners: 2,
      restarts: false,
      command: (port) => ({
        argv: [...shardport[runtime], "--mode", "threads", "--shards", "2", "--port", String(port), APP],
      }),
    });
    list.push({
      name: `${runtime} 2 plain processes`,
      runtime,
      listeners: 2,
      restarts: false,
      // Two at once, as a spawn loop would: a shell starts both.
      command: (port) => ({
        argv: ["sh", "-c", `${plain[runtime].join(" ")} & ${plain[runtime].join(" ")} & wait`],
        env: { PORT: String(port) },
      }),
    });
    list.push({
      name: `${runtime} spawn loop 2`,
      runtime,
      listeners: 2,
      restarts: false,
      // The floor of a supervisor that is a process of the same runtime (bench/peers/spawn-loop.js).
      command: (port) => ({
        argv:
          runtime === "deno"
            ? ["deno", "run", "--allow-run", "--allow-env", "--allow-read", "bench/peers/spawn-loop.js"]
            : [runtime, "bench/peers/spawn-loop.js"],
        env: { PORT: String(port), WORKERS: "2" },
      }),
    });
  }
  list.push({
    name: "deno serve --parallel 2",
    runtime: "deno",
    listeners: 0,
    restarts: false,
    command: (port) => ({
      argv: denoServeParallel(port),
      env: { DENO_JOBS: "2" },
    }),
  });
  list.push({
    name: "node:cluster 2",
    runtime: "node",
    listeners: 0,
    restarts: false,
    command: (port) => ({
      argv: ["node", "bench/peers/node-cluster.js"],
      env: { PORT: String(port), WORKERS: "2" },
    }),
  });
  list.push({
    name: "pm2 cluster mode 2",
    runtime: "node",
    listeners: 0,
    restarts: false,
    // `pm2 start` returns once its daemon has forked the workers; the clock runs from the command.
    command: (port) => ({
      argv: ["pm2", "start", "bench/peers/pm2-app.cjs", "-i", "2", "--name", "startup"],
      env: { PORT: String(port), PM2_HOME: pm2Home(port) },
    }),
  });
  return opts.only ? list.filter((config) => config.name.includes(opts.only as string)) : list;
}

/**
 * Sockets listening on `port`. Asked of the kernel through `ss` (netlink, listeners only): reading
 * /proc/net/tcp walks every socket, TIME_WAIT included, and takes tens of ms on a busy machine.
 */
const listeners = (port: number) =>
  execFileSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8" })
    .split("\n")
    .filter(Boolean).length;

/** A PM2 home of its own per measurement, so that its daemon ends with it. */
const pm2Home = (port: number) => join(tmpdir(), `shardport-startup-pm2-${port}`);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One GET on a fresh connection: true on 200. */
const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200));
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });

/** Polls `check` every ms until true; returns the ms since `from`, or NaN after 20 s. */
async function until(check: () => boolean | Promise<boolean>, from: number): Promise<number> {
  while (performance.now() - from < 20_000) {
    if (await check()) return performance.now() - from;
    await sleep(1);
  }
  return Number.NaN;
}

function childrenOf(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    return text ? text.split(/\s+/).map(Number) : [];
  } catch {
    return [];
  }
}

interface Sample {
  firstMs: number;
  allReadyMs: number;
  restartMs: number;
}

// SHARDPORT_TEST_PORT_BASE moves the ports, as for the tests (two runs on one machine).
let nextPort = Number(process.env.SHARDPORT_TEST_PORT_BASE ?? 26000) + 1;

async function measure(config: StartConfig): Promise<Sample> {
  const port = nextPort++;
  const { argv, env } = config.command(port);
  const started = performance.now();
  const child: ChildProcess = spawn(argv[0], argv.slice(1), {
    cwd: ROOT,
    env: { ...ENV, ...env },
    stdio: "ignore",
    detached: true,
  });
  try {
    // First the first 200 (a GET per ms), then N sockets listening (`ss` per ms). Not both from
    // the start: running `ss` every millisecond takes CPU from the processes starting, and more
    // from N processes on 2 cores than from one. All N listen no sooner than the first does, so
    // "all ready" is at most one `ss` run late where they all listened before the first 200.
    let firstMs = Number.NaN;
    let allReadyMs = config.listeners > 0 ? Number.NaN : 0;
    await until(async () => {
      if (Number.isNaN(firstMs)) {
        if (await answers(port)) firstMs = performance.now() - started;
        else return false;
      }
      if (Number.isNaN(allReadyMs) && listeners(port) >= config.listeners)
        allReadyMs = performance.now() - started;
      return !Number.isNaN(allReadyMs);
    }, started);
    if (config.listeners === 0) allReadyMs = Number.NaN;
    let restartMs = Number.NaN;
    const victim = config.restarts ? childrenOf(child.pid ?? -1)[0] : undefined;
    if (victim) {
      // A second after all ready: the launcher loads the rest of itself once its first shards are
      // ready (src/launcher/early.ts), and a crash in that moment would time its loading too.
      await sleep(1000);
      const killed = performance.now();
      process.kill(victim, "SIGKILL");
      // Wait for the socket to go, then for N again.
      await until(() => listeners(port) < config.listeners, killed);
      restartMs = await until(
        async () => listeners(port) >= config.listeners && (await answers(port)),
        killed,
      );
    }
    return { firstMs, allReadyMs, restartMs };
  } finally {
    try {
      process.kill(-(child.pid ?? 0), "SIGKILL");
    } catch {}
    if (config.name.startsWith("pm2")) {
      const env = { ...ENV, PM2_HOME: pm2Home(port) };
      try {
        execFileSync("pm2", ["kill"], { env, stdio: "ignore" });
      } catch {}
      rmSync(pm2Home(port), { recursive: true, force: true });
    }
    await until(() => listeners(port) === 0, performance.now());
  }
}

const median = (values: number[]) => {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

async function main() {
  const list = configs();
  const samples = new Map<string, Sample[]>(list.map((config) => [config.name, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const config of list) {
      const sample = await measure(config);
      samples.get(config.name)?.push(sample);
      console.error(
        `round ${round}/${rounds} ${config.name}: first ${sample.firstMs.toFixed(0)} ms, all ${sample.allReadyMs.toFixed(0)} ms, restart ${sample.restartMs.toFixed(0)} ms`,
      );
    }
  }
  const fmt = (ms: number) => (Number.isNaN(ms) ? "-" : `${Math.round(ms)} ms`);
  const rows = list.map((config) => {
    const runs = samples.get(config.name) ?? [];
    const first = median(runs.map((s) => s.firstMs));
    const bare = median((samples.get(`${config.runtime} bare process`) ?? []).map((s) => s.firstMs));
    const all = median(runs.map((s) => s.allReadyMs));
    return {
      name: config.name,
      firstMs: first,
      firstRatio: first / bare,
      allReadyMs: all,
      allReadyRatio: all / bare,
      restartMs: median(runs.map((s) => s.restartMs)),
      runs,
    };
  });
  const table = [
    `Start-up, medians of ${rounds} alternated rounds (ratios against the same runtime's bare process's first answer).`,
    "",
    "| configuration | first answer | × bare | all ready | × bare | restart after SIGKILL |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${fmt(r.firstMs)} | ${Number.isNaN(r.firstRatio) ? "-" : r.firstRatio.toFixed(2)} | ${fmt(r.allReadyMs)} | ${Number.isNaN(r.allReadyRatio) ? "-" : r.allReadyRatio.toFixed(2)} | ${fmt(r.restartMs)} |`,
    ),
  ].join("\n");
  console.log(table);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, `${opts.stem}.md`), `${table}\n`);
  writeFileSync(join(RESULTS, `${opts.stem}.json`), `${JSON.stringify({ rounds, rows }, null, 2)}\n`);
}

await main();
if (benchCache) rmSync(benchCache, { recursive: true, force: true });
