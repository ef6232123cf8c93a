/**
 * The benchmark's SVG chart: requests/s against shard count, one panel per workload, one line
 * per configuration (peers included). Plain SVG, no dependency: a few dozen elements.
 * @module
 */
import type { Row } from "./run.ts";

const COLORS: Record<string, string> = { bun: "#c2410c", deno: "#0f766e", node: "#4d7c0f" };
const DASHES = ["", "6 3", "2 3", "10 3 2 3", "1 5", "12 6"];

/** A marker of the n-th shape, centred on x,y: so series of one runtime differ by shape as well. */
function marker(n: number, x: number, y: number, color: string): string {
  const r = 4;
  switch (n % 6) {
    case 0:
      return `<circle cx="${x}" cy="${y}" r="${r}" fill="${color}"/>`;
    case 1:
      return `<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 2:
      return `<polygon points="${x},${y - r - 1} ${x + r + 1},${y + r} ${x - r - 1},${y + r}" fill="${color}"/>`;
    case 3:
      return `<polygon points="${x},${y - r - 1} ${x + r + 1},${y} ${x},${y + r + 1} ${x - r - 1},${y}" fill="none" stroke="${color}" stroke-width="2"/>`;
    case 4:
      return `<circle cx="${x}" cy="${y}" r="${r}" fill="white" stroke="${color}" stroke-width="2"/>`;
    default:
      return `<path d="M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}" stroke="${color}" stroke-width="2"/>`;
  }
}

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function renderChart(rows: Row[], caption: string): string {
  const width = 1100;
  const panelW = 420;
  const panelH = 300;
  const top = 50;
  const left = 80;
  const gap = 90;
  const counts = [...new Set(rows.map((r) => r.shards))].sort((a, b) => a - b);
  const series = [...new Set(rows.map((r) => r.name))];
  const parts: string[] = [];
  const dashOf = new Map<string, string>();
  const shapeOf = new Map<string, number>();
  const perRuntime = new Map<string, number>();
  for (const name of series) {
    const runtime = rows.find((r) => r.name === name)?.runtime ?? "node";
    const n = perRuntime.get(runtime) ?? 0;
    perRuntime.set(runtime, n + 1);
    dashOf.set(name, DASHES[n % DASHES.length]);
    shapeOf.set(name, n);
  }
  const xOf = (shards: number, x0: number) =>
    x0 + (counts.length === 1 ? panelW / 2 : (counts.indexOf(shards) / (counts.length - 1)) * panelW);

  (["keep-alive", "close"] as const).forEach((workload, panel) => {
    const x0 = left + panel * (panelW + gap);
    const data = rows.filter((r) => r.workload === workload && r.rps > 0);
    const max = Math.max(1, ...data.map((r) => r.rps)) * 1.1;
    const yOf = (rps: number) => top + panelH - (rps / max) * panelH;
    parts.push(
      `<text x="${x0 + panelW / 2}" y="${top - 18}" text-anchor="middle" font-weight="bold">${workload === "close" ? "new connection per request" : "keep-alive connections"}</text>`,
      `<rect x="${x0}" y="${top}" width="${panelW}" height="${panelH}" fill="none" stroke="#999"/>`,
    );
    for (let i = 0; i <= 4; i++) {
      const value = (max / 4) * i;
      const y = yOf(value);
      parts.push(
        `<line x1="${x0}" x2="${x0 + panelW}" y1="${y}" y2="${y}" stroke="#eee"/>`,
        `<text x="${x0 - 6}" y="${y + 4}" text-anchor="end" font-size="11">${Math.round(value / 1000)}k</text>`,
      );
    }
    for (const shards of counts) {
      parts.push(
        `<text x="${xOf(shards, x0)}" y="${top + panelH + 18}" text-anchor="middle" font-size="11">${shards}</text>`,
      );
    }
    parts.push(
      `<text x="${x0 + panelW / 2}" y="${top + panelH + 36}" text-anchor="middle" font-size="12">shards (processes, threads or workers)</text>`,
    );
    for (const name of series) {
      const points = data.filter((r) => r.name === name).sort((a, b) => a.shards - b.shards);
      if (points.length === 0) continue;
      const color = COLORS[points[0].runtime] ?? "#333";
      const xy = points.map((p) => `${xOf(p.shards, x0).toFixed(1)},${yOf(p.rps).toFixed(1)}`);
      if (points.length > 1) {
        parts.push(
          `<polyline points="${xy.join(" ")}" fill="none" stroke="${color}" stroke-width="2" stroke-dasharray="${dashOf.get(name)}"/>`,
        );
      }
      for (const p of xy) {
        const [x, y] = p.split(",").map(Number);
        parts.push(`<g><title>${escapeXml(name)}</title>${marker(shapeOf.get(name) ?? 0, x, y, color)}</g>`);
      }
    }
  });
  parts.push(
    `<text x="${left - 60}" y="${top + panelH / 2}" font-size="12" transform="rotate(-90 ${left - 60} ${top + panelH / 2})" text-anchor="middle">requests/s</text>`,
  );
  const legendTop = top + panelH + 60;
  series.forEach((name, i) => {
    const runtime = rows.find((r) => r.name === name)?.runtime ?? "node";
    const x = left + (i % 3) * 330;
    const y = legendTop + Math.floor(i / 3) * 18;
    parts.push(
      `<line x1="${x}" x2="${x + 28}" y1="${y - 4}" y2="${y - 4}" stroke="${COLORS[runtime]}" stroke-width="2" stroke-dasharray="${dashOf.get(name)}"/>`,
      marker(shapeOf.get(name) ?? 0, x + 14, y - 4, COLORS[runtime]),
      `<text x="${x + 34}" y="${y}" font-size="12">${escapeXml(name)}</text>`,
    );
  });
  const height = legendTop + Math.ceil(series.length / 3) * 18 + 30;
  parts.push(`<text x="${left}" y="${height - 10}" font-size="11" fill="#555">${escapeXml(caption)}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" viewBox="0 0 ${width} ${height}">
<title>shardport benchmark: requests/s against shard count</title>
<rect width="100%" height="100%" fill="white"/>
${parts.join("\n")}
</svg>
`;
}
