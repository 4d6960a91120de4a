/**
 * How much to fetch ahead of a reader, per file, in the manner of the kernel's readahead:
 *
 * - A read that does not continue one of the file's streams starts a new stream (random
 *   access): nothing is fetched beyond the blocks it touches, so a sparse reader moves about
 *   what it reads.
 * - A stream that has gone through `triggerBytes` in order gets a window of `initialWindow`
 *   bytes ahead of its end.
 * - Like the kernel's asynchronous readahead marker, the next window is asked for only once
 *   the reader has eaten into half of what was already asked for, and each one is twice the
 *   last, up to `maxWindow`: the origin sees a few large reads (coalesced by the engine)
 *   rather than one small read per request.
 *
 * Several streams per file (interleaved readers of one file, e.g. two cursors of a database)
 * are tracked; the least recently used one makes room for a new one.
 */

/**
 * Default sequential run before readahead starts. Through a mount without kernel readahead a
 * single read(2) arrives as page-sized requests in order: a 256 KiB read must not look like a
 * stream (it would fetch a window it never reads).
 */
export const TRIGGER_BYTES = 512 * 1024;

export interface ReadaheadOptions {
  /** The store's block size: a read may restart up to one block before a stream's end. */
  blockSize: number;
  /** Largest window, bytes. */
  maxWindow: number;
  /** First window, bytes; default 4 blocks (at most maxWindow). */
  initialWindow?: number;
  /** Sequential bytes before any readahead; default TRIGGER_BYTES or 2 blocks if more. */
  triggerBytes?: number;
  /** Streams tracked per file; default 4. */
  streams?: number;
}

/** A byte range [start, end) to fetch in the background. */
export interface AheadRange {
  start: number;
  end: number;
}

interface Stream {
  /** End of the last read of this stream. */
  end: number;
  /** Bytes read in order so far. */
  run: number;
  /** Current window, 0 until the stream is recognised as sequential. */
  window: number;
  /** How far readahead has been asked for (exclusive). */
  aheadEnd: number;
  lastUse: number;
}

export class Readahead {
  private readonly streams: Stream[] = [];
  private readonly initial: number;
  private readonly trigger: number;
  private readonly maxStreams: number;
  private clock = 0;

  constructor(private readonly o: ReadaheadOptions) {
    this.initial = Math.min(o.initialWindow ?? 4 * o.blockSize, o.maxWindow);
    this.trigger = o.triggerBytes ?? Math.max(TRIGGER_BYTES, 2 * o.blockSize);
    this.maxStreams = Math.max(1, o.streams ?? 4);
  }

  /**
   * Records a read of `length` bytes at `offset` of a file of `size` bytes and returns the
   * range to fetch ahead of it, if any (clipped to the file).
   */
  onRead(offset: number, length: number, size: number): AheadRange | undefined {
    const end = offset + length;
    const s = this.find(offset);
    this.clock++;
    if (!s) {
      this.add({ end, run: length, window: 0, aheadEnd: end, lastUse: this.clock });
      return undefined;
    }
    s.lastUse = this.clock;
    s.run += Math.max(0, end - s.end);
    s.end = Math.max(s.end, end);
    if (s.run < this.trigger) return undefined;
    if (s.window === 0) s.window = this.initial;
    // Ask again (for a window twice as large) only once the reader has eaten into half of
    // what was asked for last time.
    else if (s.aheadEnd - s.end > s.window / 2) return undefined;
    else s.window = Math.min(s.window * 2, this.o.maxWindow);
    const start = Math.max(s.aheadEnd, s.end);
    const stop = Math.min(s.end + s.window, size);
    if (stop <= start) return undefined;
    s.aheadEnd = stop;
    return { start, end: stop };
  }

  /** Forgets every stream (the file's content changed under them, e.g. a truncate). */
  reset(): void {
    this.streams.length = 0;
  }

  /** The current window of the stream ending at `end` (tests, status). */
  windowAt(end: number): number {
    return this.streams.find((s) => s.end === end)?.window ?? 0;
  }

  /** The stream this read continues: it starts at most one block before a stream's end. */
  private find(offset: number): Stream | undefined {
    let best: Stream | undefined;
    for (const s of this.streams) {
      if (offset > s.end || offset < s.end - this.o.blockSize) continue;
      if (!best || s.lastUse > best.lastUse) best = s;
    }
    return best;
  }

  private add(s: Stream): void {
    if (this.streams.length >= this.maxStreams) {
      let lru = 0;
      for (let i = 1; i < this.streams.length; i++)
        if (this.streams[i]!.lastUse < this.streams[lru]!.lastUse) lru = i;
      this.streams.splice(lru, 1);
    }
    this.streams.push(s);
  }
}
