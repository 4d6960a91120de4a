/**
 * Truthful byte accounting of the engine, per file and per source. Every byte a file's
 * reader gets or its writer gives is counted once, under where it really came from:
 *
 * - `bytesFromOrigin`: read from the origin host (SFTP), i.e. what crossed the link;
 * - `bytesSynthesized`: made up on the target by the `scrub` policy (never read on the origin);
 * - `bytesFromLocalCopy`: copied from the target's own identical file (policy `local`);
 * - `bytesWritten`: written by the process (kept locally; `remote` files: sent to the origin);
 * - `bytesServedFromStore`: returned to reads that the local store answered without a fetch.
 *
 * `bytesFetched` stays as the old name of `bytesFromOrigin`. `lastOriginAccessMs` is set only
 * when the origin host was really read or written.
 */
import type { Origin } from "../origin/types.js";

/** Where the bytes of one read or write came from (the access log's `source`). */
export type ByteSource = "store" | "origin" | "scrub" | "local-copy" | "local-write";

export interface FileCounters {
  bytesFromOrigin: number;
  /** Same as bytesFromOrigin (the field's name before the split). */
  bytesFetched: number;
  bytesSynthesized: number;
  bytesFromLocalCopy: number;
  bytesWritten: number;
  bytesServedFromStore: number;
  /** Reads and writes made on the origin host for this file. */
  requests: number;
  lastOriginAccessMs: number | null;
}

/** One source of bytes as the engine saw it (the origin host, the scrub generator, ...). */
export interface SourceCounters {
  name: string;
  kind: "origin" | "scrub" | "local-copy";
  bytes: number;
  /** Same as bytes (the field's name before the split). */
  bytesFetched: number;
  requests: number;
  lastAccessMs: number | null;
}

export function newFileCounters(): FileCounters {
  return {
    bytesFromOrigin: 0,
    bytesFetched: 0,
    bytesSynthesized: 0,
    bytesFromLocalCopy: 0,
    bytesWritten: 0,
    bytesServedFromStore: 0,
    requests: 0,
    lastOriginAccessMs: null,
  };
}

/** The summed numeric fields of FileCounters (totals over files, metrics per policy). */
export const SUMMED_FIELDS = [
  "bytesFromOrigin",
  "bytesFetched",
  "bytesSynthesized",
  "bytesFromLocalCopy",
  "bytesWritten",
  "bytesServedFromStore",
  "requests",
] as const;

export type SummedField = (typeof SUMMED_FIELDS)[number];

/** Sums counters; `lastOriginAccessMs` is the latest of them. */
export function sumCounters(all: readonly FileCounters[]): FileCounters {
  const t = newFileCounters();
  for (const c of all) {
    for (const k of SUMMED_FIELDS) t[k] += c[k];
    if (c.lastOriginAccessMs !== null && (t.lastOriginAccessMs ?? -1) < c.lastOriginAccessMs) {
      t.lastOriginAccessMs = c.lastOriginAccessMs;
    }
  }
  return t;
}

export class Accounting {
  private readonly sources = new Map<string, SourceCounters>();
  /** Counters of files removed since the engine opened (totals never go down). */
  readonly retired = newFileCounters();

  constructor(
    private readonly origin: Origin,
    private readonly scrub: Origin,
  ) {}

  kindOf(source: Origin): SourceCounters["kind"] {
    if (source === this.origin) return "origin";
    return source === this.scrub ? "scrub" : "local-copy";
  }

  /** `bytes` arrived from `source` for a file (one request; 0 bytes for a remote write). */
  fetched(file: FileCounters, source: Origin, bytes: number): void {
    const kind = this.kindOf(source);
    const now = Date.now();
    let s = this.sources.get(source.name);
    if (!s) {
      s = { name: source.name, kind, bytes: 0, bytesFetched: 0, requests: 0, lastAccessMs: null };
      this.sources.set(source.name, s);
    }
    s.bytes += bytes;
    s.bytesFetched += bytes;
    s.requests++;
    s.lastAccessMs = now;
    if (kind === "origin") {
      file.requests++;
      file.bytesFromOrigin += bytes;
      file.bytesFetched += bytes;
      file.lastOriginAccessMs = now;
    } else if (kind === "scrub") file.bytesSynthesized += bytes;
    else file.bytesFromLocalCopy += bytes;
  }

  /** A read answered from the store without waiting for a fetch. */
  served(file: FileCounters, bytes: number): void {
    file.bytesServedFromStore += bytes;
  }

  written(file: FileCounters, bytes: number): void {
    file.bytesWritten += bytes;
  }

  /** A file is removed: its counters stay in the totals. */
  retire(file: FileCounters): void {
    Object.assign(this.retired, sumCounters([this.retired, file]));
  }

  /** Per source: bytes and requests (keyed by the source's name). */
  status(): Record<string, SourceCounters> {
    return Object.fromEntries([...this.sources].map(([k, v]) => [k, { ...v }]));
  }
}
