/**
 * Origin reads of block runs, for the engine: blocks of one file are fetched once however
 * many readers miss them at once (single flight); adjacent missing blocks go out as one run
 * (up to maxRunBlocks); demand runs always start before readahead, readahead before prefetch,
 * and background runs hold at most `bgConcurrency` of the `concurrency` slots. Each run's
 * bytes go into the file's block store as they arrive, recorded once their read is verified.
 */
import type { ReadPartCallback } from "../origin/types.js";
import { ABSENT } from "../store/blockfile.js";
import { DEMAND, type Entry, type Job, STORE_BATCH_BYTES } from "./types.js";

export interface SchedulerOptions {
  blockSize: number;
  maxRunBlocks: number;
  concurrency: number;
  bgConcurrency: number;
  /** Bytes off..off+len of `e` (short only at its end); pieces go to `onPart` as they come. */
  fetch(e: Entry, off: number, len: number, onPart: ReadPartCallback): Promise<Buffer>;
  /** After every run, done or failed. */
  afterRun(): void;
}

export class RunScheduler {
  private readonly queue: Job[] = [];
  private running = 0;
  private runningBackground = 0;
  private seq = 0;
  /** Bytes read from the origin whose verification or store writes are still running. */
  private storingBytes = 0;
  private readonly storeBacklogBytes: number;

  constructor(private readonly opts: SchedulerOptions) {
    this.storeBacklogBytes = opts.concurrency * opts.maxRunBlocks * opts.blockSize;
  }

