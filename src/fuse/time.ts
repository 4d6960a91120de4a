/**
 * Timestamps as the kernel carries them: whole seconds since the epoch (may be negative) and
 * nanoseconds 0..999,999,999, so nothing is lost between a caller's utimensat and its stat.
 */
import type { BigIntStats } from "node:fs";

export interface Timespec {
  sec: number;
  nsec: number;
}

const NS = 1_000_000_000n;

/** A Timespec from milliseconds since the epoch (a `Date.now()` or `Stats.mtimeMs`). */
export function timespecFromMs(ms: number): Timespec {
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((ms - sec * 1000) * 1e6)));
  return { sec, nsec };
}

/** Milliseconds since the epoch (nanoseconds below a millisecond become a fraction). */
export function timespecToMs(t: Timespec): number {
  return t.sec * 1000 + t.nsec / 1e6;
}

/** A Timespec from nanoseconds since the epoch (`BigIntStats.mtimeNs`). */
export function timespecFromNs(ns: bigint): Timespec {
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) {
    nsec += NS;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

/** Nanoseconds since the epoch. */
export function timespecToNs(t: Timespec): bigint {
  return BigInt(t.sec) * NS + BigInt(t.nsec);
}

/** The wall clock now (to the millisecond, as `Date.now()`). */
export function timespecNow(): Timespec {
  return timespecFromMs(Date.now());
}

/** The three times of a `stat` made with `{ bigint: true }`, to the nanosecond. */
export function statTimes(st: BigIntStats): { atime: Timespec; mtime: Timespec; ctime: Timespec } {
  return {
    atime: timespecFromNs(st.atimeNs),
    mtime: timespecFromNs(st.mtimeNs),
    ctime: timespecFromNs(st.ctimeNs),
  };
}
