/**
 * `npm run bench`: shardport against its peers on this machine, in one sitting with the same
 * load for each, configurations alternated (A B C A B C ...), medians over repeats.
 * Writes a Markdown table, a JSON file and an SVG chart to bench/results/ (see bench/README.md).
 * @module
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import https from "node:https";
import { availableParallelism, cpus, tmpdir, totalmem } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { tcpListeners } from "../src/launcher/port-holder.ts";
import { renderChart } from "./chart.ts";
import { type BenchRuntime, denoServeParallel, PLAIN, SHARDPORT } from "./commands.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const PEERS = join(ROOT, "bench", "peers");
const RESULTS = join(ROOT, "bench", "results");
const BIN = [join(ROOT, "node_modules", ".bin"), join(ROOT, "tools", "node_modules", ".bin")];
const ENV = { ...process.env, PATH: [...BIN, process.env.PATH].join(delimiter), NO_COLOR: "1" };

const USAGE = `Usage: npm run bench -- [options]
  --quick               1 repeat of 1 s per configuration (else --repeats 3, --duration 2)
  --repeats N           rounds of every configuration, alternated
  --duration S          seconds of load per measurement
  --connections N       wrk's connections (default 64)
  --only TEXT           only the configurations whose name contains TEXT
  --shards N            only N shards (else 1, 2, 4, ... up to the server CPUs)
  --stem NAME           writes bench/results/NAME.{md,json,svg} (default latest)
  --port-base N         the first of the 900 ports it takes in turn (default 24000)`;

const OPTIONS = {
  help: { type: "boolean", short: "h", default: false },
  quick: { type: "boolean", default: false },
  repeats: { type: "string" },
  duration: { type: "string" },
  connections: { type: "string", default: "64" },
  only: { type: "string" },
  shards: { type: "string" },
  stem: { type: "string" },
  /** The first of the 900 ports the configurations take in turn. */
  "port-base": { type: "string", default: "24000" },
} as const;

// A bad flag: one line and the usage (exit 2); --help: the usage (exit 0).
let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>;
try {
  parsed = parseArgs({ options: OPTIONS });
} catch (error) {
  console.error(`bench: ${(error as Error).message.split("\n")[0]}\n${USAGE}`);
  process.exit(2);
}
if (parsed.values.help) {
  console.log(USAGE);
  process.exit(0);
}
const opts = parsed.values;
const quick = opts.quick ?? false;
const repeats = Number(opts.repeats ?? (quick ? 1 : 3));
const durationS = Number(opts.duration ?? (quick ? 1 : 2));
const connections = Number(opts.connections);

// CPUs: with 4 or more, servers get the first half and wrk the second; below that they share.
const cores = availableParallelism();
const split = cores >= 4;
const serverCpus = split ? `0-${cores / 2 - 1}` : "";
const wrkCpus = split ? `${cores / 2}-${cores - 1}` : "";
const serverCores = split ? cores / 2 : cores;
const wrkThreads = Math.max(1, split ? cores / 2 : 1);
// --shards N measures only N shards (say 8 on a small machine, for RSS: throughput then means little).
const maxShards = Number(opts.shards ?? Math.max(2, serverCores));
const shardCounts =
  quick || opts.shards ? [maxShards] : [...new Set([1, 2, 4, 8, 16, 32].filter((n) => n <= maxShards))];

type Workload = "keep-alive" | "close";
const WORKLOADS: Workload[] = ["keep-alive", "close"];

interface Config {
  /** Series name in the table and chart. */
  name: string;
  runtime: "bun" | "deno" | "node";
  shards: number;
  /** The command, started with PORT (and WORKERS / DENO_JOBS) in its environment. */
  start(port: number): ChildProcess[];
  /** Sockets that must listen before the load starts. */
  listeners: number;
  /** Set where the responses cannot say which shard answered. */
  sharesHidden?: boolean;
  /** Served over HTTPS (wrk then makes a TLS handshake per new connection). */
  tls?: boolean;
}

