/**
 * The write path, for the engine: writes and truncates of a file kept here fetch first only
 * the absent blocks they cover partially (a block the write covers whole needs nothing from
 * the origin), wait for the blocks in flight they touch, then go to the store; a `remote`
 * file's writes and truncates go to the origin. Kept apart from reads, which fetch every
 * absent block they touch.
 */
import { UserError } from "../common/errors.js";
import { ABSENT } from "../store/blockfile.js";
import type { Accounting, ByteSource } from "./accounting.js";
import type { Sources } from "./source.js";
import { DEMAND, type Entry } from "./types.js";

export interface WriterOptions {
  blockSize: number;
  sources: Sources;
  acct: Accounting;
  ensure(e: Entry, first: number, last: number, prio: number): Promise<void>;
  /** In wholeFile mode, fetches every absent block of the file first. */
  ensureWholeFile(e: Entry): Promise<void>;
  /** After a truncate (the engine may now be independent). */
  truncated(): void;
}

export class Writer {
  constructor(private readonly opts: WriterOptions) {}

  /**
   * Writes `data` at `offset`; fetches first only the absent blocks it covers partially.
   * `info.source` is set to where the bytes went: kept here, or the origin (`remote`).
   */
  async write(
    e: Entry,
    offset: number,
    data: Buffer,
    info?: { source?: ByteSource },
  ): Promise<void> {
    if (offset < 0 || !Number.isSafeInteger(offset + data.length)) {
      throw new UserError(`write ${e.meta.originPath}: bad offset ${offset}`);
    }
    if (!e.blocks) {
      const { source, path } = await this.opts.sources.prepare(e);
      await source.write(path, offset, data);
      this.opts.sources.account(e, source, 0);
      this.opts.acct.written(e.stats, data.length);
      if (info) info.source = "origin";
      e.remoteSize = Math.max(e.remoteSize, offset + data.length);
      return;
    }
    if (data.length === 0) return;
    await this.opts.ensureWholeFile(e);
    const b = e.blocks;
    const bs = this.opts.blockSize;
    const end = offset + data.length;
    for (;;) {
      const waits: Promise<void>[] = [];
      const last = Math.min(Math.floor((end - 1) / bs), b.blocks - 1);
      for (let i = Math.floor(offset / bs); i <= last; i++) {
        const inflight = e.inflight.get(i);
        const partial = offset > i * bs || end < Math.min((i + 1) * bs, b.size);
        if (inflight) waits.push(inflight.promise);
        else if (partial && b.stateOf(i) === ABSENT) waits.push(this.opts.ensure(e, i, i, DEMAND));
      }
      if (waits.length === 0) break;
      await Promise.all(waits);
    }
    await b.write(offset, data);
    this.opts.acct.written(e.stats, data.length);
    if (info) info.source = "local-write";
  }

  /** Sets the size of file `e` (shrinking fetches the block holding the new end first). */
  async truncate(e: Entry, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new UserError(`truncate ${e.meta.originPath}: bad size ${size}`);
    }
    if (!e.blocks) {
      const { source, path } = await this.opts.sources.prepare(e);
      await source.truncate(path, size);
      this.opts.sources.account(e, source, 0);
      e.remoteSize = size;
      return;
    }
    const b = e.blocks;
    const bs = this.opts.blockSize;
    for (;;) {
      const waits: Promise<void>[] = [];
      for (const [i, f] of e.inflight) if (i * bs >= size) waits.push(f.promise.catch(() => {}));
      const edge = Math.floor(size / bs);
      if (size < b.size && size % bs !== 0 && b.stateOf(edge) === ABSENT) {
        waits.push(this.opts.ensure(e, edge, edge, DEMAND));
      }
      if (waits.length === 0) break;
      await Promise.all(waits);
    }
    await b.truncate(size);
    this.opts.truncated();
  }
}
