/**
 * The dashboard page, served by the launcher (never by a shard): at `/` of the metrics port, or
 * alone on --dashboard-port. The page (src/launcher/dashboard-page/) and uPlot (from the `uplot`
 * package) are read once at start and served from memory; the numbers reach the page as
 * server-sent events from the launcher's Monitor. Read-only: GET and HEAD only, nothing that
 * changes the launcher, no CORS headers, and a Content-Security-Policy that lets the page load
 * nothing from elsewhere.
 * @module
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { onEvent, recentEvents } from "./events.ts";
import type { HistoryPoint, Monitor, MonitorView } from "./monitor.ts";

/** Answers a request if it is the dashboard's; returns false for a path it does not serve. */
export type DashboardHandler = (request: IncomingMessage, response: ServerResponse) => boolean;

/** What the page's header says about the launcher. */
export interface DashboardInfo {
  url: string;
  runtime: string;
  mode: string;
  launcherPid: number;
}

const HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/**
 * The page's files. `root` is the package's folder (the runtime entry's grandparent, from
 * runtimes/ and from dist/ alike); uPlot is resolved from there as any dependency is.
 */
function assets(root: string): Record<string, { type: string; body: Buffer }> {
  const page = join(root, "src", "launcher", "dashboard-page");
  const uplot = dirname(createRequire(join(root, "package.json")).resolve("uplot/dist/uPlot.iife.min.js"));
  const file = (path: string, type: string) => ({ type, body: readFileSync(path) });
  return {
    "/": file(join(page, "index.html"), "text/html; charset=utf-8"),
    "/dashboard.js": file(join(page, "dashboard.js"), "text/javascript; charset=utf-8"),
    "/dashboard.css": file(join(page, "dashboard.css"), "text/css; charset=utf-8"),
    "/uplot.js": file(join(uplot, "uPlot.iife.min.js"), "text/javascript; charset=utf-8"),
    "/uplot.css": file(join(uplot, "uPlot.min.css"), "text/css; charset=utf-8"),
  };
}

/** The view as the page needs it, compact: a few hundred bytes per shard and second at most. */
const compact = (view: MonitorView | undefined) =>
  view && {
    time: view.time,
    since: view.since,
    shards: view.shards.map((shard) => ({
      index: shard.index,
      label: shard.label,
      state: shard.state,
      rps: shard.rps === null ? null : Math.round(shard.rps * 10) / 10,
      rss: shard.rssBytes,
      restarts: shard.restarts,
      requests: shard.requestsSinceStart,
      connections: shard.connectionsSinceStart,
    })),
  };

/** The dashboard's routes; `root` is the package folder (see assets()). */
export function dashboardHandler(monitor: Monitor, root: string, info: DashboardInfo): DashboardHandler {
  const files = assets(root);
  monitor.keepSampling();
  return (request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path === "/favicon.ico") {
      response.writeHead(204, HEADERS).end();
      return true;
    }
    if (path !== "/events" && !(path in files)) return false;
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return true;
    }
    if (path === "/events") {
      events(monitor, info, request, response);
      return true;
    }
    const { type, body } = files[path];
    response.writeHead(200, { ...HEADERS, "content-type": type, "content-length": body.length });
    response.end(request.method === "HEAD" ? undefined : body);
    return true;
  };
}

/** Bytes of events a page may leave unread before it is dropped. */
const MAX_UNREAD = 1 << 20;

/** The page's event stream: `init` with the history, then `sample` each second, `launcher` per event. */
function events(monitor: Monitor, info: DashboardInfo, request: IncomingMessage, response: ServerResponse) {
  response.writeHead(200, { ...HEADERS, "content-type": "text/event-stream" });
  if (request.method === "HEAD") {
    response.end();
    return;
  }
  // A page that stops reading (a suspended tab, a stalled client) is dropped once 1 MB of events
  // after `init` waits for it, rather than buffered without end; the browser's EventSource
  // connects anew. Counted from write()'s answer and "drain" (Bun's writableLength is a constant).
  let unread = 0;
  response.on("drain", () => {
    unread = 0;
  });
  const send = (name: string, data: unknown) => {
    if (response.destroyed) return;
    const chunk = `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
    if (response.write(chunk) || name === "init") return;
    unread += chunk.length;
    if (unread > MAX_UNREAD) response.destroy();
  };
  const { history, view } = monitor.current();
  send("init", { info, history, view: compact(view), events: recentEvents() });
  const stopSamples = monitor.subscribe((next: MonitorView, point: HistoryPoint) =>
    send("sample", { view: compact(next), point }),
  );
  const stopEvents = onEvent((entry) => send("launcher", entry));
  request.socket.setKeepAlive(true);
  response.on("close", () => {
    stopSamples();
    stopEvents();
  });
}

/** --dashboard-port: the page alone on host:port. */
export async function serveDashboard(handler: DashboardHandler, host: string, port: number): Promise<Server> {
  const server = createServer((request, response) => {
    if (!handler(request, response)) response.writeHead(404, HEADERS).end("see /\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host }, resolve);
  });
  server.unref();
  return server;
}
