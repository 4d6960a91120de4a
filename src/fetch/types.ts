/**
 * The engine's vocabulary: options, status shapes, crawlers, and the per-file entry and job
 * records its scheduler works on (engine.ts and the files beside it hold the behaviour).
 */

import type { ScrubContent } from "../origin/scrub.js";
import type { Origin } from "../origin/types.js";
import type { BlockFile } from "../store/blockfile.js";
import type { FileMeta } from "../store/store.js";
import type { FileCounters, SourceCounters } from "./accounting.js";
import type { Readahead } from "./readahead.js";

export type PrefetchMode = "none" | "immediate" | "delay" | "idle";

export interface EngineOptions {
  cacheDir: string;
  origin: Origin;
  /**
   * Store block size (the smallest fetch), default 64 KiB; an existing cache keeps its own.
   * Sequential readers fetch larger runs (readahead), random ones just the blocks they touch.
   */
  blockSize?: number;
  bwlimitBytesPerSec?: number;
  prefetch?: { mode: PrefetchMode; delayMs?: number; idleMs?: number };
  /**
   * Serve files that changed on the origin since the checkpoint (size, mtime, ctime, inode),
   * from their new content (default: refuse them; see integrity.ts).
   */
  allowChanged?: boolean;
  /** Content for the `scrub` policy: a generator spec or an origin (default zeros). */
  scrub?: ScrubContent | Origin;
  /** Largest coalesced origin read, default 4 MiB. */
  maxRunBytes?: number;
  /**
   * Origin reads in flight, default 8; background work gets at most backgroundConcurrency,
   * default 2 (2 x 4 MiB keeps a link busy; more in flight made whole-file fetch over loopback
   * SSH slower, not faster).
   */
  concurrency?: number;
  backgroundConcurrency?: number;
  /** Largest readahead window for sequential readers, default 8 MiB. */
  readaheadMaxBytes?: number;
  /**
   * Fetch a whole file on its first reference instead of the blocks touched: what the paper's
   * implementation did with scp (a baseline for benchmarks).
   */
  wholeFile?: boolean;
}

/**
 * Work that still needs the origin beyond the engine's files: LazyFS's lazy directories,
 * whose names are known only once listed there. `crawl` lists everything left (adding the
 * files it finds with `addFile`), going at `pace` (the prefetch schedule), and resolves when
 * done or when the engine closes.
 */
export interface Crawler {
  progress(): CrawlProgress;
  crawl(pace: () => Promise<void>): Promise<void>;
}

export interface CrawlProgress {
  /** Directories listed on the origin. */
  crawled: number;
  /** Directories whose listing is still only on the origin. */
  uncrawled: number;
  /** Files found on the origin and not yet handed to the engine. */
  pendingFiles: number;
}

/** A file's figures; the byte counters (FileCounters) say where its bytes came from. */
export interface FileStatus extends FileCounters {
  id: string;
  path: string;
  policy: FileMeta["policy"];
  size: number;
  bytesLocal: number;
  bytesDirty: number;
  bytesOnOrigin: number;
  /** Not served from the origin: it changed there since the checkpoint (see integrity.ts). */
  refused?: { reason: string; offset: number; atMs: number };
  /** Changed on the origin and served from the new content (allowChanged). */
  changed?: { reason: string; atMs: number };
}

export interface EngineStatus {
  files: FileStatus[];
  total: Omit<FileStatus, "id" | "path" | "policy" | "refused" | "changed"> & {
    /** Files refused because they changed on the origin, and changed ones served anyway. */
    refusedFiles: number;
    changedFiles: number;
  };
  /** Per source of bytes (the origin host, the scrub generator, the target's local copies). */
  origins: Record<string, SourceCounters>;
  prefetch: {
    mode: PrefetchMode;
    state: "off" | "waiting" | "running" | "done";
    bytesOnOrigin: number;
  };
  /** Lazy directories (all crawlers together). */
  dirs: CrawlProgress;
  independent: boolean;
}

/** Smallest run of arrived blocks written to the store in one go (the rest at the end). */
export const STORE_BATCH_BYTES = 1 << 20;

export const DEMAND = 0;
export const READAHEAD = 1;
export const PREFETCH = 2;

export interface Job {
  entry: Entry;
  first: number;
  count: number;
  prio: number;
  started: boolean;
  seq: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Where a file's content comes from, decided once per file (see source.ts). */
export interface PreparedSource {
  source: Origin;
  path: string;
  fromOrigin: boolean;
}

export interface Entry {
  meta: FileMeta;
  blocks?: BlockFile;
  remoteSize: number;
  prepared?: Promise<PreparedSource>;
  /** Whether the content comes from the origin host (false for scrub, matched local). */
  dependsOnOrigin: boolean;
  inflight: Map<number, { promise: Promise<void>; job: Job }>;
  stats: FileCounters;
  /** Sequential streams of this file and their readahead windows. */
  ra: Readahead;
  prefetching?: Promise<void>;
}

/** Equal mtimes at the origin's precision (sub-millisecond conversions are noise). */
export function sameMtime(a: number, b: number, precisionMs: number): boolean {
  return Math.abs(a - b) < 1 || Math.floor(a / precisionMs) === Math.floor(b / precisionMs);
}

export function sameCheckpoint(a: FileMeta, b: FileMeta): boolean {
  return (
    a.originPath === b.originPath &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs &&
    a.policy === b.policy
  );
}
