/**
 * The copy-on-reference engine: "give me bytes X..Y of file F" / "write these bytes to F",
 * fetching from the origin only blocks never fetched or written locally.
 *
 *   const engine = await Engine.open({ cacheDir, origin, blockSize?, bwlimitBytesPerSec?,
 *     prefetch?: { mode: "none" | "immediate" | "delay" | "idle", delayMs?, idleMs? },
 *     allowChanged?, scrub? });
 *   await engine.addFile({ id, originPath, size, mtimeMs, mode, uid, gid, policy, localPath? });
 *   await engine.read(id, offset, length)   -> Buffer (short only at end of file)
 *   await engine.write(id, offset, data); await engine.truncate(id, size); await engine.fsync(id)
 *   engine.size(id); engine.status(); engine.on("independent", () => ...); await engine.close()
 *
 * Reopening on the same cacheDir resumes: files added before are known again and no block
 * fetched before is fetched again. A file's origin size and mtime are compared with the
 * checkpoint's on every origin read (see integrity.ts: the origin checks its open file behind
 * the data); a changed file is refused with a UserError unless `allowChanged`.
 *
 * Scheduling (scheduler.ts): blocks of one file are fetched once however many readers miss
 * them at once (single flight); adjacent missing blocks go to the origin as one read (up to
 * maxRunBytes); demand reads always start before readahead, readahead before prefetch, and
 * background work holds at most `backgroundConcurrency` of the `concurrency` origin slots. A
 * bandwidth cap applies to every origin read. The engine does not close `origin`; the caller
 * does.
 *
 * "independent" is emitted when no byte that a file may need is left only on the origin:
 * every lazy/eager/local file fully local, no `remote` file, and every registered crawler
 * (the lazy directories: names not yet listed on the origin) done. Files may be added and
 * removed at any time (a process creates and deletes files); prefetch also runs the crawlers,
 * whose discovered files are added and prefetched like the others.
 *
 * This file keeps the files and the read path; beside it: entry.ts (adding a file),
 * source.ts (where its bytes come from), write.ts (writes and truncates), scheduler.ts,
 * prefetch.ts, readahead.ts, status.ts (figures and the files' part of "independent").
 */
import { EventEmitter } from "node:events";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { ScrubOrigin } from "../origin/scrub.js";
import type { Origin } from "../origin/types.js";
import { ABSENT } from "../store/blockfile.js";
import type { CacheSpace } from "../store/space.js";
import { type FileMeta, Store } from "../store/store.js";
import { Accounting, type ByteSource } from "./accounting.js";
import { checkNewFile, openEntry } from "./entry.js";
import { Integrity } from "./integrity.js";
import { Prefetcher } from "./prefetch.js";
import { RateLimiter } from "./ratelimit.js";
import { RunScheduler } from "./scheduler.js";
import { Sources } from "./source.js";
import { engineStatus, filesIndependent } from "./status.js";
import {
  type Crawler,
  DEMAND,
  type EngineOptions,
  type EngineStatus,
  type Entry,
  READAHEAD,
  sameCheckpoint,
} from "./types.js";
import { Writer } from "./write.js";

export type { ByteSource, FileCounters, SourceCounters, SummedField } from "./accounting.js";
export type {
  Crawler,
  CrawlProgress,
  EngineOptions,
  EngineStatus,
  FileStatus,
  PrefetchMode,
} from "./types.js";

const log = logger("fetch");

export class Engine extends EventEmitter {
  private readonly entries = new Map<string, Entry>();
  private readonly runs: RunScheduler;
  private readonly limiter: RateLimiter;
  private readonly acct: Accounting;
  private readonly blockSize: number;
  private readonly maxRunBlocks: number;
  private readonly readaheadMax: number;
  private readonly prefetch: Prefetcher;
  private independentEmitted = false;
  private closed = false;
  private readonly sources: Sources;
  private readonly writer: Writer;