function launch(command: string[], env: Record<string, string> = {}): ChildProcess {
  const full = split ? ["taskset", "-c", serverCpus, ...command] : command;
  return spawn(full[0], full.slice(1), {
    cwd: ROOT,
    env: { ...ENV, ...env },
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
}

const entry = (runtime: BenchRuntime, args: string[]) => [...SHARDPORT[runtime], ...args];
const plain = PLAIN;

let certFiles: { dir: string; cert: string; key: string } | undefined;
/** A self-signed P-256 certificate for the TLS rows, made once with openssl, removed at the end. */
function benchCert(): { cert: string; key: string } {
  if (!certFiles) {
    const dir = mkdtempSync(join(tmpdir(), "shardport-bench-tls-"));
    const [cert, key] = [join(dir, "cert.pem"), join(dir, "key.pem")];
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"].concat([
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
      ]),
      { stdio: "ignore" },
    );
    certFiles = { dir, cert, key };
  }
  return certFiles;
}

let pm2Home = "";
/**
 * shardport at every shard count; at the largest one, the peers: N plain reusePort processes
 * (the ceiling for the launcher's overhead), threads mode, node:cluster, PM2, deno serve --parallel.
 */
/** A V8 flag that caps each isolate's young generation (semi-space) at 1 MB. */
const SMALL_YOUNG_GENERATION = "--max-semi-space-size=1";

function configs(): Config[] {
  const list: Config[] = [];
  const top = shardCounts[shardCounts.length - 1];
  for (const runtime of ["bun", "deno", "node"] as const) {
    list.push({
      name: `${runtime} 1 process, no launcher`,
      runtime,
      shards: 1,
      listeners: 1,
      start: (port) => [launch(plain[runtime], { PORT: String(port) })],
    });
    for (const shards of shardCounts) {
      list.push({
        name: `${runtime} shardport`,
        runtime,
        shards,
        listeners: shards,
        start: (port) => [launch(entry(runtime, ["--shards", String(shards), "--port", String(port)]))],
      });
    }
    list.push({
      name: `${runtime} shardport threads`,
      runtime,
      shards: top,
      listeners: top,
      start: (port) => [
        launch(entry(runtime, ["--mode", "threads", "--shards", String(top), "--port", String(port)])),
      ],
    });
    list.push({
      name: `${runtime} N plain reusePort processes`,
      runtime,
      shards: top,
      listeners: top,
      start: (port) => Array.from({ length: top }, () => launch(plain[runtime], { PORT: String(port) })),
    });
    // HTTPS (h2 and http/1.1 by ALPN; wrk speaks HTTP/1.1 over TLS): shardport against N plain
    // reusePort TLS processes, keep-alive and a new TLS connection (full handshake) per request.
    list.push({
      name: `${runtime} shardport TLS`,
      runtime,
      shards: top,
      listeners: top,
      tls: true,
      start: (port) => [
        launch(
          entry(runtime, [
            ...["--shards", String(top), "--port", String(port)],
            ...["--tls-cert", benchCert().cert, "--tls-key", benchCert().key],
          ]),
        ),
      ],
    });
    list.push({
      name: `${runtime} N plain reusePort TLS processes`,
      runtime,
      shards: top,
      listeners: top,
      tls: true,
      start: (port) =>
        Array.from({ length: top }, () =>
          launch(plain[runtime], {
            PORT: String(port),
            TLS_CERT: benchCert().cert,
            TLS_KEY: benchCert().key,
          }),
        ),
    });
  }
  list.push({
    name: "deno serve --parallel",
    runtime: "deno",
    shards: top,
    listeners: 1,
    // One process: its isolates cannot be told apart in the responses.
    sharesHidden: true,
    start: (port) => [launch(denoServeParallel(port), { DENO_JOBS: String(top) })],
  });
  // The same two with a smaller young generation in every isolate (README, Deno's memory): the
  // same V8 flag for both, so that neither gets a treatment the other does not.
  list.push({
    name: `deno shardport threads ${SMALL_YOUNG_GENERATION}`,
    runtime: "deno",
    shards: top,
    listeners: top,
    start: (port) => [
      launch(entry("deno", ["--mode", "threads", "--shards", String(top), "--port", String(port)]), {
        DENO_V8_FLAGS: SMALL_YOUNG_GENERATION,
      }),
    ],
  });
  list.push({
    name: `deno serve --parallel ${SMALL_YOUNG_GENERATION}`,
    runtime: "deno",
    shards: top,
    listeners: 1,
    sharesHidden: true,
    start: (port) => [
      launch(denoServeParallel(port), { DENO_JOBS: String(top), DENO_V8_FLAGS: SMALL_YOUNG_GENERATION }),
    ],
  });
  list.push({
    name: "node:cluster",
    runtime: "node",
    shards: top,
    listeners: 1,
    start: (port) => [
      launch(["node", "bench/peers/node-cluster.js"], { PORT: String(port), WORKERS: String(top) }),
    ],
  });
  list.push({
    name: "pm2 cluster mode",
    runtime: "node",
    shards: top,
    listeners: 1,
    start: (port) => {
      pm2Home = mkdtempSync(join(tmpdir(), "shardport-pm2-"));
      const env = { PM2_HOME: pm2Home, PORT: String(port) };
      const pm2 = ["pm2", "start", "bench/peers/pm2-app.cjs", "-i", String(top), "--name", "bench"];
      const command = split ? ["taskset", "-c", serverCpus, ...pm2] : pm2;
      execFileSync(command[0], command.slice(1), { cwd: ROOT, env: { ...ENV, ...env }, stdio: "ignore" });
      return [];
    },
  });
  // --only A,B: the configurations whose name contains A or B.
  const only = opts.only?.split(",").filter(Boolean);
  return only ? list.filter((config) => only.some((part) => config.name.includes(part))) : list;
}

