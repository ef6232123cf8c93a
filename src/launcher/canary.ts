/**
 * A takeover's canary: both launchers serve for `--canary` seconds, the kernel giving each its
 * share of connections; then the new shards' 5xx rate and p99 latency over that window are
 * compared with the old shards' over the same window, from the numbers both keep (requests
 * timed in the latency histogram, 5xx among them; see src/shard/stats.ts). The old launcher is
 * only asked: `top` makes its shards time their requests, `status` reads their numbers.
 * @module
 */
import type { ShardStats } from "../protocol.ts";
import type { Canary } from "./config.ts";
import { queryLauncher } from "./control.ts";
import { quantileMs } from "./monitor.ts";
import type { Supervisor } from "./supervisor.ts";

/** The shards time their requests for 30 s after an ask (WATCH_MS): ask again well before. */
const REFRESH_MS = 10_000;
/** A p99 under this counts as this much: below it, differences are noise. */
export const P99_FLOOR_MS = 5;

type Numbers = Pick<ShardStats, "requests" | "latency" | "serverErrors">;
type Snapshot = Map<string, Numbers>;

/** What the window saw on one side: requests timed, 5xx among them, their latency histogram. */
interface Side {
  timed: number;
  errors: number;
  latency: number[];
}

export interface CanaryResult {
  passed: boolean;
  /** `canary failed: 5xx 50.1 % vs 0.0 % over 5 s`, or what passed. */
  line: string;
}

const snapshotOf = (shards: { label: string; stats?: Numbers }[]): Snapshot =>
  new Map(shards.filter((shard) => shard.stats).map((shard) => [shard.label, shard.stats as Numbers]));

/** Per shard, what it did between the two snapshots (a shard new since then: all of it). */
function window(before: Snapshot, after: Snapshot): Side {
  const side: Side = { timed: 0, errors: 0, latency: [] };
  for (const [label, now] of after) {
    const then = before.get(label);
    const counts = (now.latency ?? []).map((count, index) => count - (then?.latency?.[index] ?? 0));
    counts.forEach((count, index) => {
      side.latency[index] = (side.latency[index] ?? 0) + count;
    });
    side.timed += counts.reduce((sum, count) => sum + count, 0);
    side.errors += (now.serverErrors ?? 0) - (then?.serverErrors ?? 0);
  }
  for (let index = 0; index < side.latency.length; index++) side.latency[index] ??= 0;
  return side;
}

const percent = (side: Side) => (side.timed > 0 ? (100 * side.errors) / side.timed : 0);
const ms = (value: number) => `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;

/**
 * Serves beside the old launcher (its control socket `socket`) for `canary.seconds`, then
 * judges. Never changes anything of the old launcher's.
 */
export async function runCanary(
  canary: Canary,
  socket: string,
  supervisor: Supervisor,
): Promise<CanaryResult> {
  const ask = (command: string) => queryLauncher("", 0, command, { path: socket, timeoutMs: 5000 });
  const oldShards = async () =>
    snapshotOf(((await ask("status")) as { shards: { label: string; stats?: Numbers }[] }).shards);
  const newShards = async () => snapshotOf(await supervisor.status({ latency: true }));
  // Both sides start timing their requests now (the old one's `top` takes a second).
  await Promise.all([ask("top"), newShards()]);
  const [oldBefore, newBefore] = await Promise.all([oldShards(), newShards()]);
  const started = Date.now();
  const deadline = started + canary.seconds * 1000;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(REFRESH_MS, deadline - Date.now())));
    if (Date.now() < deadline) await Promise.all([ask("top"), newShards()]);
  }
  const [oldAfter, newAfter] = await Promise.all([oldShards(), newShards()]);
  const seconds = Math.round((Date.now() - started) / 1000);
  const before = window(oldBefore, oldAfter);
  const after = window(newBefore, newAfter);
  const over = `over ${seconds} s`;
  const rates = `5xx ${percent(after).toFixed(1)} % vs ${percent(before).toFixed(1)} %`;
  if (after.timed === 0) {
    return { passed: true, line: `canary passed: the new shards had no request to judge ${over}` };
  }
  if (percent(after) > percent(before) + canary.max5xxPoints) {
    return { passed: false, line: `canary failed: ${rates} ${over}` };
  }
  const newP99 = quantileMs(after.latency, 0.99);
  const oldP99 = quantileMs(before.latency, 0.99);
  const p99 = newP99 !== null && oldP99 !== null ? `p99 ${ms(newP99)} vs ${ms(oldP99)}` : "";
  if (newP99 !== null && oldP99 !== null && newP99 > canary.maxP99Ratio * Math.max(oldP99, P99_FLOOR_MS)) {
    return { passed: false, line: `canary failed: ${p99} ${over}` };
  }
  return {
    passed: true,
    line: `canary passed: ${rates}${p99 ? `, ${p99}` : ""}, ${after.timed} vs ${before.timed} requests ${over}`,
  };
}
