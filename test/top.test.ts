// `shardport top`: under a pseudo-terminal (a detached tmux session), and as one snapshot when
// stdout is not a terminal.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { formatTop, type TopAnswer } from "../src/launcher/top.ts";
import {
  childrenOf,
  ENV,
  eventually,
  freshPort,
  killLeftovers,
  load,
  ROOT,
  RUNTIMES,
  run,
  start,
} from "./helpers.ts";

const rt = RUNTIMES.node;
const NODE = join(ROOT, "node_modules", ".bin", "node");
const noTmux =
  spawnSync("tmux", ["-V"]).status === 0 ? undefined : "tmux is not installed (apt-get install tmux)";
if (noTmux) console.log(`# top terminal tests skipped: ${noTmux}`);

// A tmux server of our own (its own socket), so that no other tmux is touched.
const socket = `shardport-test-${process.pid}`;
const tmux = (...args: string[]) =>
  execFileSync("tmux", ["-L", socket, ...args], { encoding: "utf8", env: ENV });
const scratch = mkdtempSync(join(tmpdir(), "shardport-top-"));
after(() => {
  if (!noTmux) spawnSync("tmux", ["-L", socket, "kill-server"]);
  rmSync(scratch, { recursive: true, force: true });
  killLeftovers();
});

/** A row of the view per shard: `<index>  pid <pid>  ready ...`. */
const rowPids = (text: string) =>
  [...text.matchAll(/^\d+\s+pid (\d+)\s+ready\s/gm)].map((match) => Number(match[1])).sort((a, b) => a - b);
const sorted = (values: number[]) => [...values].sort((a, b) => a - b);

describe("top", () => {
  test("not on a terminal: one snapshot with a row per shard, totals and events, exit 0", async () => {
    const port = freshPort();
    const app = await start(rt, ["--shards", "2", "--port", String(port)]);
    const top = run(rt, ["top", "--port", String(port)]);
    assert.equal(await top.exited, 0, top.output());
    const text = top.output();
    assert.deepEqual(rowPids(text), sorted(childrenOf(app.launcherPid)), text);
    assert.match(text, /^shard\s+pid\s+state\s+req\/s\s+share\s+p50 ms\s+p99 ms\s+rss\s+restarts\s+uptime$/m);
    assert.match(text, /^all\s+[\d.]+\s+100%/m);
    assert.match(text, /\d\d:\d\d:\d\d\s+start\s+listening on /);
    assert.ok(!text.includes("\u001b"), "no escape sequence in a snapshot");

    const none = run(rt, ["top", "--port", String(freshPort())]);
    assert.equal(await none.exited, 1);
    assert.match(none.output(), /^shardport: error: no shardport launcher for 127\.0\.0\.1:\d+/m);
    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0);
  });

  test("in a terminal: rows for every shard, latency under load, a restart, q and Ctrl-C quit", {
    skip: noTmux,
  }, async () => {
    const port = freshPort();
    const app = await start(rt, ["--shards", "3", "--port", String(port)]);
    const shards = sorted(childrenOf(app.launcherPid));
    const done = join(scratch, "exit-code");
    // The session's only command: top, then its exit code written where the test reads it.
    const session = (name: string) =>
      tmux(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        "120",
        "-y",
        "30",
        `cd ${ROOT} && ${NODE} dist/node.js top --port ${port}; echo $? > ${done}-${name}; sleep 60`,
      );
    const screen = (name: string) => tmux("capture-pane", "-p", "-t", name);
    const exitCode = (name: string) => {
      try {
        return readFileSync(`${done}-${name}`, "utf8").trim();
      } catch {
        return undefined;
      }
    };

    session("q");
    assert.ok(
      await eventually(() => JSON.stringify(rowPids(screen("q"))) === JSON.stringify(shards), 10_000, 200),
      `a row per shard:\n${screen("q")}`,
    );
    const traffic = load(app.url, { concurrency: 4, maxMs: 20_000 });
    try {
      // Latency: the p50 column of every shard becomes a number.
      assert.ok(
        await eventually(
          () =>
            (screen("q").match(/^\d+\s+pid \d+\s+ready\s+[\d.]+\s+[\d.]+%\s+[\d.]+\s+[\d.]+\s/gm) ?? [])
              .length === 3,
          10_000,
          200,
        ),
        `req/s, share and p50/p99 per shard under load:\n${screen("q")}`,
      );
    } finally {
      await traffic.stop();
    }
    const victim = shards[0];
    process.kill(victim, "SIGKILL");
    assert.ok(
      await eventually(() => /restart\s+shard \d restarted as pid \d+/.test(screen("q")), 10_000, 200),
      `the restart shows among the events:\n${screen("q")}`,
    );
    assert.ok(
      await eventually(
        () => {
          const pids = rowPids(screen("q"));
          return pids.length === 3 && !pids.includes(victim);
        },
        10_000,
        200,
      ),
      `the new shard's row replaces the old one:\n${screen("q")}`,
    );
    tmux("send-keys", "-t", "q", "q");
    assert.ok(await eventually(() => exitCode("q") !== undefined, 5000, 100), `q quits:\n${screen("q")}`);
    assert.equal(exitCode("q"), "0");
    assert.doesNotMatch(screen("q"), /pid \d+\s+ready/, "the alternate screen is gone");

    session("ctrl-c");
    assert.ok(
      await eventually(() => rowPids(screen("ctrl-c")).length === 3, 10_000, 200),
      "top shows 3 shards",
    );
    tmux("send-keys", "-t", "ctrl-c", "C-c");
    assert.ok(await eventually(() => exitCode("ctrl-c") !== undefined, 5000, 100), "Ctrl-C quits");
    assert.equal(exitCode("ctrl-c"), "0");

    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0);
  });
});

describe("top's text", () => {
  test("an event's control characters (an app's error may hold escape sequences) reach the terminal as spaces", () => {
    const answer = {
      url: "http://127.0.0.1:8080",
      runtime: "node 24",
      mode: "process",
      launcherPid: 1,
      reloads: 0,
      time: 0,
      windowMs: 10_000,
      since: 0,
      shards: [],
      totals: { rps: null, p50Ms: null, p99Ms: null, rssBytes: 0 },
      events: [
        { time: 0, kind: "crash", message: "shard 0 exited: \u001b[2J\u001b]0;owned\u0007boom\nat app.ts:1" },
      ],
    } as unknown as TopAnswer;
    const lines = formatTop(answer);
    const event = lines.find((line) => line.includes("boom")) ?? "";
    assert.doesNotMatch(
      lines.join("\n"),
      /\p{Cc}(?<!\n)/u,
      "no control character but the line breaks between lines",
    );
    assert.match(event, /shard 0 exited: {2}\[2J \]0;owned boom at app\.ts:1$/);
  });
});