function stop(children: ChildProcess[]): void {
  for (const child of children) {
    try {
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    } catch {}
  }
  if (pm2Home) {
    try {
      execFileSync("pm2", ["kill"], { env: { ...ENV, PM2_HOME: pm2Home }, stdio: "ignore" });
    } catch {}
    rmSync(pm2Home, { recursive: true, force: true });
    pm2Home = "";
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const listening = (port: number) => tcpListeners(port).length;

/** One GET; over https, any certificate (the bench's own self-signed one). */
function probe(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const client = url.startsWith("https:") ? https : http;
    client
      .get(url, { rejectUnauthorized: false, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      })
      .on("error", () => resolve(false));
  });
}

async function ready(port: number, listeners: number, scheme: string): Promise<boolean> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (listening(port) >= listeners) {
      const ok = await probe(`${scheme}://127.0.0.1:${port}/`);
      if (ok) return true;
    }
    await sleep(50);
  }
  return false;
}

interface ProcessFigures {
  rssKb: number;
  /** utime + stime, in clock ticks, of all the process's threads (not of its waited children). */
  cpuTicks: number;
}

/** One process's figures from /proc, or undefined if it is gone. */
function processFigures(pid: number): (ProcessFigures & { parent: number }) | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return {
      parent: Number(fields[1]),
      cpuTicks: Number(fields[11]) + Number(fields[12]),
      rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
    };
  } catch {
    return undefined;
  }
}

/**
 * Every process of a configuration, by pid: those whose parent chain reaches one of `roots`
 * (the launcher and its shards, or the peer's processes), or PM2's processes.
 */
function configurationProcesses(roots: number[]): Map<number, ProcessFigures> {
  const all = new Map<number, ProcessFigures & { parent: number }>();
  const pm2 = new Set<number>();
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const figures = processFigures(pid);
    if (!figures) continue;
    all.set(pid, figures);
    try {
      if (pm2Home && readFileSync(`/proc/${pid}/environ`, "utf8").includes(`PM2_HOME=${pm2Home}`))
        pm2.add(pid);
    } catch {}
  }
  const mine = new Map<number, ProcessFigures>();
  for (const [pid, figures] of all) {
    let p: number | undefined = pid;
    for (let hops = 0; p && hops < 32; hops++, p = all.get(p)?.parent) {
      if (roots.includes(p) || pm2.has(pid)) {
        mine.set(pid, figures);
        break;
      }
    }
  }
  return mine;
}

const totalRssKb = (processes: Map<number, ProcessFigures>) =>
  [...processes.values()].reduce((sum, figures) => sum + figures.rssKb, 0);

/** CPU ticks the configuration's processes spent between two snapshots (a new process counts whole). */
function cpuTicksBetween(before: Map<number, ProcessFigures>, after: Map<number, ProcessFigures>): number {
  let ticks = 0;
  for (const [pid, figures] of after) ticks += figures.cpuTicks - (before.get(pid)?.cpuTicks ?? 0);
  return ticks;
}

