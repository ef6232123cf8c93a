// The dashboard page: reads the launcher's event stream (/events) and draws it with uPlot.
// Served by the launcher with uPlot beside it (src/launcher/dashboard.ts); loads nothing else.
/* global uPlot */

/** Points kept, as many as the launcher keeps (HISTORY_POINTS). */
const KEEP = 300;
const MARKED = new Set(["reload", "restart", "exit", "recycle", "takeover", "scale"]);
const MARKER_COLORS = {
  reload: "#1f5fbf",
  restart: "#c0392b",
  exit: "#c0392b",
  recycle: "#8e44ad",
  takeover: "#d35400",
  scale: "#16a085",
};
const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#59a14f",
  "#e15759",
  "#76b7b2",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];
const color = (index) => PALETTE[index] ?? `hsl(${(index * 137) % 360} 55% 55%)`;

const state = {
  times: [],
  rps: [],
  rss: [],
  markers: [],
  view: undefined,
  slots: 0,
  charts: { requests: undefined, rss: undefined },
  color,
};
// For the browser test and for the curious: the charts and the markers drawn.
window.shardportDashboard = state;

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

const megabytes = (bytes) =>
  bytes === null || bytes === undefined ? "-" : `${(bytes / 2 ** 20).toFixed(1)} MB`;
const perSecond = (value) =>
  value === null || value === undefined ? "-" : value.toFixed(value < 100 ? 1 : 0);
const clock = (time) => new Date(time).toTimeString().slice(0, 8);

/** Vertical lines at the launcher's events, drawn over the plot. */
function markersPlugin() {
  return {
    hooks: {
      draw: [
        (u) => {
          const { ctx, bbox } = u;
          const [min, max] = [u.scales.x.min, u.scales.x.max];
          ctx.save();
          ctx.font = `${Math.round(10 * devicePixelRatio)}px system-ui, sans-serif`;
          ctx.textAlign = "center";
          let named = 0;
          for (const marker of state.markers) {
            if (marker.x < min || marker.x > max) continue;
            const x = Math.round(u.valToPos(marker.x, "x", true));
            ctx.strokeStyle = MARKER_COLORS[marker.kind];
            ctx.fillStyle = MARKER_COLORS[marker.kind];
            ctx.lineWidth = devicePixelRatio;
            ctx.setLineDash(marker.step ? [3 * devicePixelRatio, 3 * devicePixelRatio] : []);
            ctx.beginPath();
            ctx.moveTo(x, bbox.top);
            ctx.lineTo(x, bbox.top + bbox.height);
            ctx.stroke();
            // Names alternate between two heights, so that close ones stay readable.
            if (marker.label)
              ctx.fillText(marker.label, x, bbox.top + (10 + 12 * (named++ % 2)) * devicePixelRatio);
          }
          ctx.restore();
        },
      ],
    },
  };
}

function chartSize(container) {
  return { width: Math.max(300, container.clientWidth), height: 240 };
}

/** The stacked requests chart: series i is the sum of shards 0..k, drawn largest first. */
function requestsData() {
  const sums = [];
  let running = state.times.map(() => 0);
  for (let slot = 0; slot < state.slots; slot++) {
    running = running.map((sum, i) => sum + (state.rps[slot]?.[i] ?? 0));
    sums.push(running);
  }
  return [state.times, ...sums.reverse()];
}

function buildCharts() {
  for (const chart of Object.values(state.charts)) chart?.destroy();
  const slots = state.slots;
  const requestsBox = $("#requests-chart");
  const stacked = [];
  for (let i = 0; i < slots; i++) {
    const slot = slots - 1 - i;
    stacked.push({
      label: `shard ${slot}`,
      stroke: color(slot),
      fill: color(slot),
      width: 1,
      points: { show: false },
      // The legend shows the shard's own rate, not the stack's height.
      value: (u, value, seriesIndex, index) => {
        if (value === null || index === null) return "-";
        const below = seriesIndex < slots ? u.data[seriesIndex + 1][index] : 0;
        return perSecond(value - below);
      },
    });
  }
  state.charts.requests = new uPlot(
    {
      ...chartSize(requestsBox),
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}, ...stacked],
      axes: [{}, { label: "req/s", size: 60 }],
      plugins: [markersPlugin()],
    },
    requestsData(),
    requestsBox,
  );
  const rssBox = $("#rss-chart");
  state.charts.rss = new uPlot(
    {
      ...chartSize(rssBox),
      height: 180,
      scales: { x: { time: true } },
      series: [
        {},
        ...Array.from({ length: slots }, (_, slot) => ({
          label: `shard ${slot}`,
          stroke: color(slot),
          width: 2,
          points: { show: false },
          value: (_u, value) => (value === null ? "-" : value.toFixed(1)),
        })),
      ],
      axes: [{}, { label: "MB", size: 60 }],
      plugins: [markersPlugin()],
    },
    [
      state.times,
      ...state.rss.map((values) => values.map((bytes) => (bytes === null ? null : bytes / 2 ** 20))),
    ],
    rssBox,
  );
}

