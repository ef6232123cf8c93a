/**
 * Reproducer for requests lost during rolling reloads under load (a tool, not a test): the fault
 * suite's "5 reloads of 4 shards under fresh-connection load" scenario, run many times while
 * bounded busy loops keep every core busy, counting each lost request by its error. Run it
 * (as root) inside the fault tests' network namespace (tcp_migrate_req=1), after a build:
 *
 *   npm run bench:drain -- --runtime bun --mode process --runs 10
 *
 * Options: --runtime bun|node|deno, --mode process|threads, --http native|node, --runs N
 * (default 10), --reloads N (5), --concurrency N clients (8), --busy N busy loops (default: one per CPU, 0 for none),
 * --port P (default 4900; each run takes the next port).
 * The error tells where a connection died: `connect ECONNRESET` (reset before the server
 * accepted it: an accept queue dropped), `read ECONNRESET` (accepted, then closed unread),
 * `socket hang up` (closed without a reply).
 * @module
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { eventually, FIXTURES, killLeftovers, load, RUNTIMES, start } from "../test/helpers.ts";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: "bun" },
    mode: { type: "string", default: "process" },
    http: { type: "string", default: "native" },
    runs: { type: "string", default: "10" },
    reloads: { type: "string", default: "5" },
    concurrency: { type: "string", default: "8" },
    busy: { type: "string", default: String(availableParallelism()) },
    port: { type: "string", default: "4900" },
  },
});
const rt = RUNTIMES[values.runtime];
if (!rt) throw new Error(`--runtime: bun, node or deno, not ${values.runtime}`);
if (process.env.SHARDPORT_IN_NETNS !== "1")
  console.warn("not inside test/netns.sh: tcp_migrate_req is whatever this host says");

/** A core kept busy for at most `ms` (it ends by itself even if this script is killed). */
const busyLoop = (ms: number) =>
  spawn(process.execPath, ["-e", `const end = Date.now() + ${ms}; while (Date.now() < end);`], {
    stdio: "ignore",
  });

/**
 * The kernel's TCP counters of this network namespace (/proc/net/netstat and snmp) that say
 * where a connection died: reset by a close with unread data (TCPAbortOnClose), dropped or
 * migrated with a closing listener (TCPMigrateReq*), an accept queue overflowing, resets sent.
 */
const COUNTERS = [
  "TCPAbortOnClose",
  "TCPAbortOnData",
  "TCPAbortOnLinger",
  "TCPMigrateReqSuccess",
  "TCPMigrateReqFailure",
  "ListenOverflows",
  "ListenDrops",
  "TCPReqQFullDrop",
  "OutRsts",
  "EstabResets",
  "AttemptFails",
];
function counters(): Map<string, number> {
  const values = new Map<string, number>();
  for (const file of ["/proc/net/netstat", "/proc/net/snmp"]) {
    const lines = readFileSync(file, "utf8").trim().split("\n");
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i].split(/\s+/).slice(1);
      const numbers = lines[i + 1].split(/\s+/).slice(1).map(Number);
      names.forEach((name, j) => {
        if (COUNTERS.includes(name)) values.set(name, numbers[j]);
      });
    }
  }
  return values;
}
const counted = new Map<string, number>();
function countSince(before: Map<string, number>): string {
  const after = counters();
  const moved: string[] = [];
  for (const [name, value] of after) {
    const delta = value - (before.get(name) ?? 0);
    counted.set(name, (counted.get(name) ?? 0) + delta);
    if (delta) moved.push(`${name} ${delta}`);
  }
  return moved.join(", ");
}

const extra = [
  ...(values.mode === "threads" ? ["--mode", "threads"] : []),
  ...(values.http === "node" ? ["--http", "node"] : []),
];
const totals = { runs: 0, ok: 0, failed: 0, failedRuns: 0 };
const kinds = new Map<string, number>();
let port = Number(values.port);
for (let run = 1; run <= Number(values.runs); run++) {
  const busy = Array.from({ length: Number(values.busy) }, () => busyLoop(120_000));
  try {
    const app = await start(rt, [
      "--shards",
      "4",
      "--port",
      String(port++),
      ...extra,
      join(FIXTURES, "fault-app.ts"),
    ]);
    const before = counters();
    const traffic = load(app.url, { concurrency: Number(values.concurrency) });
    for (let generation = 1; generation <= Number(values.reloads); generation++) {
      const mark = traffic.stats.ok;
      if (!(await eventually(() => traffic.stats.ok >= mark + 500, 20_000)))
        throw new Error("the load stalled");
      process.kill(app.launcherPid, "SIGHUP");
      await app.waitFor(
        new RegExp(`reload done: 4 shards replaced in \\d+ ms \\(generation ${generation}\\)`),
        60_000,
      );
    }
    const stats = await traffic.stop();
    process.kill(app.launcherPid, "SIGTERM");
    await app.exited;
    const kernel = countSince(before);
    totals.runs++;
    totals.ok += stats.ok;
    totals.failed += stats.failed;
    if (stats.failed > 0) totals.failedRuns++;
    for (const error of stats.errors) kinds.set(error, (kinds.get(error) ?? 0) + 1);
    console.log(
      `run ${run}: ${stats.ok} ok, ${stats.failed} failed${stats.errors.length ? ` (${stats.errors.join("; ")})` : ""}; kernel: ${kernel}`,
    );
  } finally {
    for (const child of busy) child.kill("SIGKILL");
    killLeftovers();
  }
}
const label = `${values.runtime} ${values.mode}${values.http === "node" ? " --http node" : ""}`;
console.log(
  `${label}: ${totals.runs} runs of ${values.reloads} reloads, busy loops ${values.busy}: ${totals.ok} ok, ${totals.failed} failed, ${totals.failedRuns} runs with a loss`,
);
for (const [kind, count] of kinds) console.log(`  ${count} × ${kind}`);
console.log(`  kernel: ${[...counted].map(([name, value]) => `${name} ${value}`).join(", ")}`);