interface Sample {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** wrk's read errors: connections the server closed or reset where wrk expected more. */
  readErrors: number;
  rssKbPerShard: number;
  /** CPU time of every process of the configuration, in clock ticks per 100k requests. */
  cpuTicksPer100k: number;
  shares: number[];
}

const toMs = (text: string | undefined) => {
  const match = /([\d.]+)(us|ms|s)/.exec(text ?? "");
  if (!match) return Number.NaN;
  return Number(match[1]) * { us: 0.001, ms: 1, s: 1000 }[match[2] as "us" | "ms" | "s"];
};

function wrk(port: number, workload: Workload, seconds: number, script?: string, scheme = "http"): string {
  const args = [`-t${wrkThreads}`, `-c${connections}`, `-d${seconds}s`, "--latency"];
  if (workload === "close") args.push("-H", "Connection: close");
  if (script) args.push("-s", script);
  args.push(`${scheme}://127.0.0.1:${port}/`);
  const command = split ? ["taskset", "-c", wrkCpus, "wrk", ...args] : ["wrk", ...args];
  return execFileSync(command[0], command.slice(1), { encoding: "utf8", timeout: (seconds + 30) * 1000 });
}

async function measure(config: Config, port: number): Promise<Record<Workload, Sample> | undefined> {
  const children = config.start(port);
  const scheme = config.tls ? "https" : "http";
  try {
    if (!(await ready(port, config.listeners, scheme))) {
      console.error(`  ${config.name} x${config.shards}: not ready in 20 s, skipped`);
      return undefined;
    }
    const result = {} as Record<Workload, Sample>;
    for (const workload of WORKLOADS) {
      // Warm up once (JIT, connection pools); the close workload then runs on a warm server.
      if (workload === "keep-alive" && !quick) wrk(port, workload, 1, undefined, scheme);
      const roots = children.map((child) => child.pid ?? -1);
      const before = configurationProcesses(roots);
      const out = wrk(port, workload, durationS, undefined, scheme);
      const after = configurationProcesses(roots);
      const requests = Number(/(\d+) requests in /.exec(out)?.[1] ?? 0);
      const sharesOut = wrk(port, workload, 1, join(PEERS, "shares.lua"), scheme);
      const shares = [...sharesOut.matchAll(/^SHARE .* (\d+)$/gm)].map((m) => Number(m[1]));
      const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      result[workload] = {
        rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
        p50Ms: toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
        p99Ms: toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
        errors:
          (socketErrors ? Number(socketErrors[1]) + Number(socketErrors[3]) + Number(socketErrors[4]) : 0) +
          Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
        readErrors: socketErrors ? Number(socketErrors[2]) : 0,
        rssKbPerShard: Math.round(totalRssKb(after) / config.shards),
        cpuTicksPer100k: requests > 0 ? (cpuTicksBetween(before, after) / requests) * 100_000 : Number.NaN,
        shares,
      };
    }
    return result;
  } finally {
    stop(children);
    const deadline = Date.now() + 5000;
    while (listening(port) > 0 && Date.now() < deadline) await sleep(20);
  }
}

