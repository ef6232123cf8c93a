// The dashboard page in a real browser: Debian's chromium driven by playwright-core (no browser
// download). The launcher serves the page; the test reads it as a user would.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import {
  childrenOf,
  eventually,
  freshPort,
  get,
  killLeftovers,
  listenAddresses,
  load,
  RUNTIMES,
  run,
  start,
} from "./helpers.ts";

const rt = RUNTIMES.node;
const CHROMIUM = process.env.SHARDPORT_CHROMIUM ?? "/usr/bin/chromium";
const noBrowser = existsSync(CHROMIUM)
  ? undefined
  : `no chromium at ${CHROMIUM} (apt-get install chromium, or set SHARDPORT_CHROMIUM)`;
if (noBrowser) console.log(`# dashboard browser tests skipped: ${noBrowser}`);

let browser: Browser | undefined;
before(async () => {
  if (noBrowser) return;
  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Chromium refuses its sandbox to root.
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
});
after(async () => {
  await browser?.close();
  killLeftovers();
});

/** The pids the page's table lists, by shard index. */
const tablePids = (page: Page) =>
  page.$$eval("#shards tbody tr td.pid", (cells) => cells.map((cell) => cell.textContent ?? ""));

/** Requests/s the page's table shows, summed over the shards. */
const tableRate = (page: Page) =>
  page.$$eval("#shards tbody tr td.rps", (cells) =>
    cells.reduce((sum, cell) => sum + (Number(cell.textContent) || 0), 0),
  );

/** Pixels of the requests chart drawn in one of the shards' colours (the stacked areas). */
const seriesPixels = (page: Page) =>
  page.evaluate(() => {
    type Chart = { ctx: CanvasRenderingContext2D; series: unknown[] };
    const state = (
      window as unknown as {
        shardportDashboard: { charts: { requests: Chart }; slots: number; color: (index: number) => string };
      }
    ).shardportDashboard;
    const chart = state.charts.requests;
    const { width, height } = chart.ctx.canvas;
    const pixels = chart.ctx.getImageData(0, 0, width, height).data;
    const colours = Array.from({ length: state.slots }, (_, index) => {
      const hex = state.color(index);
      return [1, 3, 5].map((at) => Number.parseInt(hex.slice(at, at + 2), 16));
    });
    let count = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if (colours.some(([r, g, b]) => pixels[i] === r && pixels[i + 1] === g && pixels[i + 2] === b)) count++;
    }
    return { count, series: chart.series.length };
  });

/**
 * The README's picture: load for a while, a reload under load, a crash, then the page. Only
 * with SHARDPORT_SCREENSHOT=path; connections reset by the reload do not matter here.
 */
async function screenshot(page: Page, url: string, port: number, launcherPid: number, path: string) {
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const traffic = load(url, { concurrency: 4, maxMs: 40_000 });
  await pause(12_000);
  const reload = run(rt, ["reload", "--port", String(port)]);
  await reload.exited;
  await pause(10_000);
  process.kill(childrenOf(launcherPid)[0], "SIGKILL"); // a crash, and its restart
  await pause(10_000);
  await traffic.stop();
  await pause(1500);
  await page.screenshot({ path });
}

const sorted = (values: number[]) => [...values].sort((a, b) => a - b);
const pidsOf = (labels: string[]) => sorted(labels.map((label) => Number(/^pid (\d+)$/.exec(label)?.[1])));

describe("dashboard in chromium", { skip: noBrowser }, () => {
  test("lists every shard's pid, draws the chart, moves under load, marks a reload and shows the new pids", async () => {
    const port = freshPort();
    const dashboardPort = freshPort();
    const app = await start(rt, [
      "--shards",
      "3",
      "--port",
      String(port),
      "--dashboard-port",
      String(dashboardPort),
    ]);
    const page = await (browser as Browser).newPage({ viewport: { width: 1200, height: 820 } });
    const origin = `http://127.0.0.1:${dashboardPort}`;
    const elsewhere: string[] = [];
    page.on("request", (request) => {
      if (!request.url().startsWith(`${origin}/`)) elsewhere.push(request.url());
    });
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(error.message));
    await page.goto(`${origin}/`);

    const shards = sorted(childrenOf(app.launcherPid));
    assert.equal(shards.length, 3);
    await page.waitForFunction(() => document.querySelectorAll("#shards tbody tr").length === 3);
    assert.deepEqual(pidsOf(await tablePids(page)), shards, "the table lists every shard's pid");

    const traffic = load(app.url, { concurrency: 4, maxMs: 20_000 });
    try {
      assert.ok(
        await eventually(async () => (await tableRate(page)) > 0, 10_000, 200),
        "requests/s move under load",
      );
      assert.ok(
        await eventually(async () => (await seriesPixels(page)).count > 500, 10_000, 200),
        `the stacked chart draws: ${JSON.stringify(await seriesPixels(page))}`,
      );
      assert.equal((await seriesPixels(page)).series, 4, "one series per shard, beside time");
      const shares = await page.$$eval("#shares .share .value", (cells) =>
        cells.map((cell) => cell.textContent),
      );
      assert.equal(shares.length, 3);
      assert.ok(
        shares.every((share) => /^\d+\.\d%$/.test(share ?? "")),
        `every shard has a share: ${shares}`,
      );
    } finally {
      const stats = await traffic.stop();
      assert.equal(stats.failed, 0, stats.errors.join("\n"));
    }

    const reload = run(rt, ["reload", "--port", String(port)]);
    assert.equal(await reload.exited, 0, reload.output());
    await app.waitFor(/reload done/);
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("#events li")].some((li) => /reload done/.test(li.textContent ?? "")),
      undefined,
      { timeout: 10_000 },
    );
    const markers = await page.evaluate(() =>
      (
        window as unknown as { shardportDashboard: { markers: { kind: string; step: boolean }[] } }
      ).shardportDashboard.markers.filter((marker) => marker.kind === "reload"),
    );
    assert.equal(markers.filter((marker) => !marker.step).length, 2, "reload start and end are marked");
    assert.equal(markers.filter((marker) => marker.step).length, 3, "each step is marked");
    const renewed = sorted(childrenOf(app.launcherPid).filter((pid) => !shards.includes(pid)));
    assert.equal(renewed.length, 3, "three new shards");
    assert.ok(
      await eventually(
        async () => JSON.stringify(pidsOf(await tablePids(page))) === JSON.stringify(renewed),
        5000,
        200,
      ),
      `the table shows the new pids: ${await tablePids(page)} vs ${renewed}`,
    );
    if (process.env.SHARDPORT_SCREENSHOT)
      await screenshot(page, app.url, port, app.launcherPid, process.env.SHARDPORT_SCREENSHOT);
    assert.deepEqual(elsewhere, [], "the page loads nothing from elsewhere");
    assert.deepEqual(problems, [], "no error in the page");
    await page.close();
    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0);
  });
});