function redrawCharts() {
  state.charts.requests?.setData(requestsData());
  state.charts.rss?.setData([
    state.times,
    ...state.rss.map((values) => values.map((bytes) => (bytes === null ? null : bytes / 2 ** 20))),
  ]);
}

function addPoint(point) {
  const slots = Math.max(state.slots, point.rps.length);
  if (slots !== state.slots) {
    for (let slot = state.slots; slot < slots; slot++) {
      state.rps[slot] = state.times.map(() => null);
      state.rss[slot] = state.times.map(() => null);
    }
    state.slots = slots;
    state.rebuild = true;
  }
  state.times.push(point.time / 1000);
  for (let slot = 0; slot < state.slots; slot++) {
    state.rps[slot].push(point.rps[slot] ?? null);
    state.rss[slot].push(point.rss[slot] ?? null);
  }
  if (state.times.length > KEEP) {
    state.times.shift();
    for (const values of [...state.rps, ...state.rss]) values.shift();
  }
}

function addEvent(entry) {
  const list = $("#events");
  list.prepend(
    element("li", { class: entry.level, "data-kind": entry.kind }, `${clock(entry.time)}  ${entry.message}`),
  );
  while (list.children.length > 100) list.lastChild.remove();
  if (MARKED.has(entry.kind)) {
    // A reload's steps are dashed; its start and end, and every other event, solid and named.
    const step = entry.kind === "reload" && /^reload \d+\/\d+:/.test(entry.message);
    // Named once per reload, at its start.
    const label = entry.kind !== "reload" || /^reload started/.test(entry.message) ? entry.kind : "";
    state.markers.push({ x: entry.time / 1000, kind: entry.kind, step, label, message: entry.message });
    if (state.markers.length > 200) state.markers.shift();
  }
}

function renderView(view) {
  state.view = view;
  if (!view) return;
  const tbody = $("#shards tbody");
  tbody.replaceChildren(
    ...view.shards.map((shard) =>
      element(
        "tr",
        { "data-shard": String(shard.index) },
        element(
          "td",
          {},
          element("span", { class: "swatch", style: { background: color(shard.index) } }),
          String(shard.index),
        ),
        element("td", { class: "pid" }, shard.label),
        element("td", {}, shard.state),
        element("td", { class: "rps" }, perSecond(shard.rps)),
        element("td", {}, megabytes(shard.rss)),
        element("td", {}, String(shard.restarts)),
      ),
    ),
  );
  const byConnections = view.shards.every((shard) => shard.connections !== null);
  const counts = view.shards.map((shard) => (byConnections ? shard.connections : shard.requests));
  const total = counts.reduce((a, b) => a + b, 0);
  const fair = 1 / Math.max(1, view.shards.length);
  const shares = counts.map((count) => (total > 0 ? count / total : 0));
  const full = Math.max(2 * fair, ...shares);
  $("#share-title").textContent =
    `${byConnections ? "Connections" : "Requests"} since ${clock(view.since)}: share per shard (line: fair share ${(fair * 100).toFixed(1)}%)`;
  $("#shares").replaceChildren(
    ...view.shards.map((shard, i) =>
      element(
        "div",
        { class: "share", "data-shard": String(shard.index) },
        element("span", {}, `shard ${shard.index}`),
        element(
          "div",
          { class: "bar" },
          element("div", {
            class: "fill",
            style: { width: `${(shares[i] / full) * 100}%`, background: color(shard.index) },
          }),
          element("div", { class: "fair", style: { left: `${(fair / full) * 100}%` } }),
        ),
        element("span", { class: "value" }, total > 0 ? `${(shares[i] * 100).toFixed(1)}%` : "-"),
      ),
    ),
    element("p", { class: "legend-note" }, `${total} ${byConnections ? "connections" : "requests"} in all`),
  );
}

function connect() {
  const stream = new EventSource("events");
  const status = $("#connection");
  stream.addEventListener("open", () => {
    status.textContent = "live";
    status.classList.add("live");
  });
  stream.addEventListener("error", () => {
    status.textContent = "offline, retrying";
    status.classList.remove("live");
  });
  stream.addEventListener("init", (message) => {
    const { info, history, view, events } = JSON.parse(message.data);
    $("#about").textContent =
      `${info.url} · ${info.runtime} · ${info.mode} mode · launcher pid ${info.launcherPid}`;
    Object.assign(state, { times: [], rps: [], rss: [], markers: [], slots: 0, rebuild: true });
    $("#events").replaceChildren();
    for (const point of history) addPoint(point);
    for (const entry of events) addEvent(entry);
    renderView(view);
    buildCharts();
    state.rebuild = false;
  });
  stream.addEventListener("sample", (message) => {
    const { view, point } = JSON.parse(message.data);
    addPoint(point);
    renderView(view);
    if (state.rebuild) buildCharts();
    else redrawCharts();
    state.rebuild = false;
  });
  stream.addEventListener("launcher", (message) => {
    addEvent(JSON.parse(message.data));
    redrawCharts();
  });
}

window.addEventListener("resize", () => {
  for (const [name, chart] of Object.entries(state.charts)) {
    if (chart) chart.setSize({ ...chartSize($(`#${name}-chart`)), height: name === "rss" ? 180 : 240 });
  }
});

connect();