const median = (values: number[]) => {
  const sorted = [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

export interface Row {
  name: string;
  runtime: string;
  shards: number;
  workload: Workload;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  readErrors: number;
  rssMbPerShard: number;
  /** CPU time of all the configuration's processes, clock ticks per 100k requests (median). */
  cpuTicksPer100k: number;
  /** Smallest and largest shard's share of the responses, in % of a fair share. */
  fairMinPct: number;
  fairMaxPct: number;
  /** Requests/s of each run. */
  runs: number[];
  /** CPU ticks per 100k requests per round (null: no run that round), to pair rounds in ratios. */
  cpuRuns: (number | null)[];
}

function fairness(shares: number[], shards: number): [number, number] {
  if (shards < 2 || shares.length === 0) return [100, 100];
  const total = shares.reduce((a, b) => a + b, 0);
  const fair = total / shards;
  const padded = [...shares, ...Array(Math.max(0, shards - shares.length)).fill(0)];
  return [Math.round((Math.min(...padded) / fair) * 100), Math.round((Math.max(...padded) / fair) * 100)];
}

async function main(): Promise<void> {
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      console.error(
        "bench: wrk is missing; install it with `apt-get install wrk` (Debian/Ubuntu) and run again",
      );
      process.exit(1);
    }
  }
  if (!existsSync(join(ROOT, "dist", "node.js")))
    execFileSync("npm", ["run", "build"], { cwd: ROOT, env: ENV });
  const list = configs();
  const machine = `${cpus()[0]?.model.trim() ?? "unknown CPU"}, ${cores} CPUs, ${Math.round(totalmem() / 2 ** 30)} GiB, ${process.platform} ${readFileSync("/proc/sys/kernel/osrelease", "utf8").trim()}`;
  const cpuNote = split
    ? `servers on CPUs ${serverCpus}, wrk (${wrkThreads} threads) on CPUs ${wrkCpus}`
    : `servers and wrk (${wrkThreads} thread) share all ${cores} CPUs: too few to separate them`;
  console.log(
    `bench: ${list.length} configurations x ${repeats} repeats, ${durationS} s per measurement, ${connections} connections`,
  );
  console.log(`bench: ${machine}; ${cpuNote}`);

  const samples = new Map<string, Record<Workload, Sample>[]>();
  /** The same runs by round (undefined where a run failed), to compare rounds pairwise. */
  const byRound = new Map<string, (Record<Workload, Sample> | undefined)[]>();
  const portBase = Number(opts["port-base"]);
  let port = portBase;
  for (let round = 1; round <= repeats; round++) {
    for (const config of list) {
      port = port >= portBase + 900 ? portBase : port + 1;
      const key = `${config.name}|${config.shards}`;
      const result = await measure(config, port);
      if (result) samples.set(key, [...(samples.get(key) ?? []), result]);
      byRound.set(key, [...(byRound.get(key) ?? []), result]);
      const ka = result?.["keep-alive"].rps ?? 0;
      const cl = result?.close.rps ?? 0;
      const cpu = (workload: Workload) => Math.round(result?.[workload].cpuTicksPer100k ?? Number.NaN);
      console.log(
        `  round ${round}: ${config.name} x${config.shards}: ${Math.round(ka)} req/s keep-alive, ${Math.round(cl)} req/s close; CPU ticks per 100k requests ${cpu("keep-alive")} keep-alive, ${cpu("close")} close`,
      );
    }
    // After every round, so that a run stopped early keeps the rounds it finished.
    writeResults(
      list,
      samples,
      byRound,
      { machine, cpuNote, repeats: round, durationS, connections },
      round === repeats,
    );
  }

  if (certFiles) rmSync(certFiles.dir, { recursive: true, force: true });
}

/** The table, the JSON and the chart of the rounds measured so far. */
function writeResults(
  list: Config[],
  samples: Map<string, Record<Workload, Sample>[]>,
  byRound: Map<string, (Record<Workload, Sample> | undefined)[]>,
  meta: Omit<Meta, "date">,
  last: boolean,
): void {
  const rows: Row[] = [];
  for (const config of list) {
    const runs = samples.get(`${config.name}|${config.shards}`) ?? [];
    const rounds = byRound.get(`${config.name}|${config.shards}`) ?? [];
    for (const workload of WORKLOADS) {
      const of = (pick: (s: Sample) => number) => median(runs.map((r) => pick(r[workload])));
      const shareRuns = config.sharesHidden
        ? []
        : runs.map((r) => fairness(r[workload].shares, config.shards));
      rows.push({
        name: config.name,
        runtime: config.runtime,
        shards: config.shards,
        workload,
        rps: Math.round(of((s) => s.rps)),
        p50Ms: of((s) => s.p50Ms),
        p99Ms: of((s) => s.p99Ms),
        errors: runs.reduce((sum, r) => sum + r[workload].errors, 0),
        readErrors: runs.reduce((sum, r) => sum + r[workload].readErrors, 0),
        rssMbPerShard: Math.round(of((s) => s.rssKbPerShard) / 102.4) / 10,
        cpuTicksPer100k: Math.round(of((s) => s.cpuTicksPer100k)),
        fairMinPct: median(shareRuns.map(([min]) => min)),
        fairMaxPct: median(shareRuns.map(([, max]) => max)),
        runs: runs.map((r) => Math.round(r[workload].rps)),
        cpuRuns: rounds.map((r) => {
          const ticks = r?.[workload].cpuTicksPer100k;
          return ticks === undefined || !Number.isFinite(ticks) ? null : Math.round(ticks);
        }),
      });
    }
  }
  const date = new Date().toISOString();
  const report = renderReport(rows, { ...meta, date });
  if (last) console.log(`\n${report}`);
  mkdirSync(RESULTS, { recursive: true });
  const stem = opts.stem ?? (quick ? "quick" : "latest");
  writeFileSync(join(RESULTS, `${stem}.md`), `${report}\n`);
  writeFileSync(join(RESULTS, `${stem}.json`), `${JSON.stringify({ ...meta, date, rows }, null, 2)}\n`);
  writeFileSync(join(RESULTS, `${stem}.svg`), renderChart(rows, `${meta.machine}; ${meta.cpuNote}`));
  console.log(
    `bench: wrote bench/results/${stem}.md, ${stem}.json and ${stem}.svg (${meta.repeats} of ${repeats} rounds)`,
  );
}