describe("dashboard server", () => {
  test("read-only, on the metrics port at / and alone on --dashboard-port, bound to the host", async () => {
    const port = freshPort();
    const metricsPort = freshPort();
    const dashboardPort = freshPort();
    const app = await start(rt, [
      "--shards",
      "2",
      "--port",
      String(port),
      "--metrics-port",
      String(metricsPort),
      "--dashboard-port",
      String(dashboardPort),
    ]);
    for (const base of [`http://127.0.0.1:${metricsPort}`, `http://127.0.0.1:${dashboardPort}`]) {
      const page = await get(`${base}/`);
      assert.equal(page.status, 200);
      assert.match(page.body, /<title>shardport<\/title>/);
      const uplot = await get(`${base}/uplot.js`);
      assert.equal(uplot.status, 200);
      assert.match(uplot.body, /uPlot/);
    }
    assert.equal((await get(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200);
    assert.equal(
      (await get(`http://127.0.0.1:${dashboardPort}/metrics`)).status,
      404,
      "the dashboard port serves the page alone",
    );
    // Only on 127.0.0.1 (0100007F in /proc/net/tcp), where --host binds.
    const hexPort = dashboardPort.toString(16).toUpperCase().padStart(4, "0");
    assert.deepEqual(listenAddresses(dashboardPort), [`0100007F:${hexPort}`]);

    const response = await fetch(`http://127.0.0.1:${dashboardPort}/`, {
      headers: { origin: "http://example.com" },
    });
    assert.equal(response.headers.get("access-control-allow-origin"), null, "no CORS");
    assert.match(response.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    for (const method of ["POST", "PUT", "DELETE"]) {
      for (const path of ["/", "/events"]) {
        const refused = await fetch(`http://127.0.0.1:${dashboardPort}${path}`, { method });
        assert.equal(refused.status, 405, `${method} ${path}`);
      }
    }

    // The event stream: an init message with the shards, then one sample a second.
    const controller = new AbortController();
    const stream = await fetch(`http://127.0.0.1:${dashboardPort}/events`, { signal: controller.signal });
    assert.equal(stream.headers.get("content-type"), "text/event-stream");
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    const started = Date.now();
    while (!/event: sample/.test(text) && Date.now() - started < 5000) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    assert.match(text, /^event: init\ndata: \{/);
    assert.match(text, /event: sample\ndata: \{/);
    const samples = text.split("event: sample\ndata: ").slice(1);
    assert.ok(
      samples.every((sample) => sample.length < 2000),
      "a sample is small",
    );

    process.kill(app.launcherPid, "SIGTERM");
    assert.equal(await app.exited, 0);
  });

  test("bad --dashboard-port: exit 2; a taken one: exit 1 naming it, nothing left running", async () => {
    const bad = run(rt, ["--dashboard-port", "0"]);
    assert.equal(await bad.exited, 2);
    assert.match(
      bad.output(),
      /^shardport: error: --dashboard-port must be an integer from 1 to 65535, got '0'$/m,
    );

    const port = freshPort();
    const holder = await start(rt, ["--shards", "1", "--port", String(port)]);
    const taken = run(rt, ["--shards", "2", "--port", String(freshPort()), "--dashboard-port", String(port)]);
    assert.equal(await taken.exited, 1);
    assert.match(
      taken.output(),
      new RegExp(`cannot serve the dashboard on http://127.0.0.1:${port}: .*EADDRINUSE`),
    );
    process.kill(holder.launcherPid, "SIGTERM");
    assert.equal(await holder.exited, 0);
  });
});
