/**
 * Figures of one run from what was recorded: the link timeline (cumulative bytes every
 * 100 ms), the migration's instants, the workload's progress lines and LazyFS's status.
 * Every time is in ms since the dump started unless the name says "AfterRestore".
 */
import type { TrafficSample } from "../../src/hosts/index.js";
import type { ProgressPoint } from "./workloads.js";

/** A 100 ms sample moving at most this many bytes (both directions) counts as quiet. */
export const QUIET_BYTES = 1500;

export interface Rebased {
  tMs: number;
  aToB: number;
  bToA: number;
}

/** The timeline with tMs relative to the dump's start. */
export function rebase(timeline: TrafficSample[], samplerStart: number, tDump: number): Rebased[] {
  const shift = samplerStart - tDump;
  return timeline.map((s) => ({ tMs: s.tMs + shift, aToB: s.aToB, bToA: s.bToA }));
}

const total = (s: Rebased) => s.aToB + s.bToA;

/** Cumulative bytes (both directions) at the last sample at or before t. */
export function bytesAt(tl: Rebased[], t: number): number {
  let v = 0;
  for (const s of tl) {
    if (s.tMs > t) break;
    v = total(s);
  }
  return v;
}

/** Cumulative bytes at the first sample at or after t (so that everything from t on is after). */
export function bytesFrom(tl: Rebased[], t: number): number | null {
  for (const s of tl) if (s.tMs >= t) return total(s);
  return null;
}

/** End (ms since dump) of the last 100 ms sample that carried more than QUIET_BYTES. */
export function lastTraffic(tl: Rebased[]): number | null {
  let last: number | null = null;
  for (let i = 1; i < tl.length; i++) {
    if (total(tl[i]!) - total(tl[i - 1]!) > QUIET_BYTES) last = tl[i]!.tMs;
  }
  return last;
}

export interface LinkFigures {
  aToB: number;
  bToA: number;
  total: number;
  /** Before the dump started (SSH set-up of `lazyfs migrate`). */
  beforeDump: number;
  /** From the dump's start to the process running on B. */
  duringFreeze: number;
  /** From the process running on B to the end of the run. */
  afterRestore: number;
  /** In the last 5 s of the run (is the system still using the link?). */
  last5s: number;
}

export function linkFigures(tl: Rebased[], freezeMs: number): LinkFigures {
  const end = tl[tl.length - 1]!;
  const all = total(end);
  const atFreeze = bytesAt(tl, freezeMs);
  return {
    aToB: end.aToB,
    bToA: end.bToA,
    total: all,
    beforeDump: bytesAt(tl, 0),
    duringFreeze: atFreeze - bytesAt(tl, 0),
    afterRestore: all - atFreeze,
    last5s: all - bytesAt(tl, end.tMs - 5000),
  };
}

export interface ProgressFigures {
  /** Bytes processed when the dump started / at the end of the run. */
  atDump: number;
  atEnd: number;
  /** Bytes processed on B, and per second of the run after the restore. */
  afterRestore: number;
  rateAfterRestoreBps: number;
  /** Longest gap between progress lines on B (including restore -> first line). */
  maxStallAfterRestoreMs: number;
  /** [ms since dump, bytes] */
  points: [number, number][];
}

export function progressFigures(
  points: ProgressPoint[],
  tDump: number,
  freezeMs: number,
  endMs: number,
): ProgressFigures {
  const pts = points.map((p) => [p.t - tDump, p.bytes] as [number, number]);
  let atDump = 0;
  for (const [t, b] of pts) if (t <= 0) atDump = b;
  const after = pts.filter(([t]) => t >= freezeMs);
  const last = pts[pts.length - 1];
  let stall = 0;
  let prev = freezeMs;
  for (const [t] of after) {
    stall = Math.max(stall, t - prev);
    prev = t;
  }
  stall = Math.max(stall, endMs - prev);
  const atEnd = last ? last[1] : 0;
  return {
    atDump,
    atEnd,
    afterRestore: atEnd - atDump,
    rateAfterRestoreBps: Math.round(((atEnd - atDump) * 1000) / Math.max(1, endMs - freezeMs)),
    maxStallAfterRestoreMs: Math.round(stall),
    points: pts,
  };
}