interface Meta {
  machine: string;
  cpuNote: string;
  repeats: number;
  durationS: number;
  connections: number;
  date: string;
}

/** Median and min–max of the per-round ratios a/b (rounds alternate, so each pair shares its moment). */
function pairedRatio(a: (number | null)[], b: (number | null)[]): [number, number, number] | undefined {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x !== null && y !== null && y > 0) ratios.push(x / y);
  }
  if (ratios.length === 0) return undefined;
  return [median(ratios), Math.min(...ratios), Math.max(...ratios)];
}

function renderReport(rows: Row[], meta: Meta): string {
  const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "-");
  const lines = [
    `Benchmark of ${meta.date.slice(0, 10)}: ${meta.machine}; ${meta.cpuNote}. Median of ${meta.repeats} runs of ${meta.durationS} s each, wrk with ${meta.connections} connections, configurations alternated. CPU: utime + stime of every process of the configuration (launcher included), clock ticks per 100k requests.`,
    "",
    "| configuration | shards | workload | req/s | CPU ticks/100k req | p50 ms | p99 ms | errors | read errors | RSS/shard MB | shares (min–max % of fair) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.name} | ${row.shards} | ${row.workload} | ${row.rps.toLocaleString("en-US")} | ${Number.isFinite(row.cpuTicksPer100k) ? row.cpuTicksPer100k.toLocaleString("en-US") : "-"} | ${fmt(row.p50Ms)} | ${fmt(row.p99Ms)} | ${row.errors} | ${row.readErrors} | ${fmt(row.rssMbPerShard, 1)} | ${row.shards > 1 && Number.isFinite(row.fairMinPct) ? `${row.fairMinPct}–${row.fairMaxPct}` : "-"} |`,
    );
  }
  const find = (name: string, shards: number, workload: Workload) =>
    rows.find((r) => r.name === name && r.shards === shards && r.workload === workload);
  const top = Math.max(...rows.map((r) => r.shards));
  const rps = (a: string, b: string, workload: Workload) => {
    const [x, y] = [find(a, top, workload), find(b, top, workload)];
    return x && y && y.rps > 0 ? (x.rps / y.rps).toFixed(2) : "-";
  };
  const cpu = (a: string, b: string, workload: Workload) => {
    const [x, y] = [find(a, top, workload), find(b, top, workload)];
    const ratio = x && y ? pairedRatio(x.cpuRuns, y.cpuRuns) : undefined;
    return ratio ? `${fmt(ratio[0])} (${fmt(ratio[1])}–${fmt(ratio[2])})` : "-";
  };
  lines.push(
    "",
    `Targets at ${top} shards. CPU per request: the ratio of each round's pair, median (min–max over rounds); req/s: ratio of medians.`,
    "",
  );
  lines.push(
    "| target | CPU/request keep-alive | CPU/request close | req/s keep-alive | req/s close | goal (CPU/request) |",
    "| --- | --- | --- | --- | --- | --- |",
  );
  // Only the pairs this run measured (--only leaves some out).
  const target = (label: string, a: string, b: string, goal: string) => {
    if (!find(a, top, "keep-alive") || !find(b, top, "keep-alive")) return;
    lines.push(
      `| ${label} | ${cpu(a, b, "keep-alive")} | ${cpu(a, b, "close")} | ${rps(a, b, "keep-alive")} | ${rps(a, b, "close")} | ${goal} |`,
    );
  };
  for (const runtime of ["bun", "deno", "node"])
    target(
      `${runtime} shardport / N plain reusePort processes`,
      `${runtime} shardport`,
      `${runtime} N plain reusePort processes`,
      "≤ 1.03",
    );
  for (const runtime of ["bun", "deno", "node"])
    target(
      `${runtime} shardport TLS / N plain reusePort TLS processes`,
      `${runtime} shardport TLS`,
      `${runtime} N plain reusePort TLS processes`,
      "≤ 1.03",
    );
  for (const peer of ["node:cluster", "pm2 cluster mode"])
    target(`node shardport / ${peer}`, "node shardport", peer, "≤ 0.5 on close");
  target("deno shardport / deno serve --parallel", "deno shardport", "deno serve --parallel", "≤ 1");
  target("deno threads / deno serve --parallel", "deno shardport threads", "deno serve --parallel", "≤ 1");
  for (const runtime of ["bun", "deno", "node"])
    target(
      `${runtime} threads / processes`,
      `${runtime} shardport threads`,
      `${runtime} shardport`,
      "≤ 1.05",
    );
  const rss = (name: string) => find(name, top, "keep-alive")?.rssMbPerShard ?? Number.NaN;
  for (const flags of ["", ` ${SMALL_YOUNG_GENERATION}`]) {
    const [threads, parallel] = [`deno shardport threads${flags}`, `deno serve --parallel${flags}`];
    if (flags) target(`deno threads / deno serve --parallel, both ${flags.trim()}`, threads, parallel, "≤ 1");
    const rssRatio = rss(threads) / rss(parallel);
    if (Number.isFinite(rssRatio))
      lines.push(
        `| deno threads RSS / deno serve --parallel RSS${flags ? `, both ${flags.trim()}` : ""} | ${fmt(rssRatio)} (RSS ${fmt(rss(threads) * top, 0)} / ${fmt(rss(parallel) * top, 0)} MB) | | | | ≤ 1.10 (RSS) |`,
      );
  }
  if (top > 1) lines.push(...scalingTable(rows, top));
  return lines.join("\n");
}