  private constructor(
    private readonly store: Store,
    private readonly integrity: Integrity,
    private readonly opts: EngineOptions,
  ) {
    super();
    this.blockSize = store.blockSize;
    this.limiter = new RateLimiter(opts.bwlimitBytesPerSec ?? 0);
    const scrub = opts.scrub;
    const scrubOrigin =
      scrub && "read" in scrub ? scrub : new ScrubOrigin(scrub ?? { kind: "zeros" }, opts.origin);
    this.acct = new Accounting(opts.origin, scrubOrigin);
    this.sources = new Sources(opts.origin, scrubOrigin, this.limiter, this.acct, integrity);
    this.maxRunBlocks = Math.max(1, Math.floor((opts.maxRunBytes ?? 4 << 20) / this.blockSize));
    const concurrency = Math.max(1, opts.concurrency ?? 8);
    const bgConcurrency = Math.max(1, Math.min(concurrency, opts.backgroundConcurrency ?? 2));
    this.readaheadMax = opts.readaheadMaxBytes ?? 8 << 20;
    this.runs = new RunScheduler({
      blockSize: this.blockSize,
      maxRunBlocks: this.maxRunBlocks,
      concurrency,
      bgConcurrency,
      fetch: (e, off, len, onPart) => this.sources.fetchRun(e, off, len, onPart),
      afterRun: () => this.checkIndependent(),
    });
    this.writer = new Writer({
      blockSize: this.blockSize,
      sources: this.sources,
      acct: this.acct,
      ensure: (e, first, last, prio) => this.runs.ensure(e, first, last, prio),
      ensureWholeFile: (e) => this.ensureWholeFile(e),
      truncated: () => this.checkIndependent(),
    });
    this.prefetch = new Prefetcher({
      schedule: opts.prefetch,
      maxRunBlocks: this.maxRunBlocks,
      // As many runs as the store's backlog of waiting bytes allows, beside the running ones.
      runsPerFile: bgConcurrency + concurrency,
      entries: () => this.entries.values(),
      ensure: (e, first, last, prio) => this.runs.ensure(e, first, last, prio),
      isClosed: () => this.closed,
      crawled: () => this.checkIndependent(),
    });
    // Prefetch stopped on a full disk goes on once there is room.
    store.space.onRoom(() => this.prefetch.resume());
  }

  /** Whether the cache's disk is full (status, metrics; the tree's journal reports here too). */
  get cacheSpace(): CacheSpace {
    return this.store.space;
  }

  static async open(opts: EngineOptions): Promise<Engine> {
    const store = await Store.open(opts.cacheDir, opts.blockSize);
    const integrity = await Integrity.load(opts.cacheDir, opts.allowChanged ?? false);
    const engine = new Engine(store, integrity, opts);
    for (const meta of await store.list()) await engine.attach(meta, false);
    engine.prefetch.startSchedule();
    return engine;
  }

  private async attach(meta: FileMeta, create: boolean): Promise<Entry> {
    const entry = await openEntry(this.store, meta, create, {
      blockSize: this.blockSize,
      maxWindow: this.readaheadMax,
    });
    this.entries.set(meta.id, entry);
    this.prefetch.fileAttached(entry);
    return entry;
  }

  /** Adds a migrated file (idempotent for the same checkpoint data; resumes after reopen). */
  async addFile(meta: FileMeta): Promise<void> {
    checkNewFile(meta);
    const existing = this.entries.get(meta.id);
    if (existing) {
      if (sameCheckpoint(existing.meta, meta)) return;
      throw new UserError(
        `addFile ${meta.originPath}: id ${meta.id} already holds ${existing.meta.originPath} (size ${existing.meta.size}, mtime ${existing.meta.mtimeMs}) in ${this.opts.cacheDir}`,
      );
    }
    const entry = await this.attach({ ...meta }, true);
    this.independentEmitted = false;
    if (meta.policy === "eager") await this.sources.prepare(entry);
    this.prefetch.fileAdded(entry);
  }

  /** Where files come from (lazy directories ask it for names too). */
  get origin(): Origin {
    return this.opts.origin;
  }

