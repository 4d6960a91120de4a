/**
 * Traffic-over-time plots like the paper's figures 4-7, one per workload and size, systems
 * overlaid: link throughput (both directions, Mbit/s per 100 ms sample) and cumulative MB,
 * against seconds since the dump started. Vega-Lite rendered to SVG in Node, resvg to PNG.
 */
import { writeFile } from "node:fs/promises";
import { Resvg } from "@resvg/resvg-js";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

/** One fixed colour per system, the same in every plot. */
const COLORS: Record<string, string> = {
  lazyfs: "#1f77b4",
  "lazyfs-prefetch": "#2ca02c",
  "whole-file": "#9467bd",
  sshfs: "#d62728",
  upfront: "#ff7f0e",
  plain: "#7f7f7f",
};

export interface PlotSeries {
  system: string;
  /** ms since the dump started, cumulative bytes (both directions). */
  points: { tMs: number; bytes: number }[];
  /** ms since the dump started when the process ran on B. */
  restoredAtMs: number;
}

export async function plotTraffic(
  title: string,
  series: PlotSeries[],
  outBase: string,
): Promise<{ svg: string; png: string }> {
  const rate: Record<string, unknown>[] = [];
  const cumulative: Record<string, unknown>[] = [];
  for (const s of series) {
    for (let i = 1; i < s.points.length; i++) {
      const p = s.points[i]!;
      const q = s.points[i - 1]!;
      const dt = p.tMs - q.tMs;
      if (dt <= 0) continue;
      rate.push({
        system: s.system,
        t: p.tMs / 1000,
        mbit: ((p.bytes - q.bytes) * 8) / 1e6 / (dt / 1000),
      });
      cumulative.push({ system: s.system, t: p.tMs / 1000, mb: p.bytes / 1e6 });
    }
  }
  const restores = series.map((s) => ({ system: s.system, t: s.restoredAtMs / 1000 }));
  const x = { field: "t", type: "quantitative", title: "seconds since the dump started" };
  const color = {
    field: "system",
    type: "nominal",
    title: "system",
    scale: { domain: Object.keys(COLORS), range: Object.values(COLORS) },
  };
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: title, anchor: "start" },
    config: { font: "DejaVu Sans", view: { stroke: "#ddd" } },
    vconcat: [
      {
        width: 760,
        height: 240,
        layer: [
          {
            data: { values: rate },
            mark: { type: "line", strokeWidth: 1.2, interpolate: "step-before" },
            encoding: {
              x,
              y: { field: "mbit", type: "quantitative", title: "link traffic, Mbit/s" },
              color,
            },
          },
          {
            data: { values: restores },
            mark: { type: "rule", strokeDash: [3, 3], opacity: 0.6 },
            encoding: { x, color },
          },
        ],
      },
      {
        width: 760,
        height: 160,
        data: { values: cumulative },
        mark: { type: "line", strokeWidth: 1.2 },
        encoding: {
          x,
          y: { field: "mb", type: "quantitative", title: "cumulative MB" },
          color,
        },
      },
    ],
  } as unknown as TopLevelSpec;
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  const png = new Resvg(svg, { background: "white", font: { loadSystemFonts: true } })
    .render()
    .asPng();
  await writeFile(`${outBase}.svg`, svg);
  await writeFile(`${outBase}.png`, png);
  return { svg: `${outBase}.svg`, png: `${outBase}.png` };
}