/**
 * Scaling efficiency at `top` shards: req/s at top ÷ (top × req/s of one). shardport against its
 * own run with 1 shard; each peer against one process of its runtime with no launcher.
 */
function scalingTable(rows: Row[], top: number): string[] {
  const rps = (name: string, shards: number, workload: Workload) =>
    rows.find((r) => r.name === name && r.shards === shards && r.workload === workload)?.rps;
  const efficiency = (name: string, one: string, oneShards: number, workload: Workload) => {
    const [many, single] = [rps(name, top, workload), rps(one, oneShards, workload)];
    return many && single ? `${Math.round((many / (top * single)) * 100)} %` : undefined;
  };
  const lines = [
    "",
    `Scaling efficiency at ${top} shards: req/s ÷ (${top} × req/s of one). shardport against itself with 1 shard; the other rows against one process of the runtime, no launcher.`,
    "",
    "| configuration | against | keep-alive | close |",
    "| --- | --- | --- | --- |",
  ];
  const add = (name: string, one: string, oneShards: number) => {
    const [ka, cl] = WORKLOADS.map((w) => efficiency(name, one, oneShards, w));
    if (ka || cl) lines.push(`| ${name} | ${one} | ${ka ?? "-"} | ${cl ?? "-"} |`);
  };
  for (const runtime of ["bun", "deno", "node"]) {
    const bare = `${runtime} 1 process, no launcher`;
    add(`${runtime} shardport`, `${runtime} shardport`, 1);
    add(`${runtime} shardport threads`, `${runtime} shardport`, 1);
    add(`${runtime} N plain reusePort processes`, bare, 1);
  }
  add("deno serve --parallel", "deno 1 process, no launcher", 1);
  add("node:cluster", "node 1 process, no launcher", 1);
  add("pm2 cluster mode", "node 1 process, no launcher", 1);
  return lines.length > 5 ? lines : [];
}

await main();