  /** Forgets file `id` and its local copy (a file removed for good); no-op if unknown. */
  async removeFile(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.acct.retire(e.stats);
    this.integrity.forget(id);
    await Promise.all([...e.inflight.values()].map((f) => f.promise.catch(() => {})));
    await e.prefetching;
    await e.blocks?.close();
    await this.store.removeFile(id);
    this.checkIndependent();
  }

  hasFile(id: string): boolean {
    return this.entries.has(id);
  }

  /** Registers more work that needs the origin (see Crawler); prefetch runs it too. */
  addCrawler(c: Crawler): void {
    this.independentEmitted = false;
    this.prefetch.addCrawler(c);
  }

  /**
   * A crawler has more to list (a plan with lazy directories arrived after the mount): once
   * prefetch has started, it lists that too.
   */
  crawlWorkAdded(): void {
    this.independentEmitted = false;
    this.prefetch.crawlWorkAdded();
  }

  private entry(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new UserError(`no migrated file with id ${id}`);
    if (this.closed) throw new UserError(`engine for ${this.opts.cacheDir} is closed`);
    return e;
  }

  // ---- public file operations ---------------------------------------------------------------

  /**
   * Bytes offset..offset+length of file `id` (fewer only at end of file). `info.source`, when
   * given, is set to where they came from: the store, or the source a fetch had to wait for.
   */
  async read(
    id: string,
    offset: number,
    length: number,
    info?: { source?: ByteSource },
  ): Promise<Buffer> {
    const e = this.entry(id);
    if (offset < 0 || length < 0 || !Number.isSafeInteger(offset + length)) {
      throw new UserError(`read ${e.meta.originPath}: bad range @${offset}+${length}`);
    }
    if (!e.blocks) {
      // Live content: read what the origin has now, however much it grew since the dump.
      const { source, path } = await this.sources.prepare(e);
      if (length === 0) return Buffer.alloc(0);
      await this.limiter.acquire(length);
      const data = await source.read(path, offset, length);
      this.sources.account(e, source, data.length);
      if (info) info.source = this.sources.fetchSource(e);
      e.remoteSize = Math.max(e.remoteSize, offset + data.length);
      return data;
    }
    await this.ensureWholeFile(e);
    const len = Math.max(0, Math.min(length, e.blocks.size - offset));
    if (len === 0) return Buffer.alloc(0);
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + len - 1) / this.blockSize);
    this.prefetch.demandStarted();
    let waited = false;
    try {
      for (let i = 0; i < 3 && !this.isLocal(e, first, last); i++) {
        waited = true;
        await this.runs.ensure(e, first, last, DEMAND);
      }
    } catch (err) {
      this.store.space.requestFailed(err);
      throw err;
    } finally {
      this.prefetch.demandEnded();
    }
    this.readahead(e, offset, len);
    if (!waited) this.acct.served(e.stats, len);
    if (info) info.source = waited ? this.sources.fetchSource(e) : "store";
    return e.blocks.read(offset, len);
  }

  /** In wholeFile mode, the first reference fetches every absent block of the file. */
  private async ensureWholeFile(e: Entry): Promise<void> {
    const b = e.blocks;
    if (!this.opts.wholeFile || !b || b.blocks === 0) return;
    for (let i = 0; i < 3 && !this.isLocal(e, 0, b.blocks - 1); i++) {
      await this.runs.ensure(e, 0, b.blocks - 1, DEMAND);
    }
  }

  private isLocal(e: Entry, first: number, last: number): boolean {
    const b = e.blocks!;
    for (let i = first; i <= Math.min(last, b.blocks - 1); i++) {
      if (b.stateOf(i) === ABSENT || e.inflight.has(i)) return false;
    }
    return true;
  }

  /** Fetches ahead of a sequential reader (see readahead.ts); nothing for random reads. */
  private readahead(e: Entry, offset: number, len: number) {
    const ahead = e.ra.onRead(offset, len, e.blocks!.size);
    if (!ahead) return;
    const first = Math.floor(ahead.start / this.blockSize);
    const last = Math.floor((ahead.end - 1) / this.blockSize);
    this.runs
      .ensure(e, first, last, READAHEAD)
      .catch((err) =>
        log.debug("readahead failed", { path: e.meta.originPath, error: errorMessage(err) }),
      );
  }

  /**
   * Writes `data` at `offset`; fetches first only the absent blocks it covers partially.
   * `info.source` is set to where the bytes went: kept here, or the origin (`remote`).
   */
  async write(
    id: string,
    offset: number,
    data: Buffer,
    info?: { source?: ByteSource },
  ): Promise<void> {
    return this.writer.write(this.entry(id), offset, data, info).catch((err: unknown) => {
      this.store.space.requestFailed(err);
      throw err;
    });
  }

  /**
   * The store's data file of `id` when it holds the file's whole content (no block only on
   * the origin or in flight, not `remote`): kernel passthrough may serve that file directly.
   */
  localDataPath(id: string): string | undefined {
    const e = this.entries.get(id);
    const b = e?.blocks;
    if (!b || this.closed || b.count(ABSENT) > 0 || e.inflight.size > 0) return undefined;
    return b.dataPath;
  }

  /** The data file of `id` changed behind the engine (passthrough): see BlockFile.adopt. */
  adoptLocalChanges(id: string, size: number, written: boolean): void {
    this.entry(id).blocks?.adopt(size, written);
  }

  /** Sets the size of file `id` (shrinking fetches the block holding the new end first). */
  async truncate(id: string, size: number): Promise<void> {
    return this.writer.truncate(this.entry(id), size);
  }

  /** fsync of every file. */
  async fsyncAll(): Promise<void> {
    for (const e of this.entries.values()) await e.blocks?.fsync();
  }

  /** Makes the file's written data, size and block states durable. */
  async fsync(id: string): Promise<void> {
    await this.entry(id).blocks?.fsync();
  }

  size(id: string): number {
    const e = this.entry(id);
    return e.blocks ? e.blocks.size : e.remoteSize;
  }

  /**
   * A remote file's size and mtime on the origin now (its size() follows); undefined for a
   * file kept here, or when the origin cannot be asked.
   */
  async refreshRemote(id: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    const e = this.entry(id);
    if (e.blocks) return undefined;
    const st = await this.opts.origin.stat(e.meta.originPath).catch(() => undefined);
    if (!st) return undefined;
    e.remoteSize = st.size;
    return { size: st.size, mtimeMs: st.mtimeMs };
  }

  /** Starts fetching every remaining block in the background now (whatever the schedule). */
  startPrefetch(): void {
    this.prefetch.start();
  }

  // ---- status -------------------------------------------------------------------------------

  /** Emits "independent" if it now holds (a crawler calls it after progress). */
  checkIndependent(): void {
    if (this.independentEmitted || this.closed) return;
    if (!filesIndependent(this.entries.values())) return;
    if (!this.prefetch.crawlsDone()) return;
    this.independentEmitted = true;
    this.emit("independent");
  }

  status(): EngineStatus {
    return engineStatus(this.entries.values(), this.integrity, this.acct, this.prefetch);
  }

  /** Resolves once no needed byte is left only on the origin (see "independent"). */
  whenIndependent(): Promise<void> {
    if (this.status().independent) return Promise.resolve();
    return new Promise((resolve) => this.once("independent", () => resolve()));
  }

  /** Stops background work, waits for running origin reads, makes all files durable. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const prefetchStopped = this.prefetch.stop();
    const err = new UserError(`engine for ${this.opts.cacheDir} is closed`);
    this.runs.cancelQueued(err);
    const pending = [...this.entries.values()].flatMap((e) => [
      ...[...e.inflight.values()].map((f) => f.promise.catch(() => {})),
      e.prefetching ?? Promise.resolve(),
    ]);
    await Promise.all(pending);
    await prefetchStopped;
    await this.integrity.flush();
    for (const e of this.entries.values()) await e.blocks?.close();
    this.store.space.close();
  }
}
