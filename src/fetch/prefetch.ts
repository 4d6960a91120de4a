/**
 * Prefetch, for the engine: when its schedule says so (at once, after a delay, or only while
 * the process reads nothing), every block not yet local is fetched in the background, file by
 * file in runs of maxRunBlocks, and the crawlers (lazy directories) list what is left. Files
 * and crawl work added later are taken in as they come. Policy `eager` files are prefetched
 * whatever the schedule.
 */
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { ABSENT } from "../store/blockfile.js";
import { isNoSpace } from "../store/space.js";
import {
  type Crawler,
  type CrawlProgress,
  type EngineOptions,
  type Entry,
  PREFETCH,
} from "./types.js";

const log = logger("fetch");

export type PrefetchState = "off" | "waiting" | "running" | "done";

export interface PrefetcherOptions {
  schedule: EngineOptions["prefetch"];
  maxRunBlocks: number;
  /**
   * Runs a file's prefetch keeps queued or running. More than the scheduler's background
   * slots: a run frees its slot once its bytes are here, and the next one goes out while the
   * last one is verified and stored.
   */
  runsPerFile: number;
  entries(): Iterable<Entry>;
  ensure(e: Entry, first: number, last: number, prio: number): Promise<void>;
  isClosed(): boolean;
  /** After a crawl (the engine may now be independent). */
  crawled(): void;
}

export class Prefetcher {
  private stateNow: PrefetchState = "off";
  private timer?: NodeJS.Timeout;
  private demandOutstanding = 0;
  private lastDemandMs = 0;
  private readonly crawlers: Crawler[] = [];
  private crawling?: Promise<void>;

  constructor(private readonly opts: PrefetcherOptions) {}

  get state(): PrefetchState {
    return this.stateNow;
  }

  get mode() {
    return this.opts.schedule?.mode ?? "none";
  }

  /** Arms the schedule (the engine has opened). */
  startSchedule(): void {
    const p = this.opts.schedule ?? { mode: "none" };
    if (p.mode === "none") return;
    if (p.mode === "delay") {
      this.stateNow = "waiting";
      this.timer = setTimeout(() => this.start(), p.delayMs ?? 0);
    } else this.start();
  }

  /** Starts fetching every remaining block in the background now (whatever the schedule). */
  start(): void {
    if (this.opts.isClosed() || this.stateNow === "running") return;
    this.stateNow = "running";
    const all = [...this.opts.entries()].map((e) => this.prefetchFile(e));
    if (this.crawlers.length) all.push(this.runCrawlers());
    Promise.all(all).finally(() => this.checkDone());
  }

  /** Goes on with files whose prefetch stopped (the cache's disk had no room), if started. */
  resume(): void {
    if (this.opts.isClosed() || (this.stateNow !== "running" && this.stateNow !== "done")) return;
    this.stateNow = "running";
    const all = [...this.opts.entries()].map((e) => this.prefetchFile(e));
    Promise.all(all).finally(() => this.checkDone());
  }

  /** A file is known (added, or found again at open): an eager one is fetched at once. */
  fileAttached(e: Entry): void {
    if (e.meta.policy === "eager") void this.prefetchFile(e);
  }

  /** A file was added: fetched too if prefetch has started. */
  fileAdded(e: Entry): void {
    if (this.stateNow === "running" || this.stateNow === "done") {
      this.stateNow = "running";
      this.prefetchFile(e).finally(() => this.checkDone());
    }
  }

  /** Registers more work that needs the origin (see Crawler). */
  addCrawler(c: Crawler): void {
    this.crawlers.push(c);
    this.crawlWorkAdded();
  }

  /** A crawler has more to list: once prefetch has started, it lists that too. */
  crawlWorkAdded(): void {
    if (this.stateNow === "running" || this.stateNow === "done") {
      this.stateNow = "running";
      void this.runCrawlers();
    }
  }

  crawlProgress(): CrawlProgress {
    const p: CrawlProgress = { crawled: 0, uncrawled: 0, pendingFiles: 0 };
    for (const c of this.crawlers) {
      const q = c.progress();
      p.crawled += q.crawled;
      p.uncrawled += q.uncrawled;
      p.pendingFiles += q.pendingFiles;
    }
    return p;
  }

  crawlsDone(): boolean {
    const p = this.crawlProgress();
    return p.uncrawled === 0 && p.pendingFiles === 0;
  }

  /** A read of the process begins / ends (the `idle` mode waits for quiet). */
  demandStarted(): void {
    this.demandOutstanding++;
  }

  demandEnded(): void {
    this.demandOutstanding--;
    this.lastDemandMs = performance.now();
  }

  /** Stops the schedule; resolves once a running crawl has stopped. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.crawling;
  }

  private checkDone() {
    if (
      this.stateNow === "running" &&
      !this.crawling &&
      [...this.opts.entries()].every((e) => !e.prefetching)
    ) {
      this.stateNow = "done";
    }
  }

  private async waitIdle() {
    const idleMs = this.opts.schedule?.idleMs ?? 200;
    for (;;) {
      const quiet = performance.now() - this.lastDemandMs;
      if (this.opts.isClosed() || (this.demandOutstanding === 0 && quiet >= idleMs)) return;
      await new Promise((r) => setTimeout(r, Math.max(10, idleMs - quiet)));
    }
  }

  private runCrawlers(): Promise<void> {
    const pace = () => (this.mode === "idle" ? this.waitIdle() : Promise.resolve());
    const run = async () => {
      for (const c of this.crawlers) {
        if (this.opts.isClosed()) return;
        await c.crawl(pace).catch((err) => {
          if (!this.opts.isClosed()) log.warn("crawl stopped", { error: errorMessage(err) });
        });
      }
    };
    if (this.crawling) return this.crawling; // its loop reaches crawlers added meanwhile
    this.crawling = run().finally(() => {
      this.crawling = undefined;
      this.checkDone();
      this.opts.crawled();
    });
    return this.crawling;
  }

  private prefetchFile(e: Entry): Promise<void> {
    if (!e.blocks || e.prefetching) return e.prefetching ?? Promise.resolve();
    const b = e.blocks;
    const idle = this.mode === "idle" && e.meta.policy !== "eager";
    const closed = () => this.opts.isClosed();
    e.prefetching = (async () => {
      const outstanding = new Set<Promise<void>>();
      let failure: unknown;
      for (let i = 0; i < b.blocks && !closed() && failure === undefined; ) {
        if (b.stateOf(i) !== ABSENT || e.inflight.has(i)) {
          i++;
          continue;
        }
        if (idle) await this.waitIdle();
        while (outstanding.size >= this.opts.runsPerFile) await Promise.race(outstanding);
        const last = Math.min(i + this.opts.maxRunBlocks - 1, b.blocks - 1);
        const p: Promise<void> = this.opts
          .ensure(e, i, last, PREFETCH)
          .catch((err) => {
            failure = err;
          })
          .finally(() => outstanding.delete(p));
        outstanding.add(p);
        i = last + 1;
      }
      await Promise.all(outstanding);
      if (failure !== undefined && !closed()) {
        // A full disk is logged once by the store, and prefetch resumes when it has room.
        (isNoSpace(failure) ? log.debug : log.warn)("prefetch stopped", {
          path: e.meta.originPath,
          error: errorMessage(failure),
        });
      }
    })().finally(() => {
      e.prefetching = undefined;
    });
    return e.prefetching;
  }
}