  /** Makes blocks first..last of `e` local, fetching the absent ones at priority `prio`. */
  ensure(e: Entry, first: number, last: number, prio: number): Promise<void> {
    const blocks = e.blocks!;
    last = Math.min(last, blocks.blocks - 1);
    const waits: Promise<void>[] = [];
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart >= 0) waits.push(this.enqueue(e, runStart, end - runStart, prio));
      runStart = -1;
    };
    for (let i = first; i <= last; i++) {
      const inflight = e.inflight.get(i);
      if (inflight) {
        flush(i);
        if (!inflight.job.started && inflight.job.prio > prio) inflight.job.prio = prio;
        if (waits[waits.length - 1] !== inflight.promise) waits.push(inflight.promise);
      } else if (blocks.stateOf(i) === ABSENT) {
        if (runStart < 0) runStart = i;
        else if (i - runStart >= this.opts.maxRunBlocks) {
          flush(i);
          runStart = i;
        }
      } else flush(i);
    }
    flush(last + 1);
    if (waits.length === 0) return Promise.resolve();
    if (this.queue.length) this.pump();
    return Promise.all(waits).then(() => {});
  }

  /** Fails every run not started yet with `err` (the engine closes). */
  cancelQueued(err: unknown): void {
    for (const job of this.queue.splice(0)) {
      job.reject(err);
      for (let i = job.first; i < job.first + job.count; i++) job.entry.inflight.delete(i);
    }
  }

  private enqueue(entry: Entry, first: number, count: number, prio: number): Promise<void> {
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => {});
    const job: Job = {
      entry,
      first,
      count,
      prio,
      started: false,
      seq: this.seq++,
      resolve,
      reject,
    };
    for (let i = first; i < first + count; i++) entry.inflight.set(i, { promise, job });
    this.queue.push(job);
    return promise;
  }

  private pump() {
    while (this.running < this.opts.concurrency && this.queue.length > 0) {
      let best = 0;
      for (let i = 1; i < this.queue.length; i++) {
        const a = this.queue[i]!;
        const b = this.queue[best]!;
        if (a.prio < b.prio || (a.prio === b.prio && a.seq < b.seq)) best = i;
      }
      const job = this.queue[best]!;
      if (job.prio > DEMAND && this.runningBackground >= this.opts.bgConcurrency) return;
      this.queue.splice(best, 1);
      this.runJob(job);
    }
  }

  /**
   * Runs one origin read and stores it. Blocks go to the store in large contiguous writes as
   * soon as a run of at least STORE_BATCH_BYTES has arrived in full (fewer writes, fewer
   * thread-pool hand-offs than one per block). The slot is given back as soon as all of the
   * read's bytes have arrived, while its verification (the fstat behind it, and the exact
   * check of a file's first read on a connection) and the last writes finish, unless too many
   * bytes wait; the blocks stay in flight (readers wait) until their bytes are verified and in
   * the data file. Without that, the first reads of a file would hold every background slot
   * for the exact check's round trip.
   */
  private async runJob(job: Job) {
    job.started = true;
    const background = job.prio > DEMAND;
    this.running++;
    if (background) this.runningBackground++;
    let holdsSlot = true;
    const releaseSlot = () => {
      if (!holdsSlot) return;
      holdsSlot = false;
      this.running--;
      if (background) this.runningBackground--;
      this.pump();
    };
    const e = job.entry;
    const blocks = e.blocks!;
    const bs = this.opts.blockSize;
    const stores: Promise<void>[] = [];
    let storing = 0;
    /** All bytes are here: count them as waiting, and free the slot unless too many wait. */
    const arrived = (len: number) => {
      if (storing) return;
      storing = len;
      this.storingBytes += storing;
      if (this.storingBytes <= this.storeBacklogBytes) releaseSlot();
    };
    /** The whole read, once verified (set when the origin read returned). */
    let verifiedData: Buffer | undefined;
    try {
      const off = job.first * bs;
      const len = Math.min(job.count * bs, blocks.size - off);
      if (len > 0) {
        // Per block, bytes still to arrive; `stored` blocks from the start are handed over.
        const missing = Array.from({ length: job.count }, (_, k) => Math.min(bs, len - k * bs));
        let stored = 0;
        let complete = 0;
        const store = (whole: Buffer, from: number, to: number, verified?: Promise<void>) => {
          const bytes = whole.subarray(from * bs, Math.min(to * bs, len));
          // Bytes whose read is still being verified are written now and recorded only if
          // it passes (readers wait for this job meanwhile).
          const gate = verified?.then(
            () => true,
            () => false,
          );
          stores.push(
            gate
              ? blocks.fillAfter(job.first + from, bytes, gate)
              : blocks.fill(job.first + from, bytes),
          );
        };
        let current: Buffer | undefined;
        const onPart = (rel: number, length: number, whole: Buffer, verified?: Promise<void>) => {
          if (whole !== current) {
            // A retried read starts over in a new buffer: count the unstored blocks afresh.
            current = whole;
            for (let k = stored; k < job.count; k++) missing[k] = Math.min(bs, len - k * bs);
            complete = stored;
          }
          for (let k = Math.floor(rel / bs); k * bs < rel + length && k < job.count; k++) {
            missing[k]! -= Math.min((k + 1) * bs, rel + length) - Math.max(k * bs, rel);
          }
          while (complete < job.count && missing[complete] === 0) complete++;
          if ((complete - stored) * bs >= STORE_BATCH_BYTES || complete === job.count) {
            store(whole, stored, complete, verified);
            stored = complete;
          }
          if (complete === job.count) arrived(len);
        };
        let data = await this.opts.fetch(e, off, len, onPart);
        if (data.length < len) data = Buffer.concat([data, Buffer.alloc(len - data.length)]);
        if (stored < job.count) store(data, stored, job.count);
        verifiedData = data;
        arrived(len);
      }
      await Promise.all(stores);
      // Pieces of an earlier attempt (a dropped connection, then a retry) whose verification
      // failed were not recorded: the verified read fills them (fill skips what is local).
      if (verifiedData) await blocks.fill(job.first, verifiedData);
      job.resolve();
    } catch (err) {
      await Promise.allSettled(stores);
      job.reject(err);
    } finally {
      this.storingBytes -= storing;
      for (let i = job.first; i < job.first + job.count; i++) {
        if (e.inflight.get(i)?.job === job) e.inflight.delete(i);
      }
      if (holdsSlot) releaseSlot();
      else this.pump();
      this.opts.afterRun();
    }
  }
}
