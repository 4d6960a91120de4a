/**
 * The local copy of one migrated file: a sparse data file plus a block-state file.
 *
 * The state file (state-file.ts) holds the size and one byte per block. Durability order: a
 * state byte reaches the state file only after an fdatasync of the data file that followed
 * the block's data write ("group commit"), so after any crash no block is recorded present or
 * dirty without its bytes. `fsync()` additionally fdatasyncs
 * the state file, so every fsync'd write and the size survive a crash.
 *
 * In memory, a block's state changes at once; callers (the fetch scheduler) make sure a block
 * is not read while its data write is still in flight. States not committed yet are also
 * logged for a restarted server process of the same boot (unsynced.ts).
 */
import type { FileHandle } from "node:fs/promises";
import { errorMessage, UserError } from "../common/errors.js";
import { openPrivate } from "../common/private-files.js";
import type { CacheSpace } from "./space.js";
import {
  ABSENT,
  type BlockState,
  blockCount,
  DIRTY,
  HEADER,
  loadStateFile,
  PRESENT,
  writeAll,
} from "./state-file.js";
import { type Replay, Unsynced } from "./unsynced.js";

export {
  ABSENT,
  type BlockState,
  blockCount,
  DIRTY,
  PRESENT,
  parseBlockStates,
} from "./state-file.js";

const COMMIT_DELAY_MS = 500;

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_v, k) => from + k);
}

export class BlockFile {
  private states: Uint8Array;
  private pending = new Map<number, BlockState>();
  private sizeDirty = false;
  private chain: Promise<void> = Promise.resolve();
  private commitTimer?: NodeJS.Timeout;
  private counts = [0, 0, 0];
  private unsynced?: Unsynced;

  private constructor(
    readonly dataPath: string,
    private readonly data: FileHandle,
    private readonly state: FileHandle,
    readonly blockSize: number,
    private _size: number,
    states: Uint8Array,
    /** Told of writes that failed for lack of space, and of those that needed space. */
    private readonly space?: CacheSpace,
  ) {
    this.states = states;
    for (const s of states) this.counts[s]!++;
  }

  /**
   * Opens (creating if needed) the data file and state file. A new file starts with `size`
   * bytes, all blocks absent; an existing one resumes with its recorded size and states.
   */
  static async open(
    dataPath: string,
    statePath: string,
    blockSize: number,
    size: number,
    space?: CacheSpace,
  ) {
    let data: FileHandle | undefined;
    let state: FileHandle | undefined;
    try {
      // Created O_EXCL|O_NOFOLLOW, or reused only if ours and private (see private-files.ts).
      data = await openPrivate(dataPath);
      state = await openPrivate(statePath);
      const loaded = await loadStateFile(state, statePath, size, blockSize);
      if (loaded.created) await data.truncate(size);
      const { size: recorded, states } = loaded;
      return await new BlockFile(
        dataPath,
        data,
        state,
        blockSize,
        recorded,
        states,
        space,
      ).logUnsynced(`${statePath}.unsynced`);
    } catch (err) {
      space?.writeFailed(err);
      await data?.close().catch(() => {});
      await state?.close().catch(() => {});
      if (err instanceof UserError) throw err;
      throw new UserError(`store: cannot open ${dataPath}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Applies what a killed predecessor left uncommitted (same boot), commits it, logs on. A
   * commit that finds no room (a full disk) is retried later; the log keeps the records.
   */
  private async logUnsynced(path: string): Promise<BlockFile> {
    const { log, replay } = Unsynced.open(path);
    if (replay) this.replay(replay);
    this.unsynced = log;
    if (replay) await this.fsync().catch(() => {});
    return this;
  }

  private replay(r: Replay) {
    if (r.size !== undefined && r.size !== this._size) this.resize(r.size);
    for (const [i, state] of r.states) if (i < this.states.length) this.set(i, state as BlockState);
  }

  get size(): number {
    return this._size;
  }
  get blocks(): number {
    return this.states.length;
  }
  stateOf(index: number): BlockState {
    return this.states[index] as BlockState;
  }
  count(state: BlockState): number {
    return this.counts[state]!;
  }
  /** Bytes of blocks in `state`, the last block counted only up to the file size. */
  bytesIn(state: BlockState): number {
    let n = this.counts[state]! * this.blockSize;
    const last = this.states.length - 1;
    if (last >= 0 && this.states[last] === state)
      n -= last * this.blockSize + this.blockSize - this._size;
    return n;
  }

  private set(index: number, state: BlockState) {
    const old = this.states[index]!;
    if (old === state) return;
    this.counts[old]!--;
    this.counts[state]!++;
    this.states[index] = state;
    this.pending.set(index, state);
  }

  /**
   * Stores bytes fetched from the origin for blocks `first`, `first + 1`, ... (`bytes` starts
   * at block `first`). Only blocks still absent are written; each contiguous run of them is
   * one positional write.
   */
  async fill(first: number, bytes: Buffer): Promise<void> {
    const bs = this.blockSize;
    const count = Math.ceil(bytes.length / bs);
    const writes: Promise<unknown>[] = [];
    const claimed: number[] = [];
    for (let k = 0; k < count; ) {
      if (this.states[first + k] !== ABSENT) {
        k++;
        continue;
      }
      let j = k;
      while (j < count && this.states[first + j] === ABSENT) {
        this.set(first + j, PRESENT);
        this.pending.delete(first + j); // persisted only once the data write is synced
        claimed.push(first + j);
        j++;
      }
      writes.push(writeAll(this.data, bytes.subarray(k * bs, j * bs), (first + k) * bs));
      k = j;
    }
    const results = await Promise.allSettled(writes);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      // Nothing of this fill may be served: its bytes may be missing or partial.
      for (const i of claimed) if (this.states[i] === PRESENT) this.setAbsent(i);
      this.space?.writeFailed(failed.reason);
      throw failed.reason;
    }
    if (writes.length > 0) this.space?.wrote();
    const present = claimed.filter((i) => this.states[i] === PRESENT);
    for (const i of present) this.pending.set(i, PRESENT);
    // Not logged (no space for the log): a restarted server fetches these blocks again.
    this.unsynced?.blocks(present, PRESENT);
    this.scheduleCommit();
  }

  /**
   * Like `fill`, for bytes not yet known to be good: they are written to the data file at
   * once, and their blocks recorded present only if `gate` resolves true (else they stay
   * absent, as if never fetched). The caller keeps readers off these blocks until then.
   */
  async fillAfter(first: number, bytes: Buffer, gate: Promise<boolean>): Promise<void> {
    const bs = this.blockSize;
    const count = Math.ceil(bytes.length / bs);
    const runs: [number, number][] = [];
    const writes: Promise<unknown>[] = [];
    for (let k = 0; k < count; ) {
      if (this.states[first + k] !== ABSENT) {
        k++;
        continue;
      }
      let j = k;
      while (j < count && this.states[first + j] === ABSENT) j++;
      runs.push([k, j]);
      writes.push(writeAll(this.data, bytes.subarray(k * bs, j * bs), (first + k) * bs));
      k = j;
    }
    const results = await Promise.allSettled(writes);
    if (!(await gate)) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      this.space?.writeFailed(failed.reason);
      throw failed.reason;
    }
    if (writes.length > 0) this.space?.wrote();
    const present: number[] = [];
    for (const [k, j] of runs) {
      for (let i = first + k; i < first + j; i++) {
        if (this.states[i] !== ABSENT) continue;
        this.set(i, PRESENT);
        this.pending.set(i, PRESENT);
        present.push(i);
      }
    }
    this.unsynced?.blocks(present, PRESENT);
    this.scheduleCommit();
  }

  private setAbsent(index: number) {
    this.set(index, ABSENT);
    this.pending.delete(index); // the state file never recorded it otherwise
  }

  /**
   * Writes in progress: their size and states are already in effect, their bytes not yet in
   * the data file, so a read of their range waits for them (else it would see zeros).
   */
  private readonly writing = new Set<{ from: number; to: number; done: Promise<void> }>();

  /** Writes `bytes` at `offset`, marking every touched block dirty and extending the size. */
  async write(offset: number, bytes: Buffer): Promise<void> {
    const end = offset + bytes.length;
    let finished!: () => void;
    const w = { from: offset, to: end, done: new Promise<void>((r) => (finished = r)) };
    this.writing.add(w);
    try {
      await this.writeNow(offset, end, bytes);
    } finally {
      this.writing.delete(w);
      finished();
    }
  }

  private async writeNow(offset: number, end: number, bytes: Buffer): Promise<void> {
    if (end > this._size) this.resize(end);
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((end - 1) / this.blockSize);
    // A block's new state is recorded only once its bytes are written, but the state an earlier
    // write (or fill) left pending stays pending meanwhile: that write was acknowledged, and a
    // commit now must record it (the log is rewritten with only what is pending).
    const earlier = new Map<number, BlockState>();
    for (let i = first; i <= last; i++) {
      const before = this.pending.get(i);
      if (before !== undefined) earlier.set(i, before);
    }
    for (let i = first; i <= last; i++) this.set(i, DIRTY);
    for (let i = first; i <= last; i++) {
      const before = earlier.get(i);
      if (before === undefined) this.pending.delete(i);
      else this.pending.set(i, before);
    }
    try {
      await writeAll(this.data, bytes, offset);
    } catch (err) {
      this.space?.writeFailed(err);
      throw err;
    }
    this.space?.wrote();
    for (let i = first; i <= last; i++) this.pending.set(i, DIRTY);
    if (this.unsynced) {
      const touched: number[] = [];
      for (let i = first; i <= last; i++) if (this.states[i] === DIRTY) touched.push(i);
      // Written here: if no restart could learn so from the log (no space for it), the
      // state file must say so before the write is acknowledged.
      if (!this.unsynced.blocks(touched, DIRTY) || !this.unsynced.intact) await this.flush();
    }
  }

  /**
   * Sets the size. New blocks beyond the old end are dirty (they read as zeros); the block
   * holding the new end, when shrinking into it, becomes dirty (the caller fetched it first).
   */
  async truncate(size: number): Promise<void> {
    const old = this._size;
    this.resize(size);
    await this.data.truncate(size);
    if (size < old && size % this.blockSize !== 0) {
      this.set(Math.floor(size / this.blockSize), DIRTY);
      this.unsynced?.blocks([Math.floor(size / this.blockSize)], DIRTY);
    }
    if (this.unsynced && !this.unsynced.intact) await this.flush();
  }

  private resize(size: number) {
    const n = blockCount(size, this.blockSize);
    const oldN = this.states.length;
    if (n !== oldN) {
      for (let i = n; i < oldN; i++) {
        this.counts[this.states[i]!]!--;
        this.pending.delete(i);
      }
      const next = new Uint8Array(n);
      next.set(this.states.subarray(0, Math.min(n, oldN)));
      this.states = next;
      for (let i = oldN; i < n; i++) {
        this.counts[DIRTY]!++;
        next[i] = DIRTY;
        this.pending.set(i, DIRTY);
      }
    }
    // New blocks read as zeros whatever the data file holds: safe to log before any write.
    this.unsynced?.size(size);
    if (n > oldN) this.unsynced?.blocks(range(oldN, n), DIRTY);
    // The block that held the old end now holds bytes past it: they must read as zeros.
    if (size > this._size && this._size % this.blockSize !== 0) {
      const i = Math.floor(this._size / this.blockSize);
      if (this.states[i] !== ABSENT) {
        this.set(i, DIRTY);
        this.unsynced?.blocks([i], DIRTY);
      }
    }
    this._size = size;
    this.sizeDirty = true;
  }

  /**
   * The data file was changed directly (a kernel passthrough open wrote to it): take `size`
   * as the file's size and, when `written`, count every block as written here (which blocks
   * changed is not known). Persisted with the next commit.
   */
  adopt(size: number, written: boolean): void {
    if (size !== this._size) this.resize(size);
    if (written) for (let i = 0; i < this.states.length; i++) this.set(i, DIRTY);
    this.scheduleCommit();
  }

  /** Reads local bytes (the caller ensured none of them is absent). */
  async read(offset: number, length: number): Promise<Buffer> {
    const overlapping = [...this.writing].filter((w) => w.from < offset + length && w.to > offset);
    if (overlapping.length > 0) await Promise.all(overlapping.map((w) => w.done));
    const len = Math.max(0, Math.min(length, this._size - offset));
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.data.read(buf, got, len - got, offset + got);
      if (bytesRead === 0) {
        buf.fill(0, got);
        break;
      }
      got += bytesRead;
    }
    return buf;
  }

  /**
   * Fetched blocks are recorded in batches: at most one data sync per COMMIT_DELAY_MS. A crash
   * in between costs only re-fetching those blocks, never a wrong byte.
   */
  private scheduleCommit() {
    if (this.commitTimer) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      this.flush().catch(() => {});
    }, COMMIT_DELAY_MS);
    this.commitTimer.unref();
  }

  private async commitNow(syncState: boolean): Promise<void> {
    if (this.pending.size === 0 && !this.sizeDirty && !syncState) return;
    const batch = this.pending;
    const sizeDirty = this.sizeDirty;
    const size = this._size;
    this.pending = new Map();
    this.sizeDirty = false;
    try {
      await this.commitBatch(batch, sizeDirty, size, syncState);
    } catch (err) {
      // Not recorded: keep it pending (what changed since wins) and try again later.
      for (const [i, st] of batch) if (!this.pending.has(i)) this.pending.set(i, st);
      this.sizeDirty ||= sizeDirty;
      this.space?.writeFailed(err);
      this.scheduleCommit();
      throw err;
    }
    // The state file has the batch now (in the page cache at least): log only what is left.
    this.unsynced?.reset(this.pending, this.sizeDirty ? this._size : undefined);
  }

  private async commitBatch(
    batch: Map<number, BlockState>,
    sizeDirty: boolean,
    size: number,
    syncState: boolean,
  ): Promise<void> {
    await this.data.datasync();
    const writes: Promise<unknown>[] = [];
    if (sizeDirty) {
      const hdr = Buffer.alloc(8);
      hdr.writeDoubleLE(size, 0);
      writes.push(this.state.write(hdr, 0, 8, 8));
      writes.push(this.state.truncate(HEADER + blockCount(size, this.blockSize)));
    }
    // Coalesce consecutive indices into one positional write each.
    const idx = [...batch.keys()].filter((i) => i < this.states.length).sort((a, b) => a - b);
    for (let k = 0; k < idx.length; ) {
      let j = k;
      while (j + 1 < idx.length && idx[j + 1] === idx[j]! + 1) j++;
      const buf = Buffer.from(idx.slice(k, j + 1).map((i) => batch.get(i)!));
      writes.push(this.state.write(buf, 0, buf.length, HEADER + idx[k]!));
      k = j + 1;
    }
    await Promise.all(writes);
    if (syncState) await this.state.datasync();
  }

  /** Makes all written data, block states and the size durable (the file's fsync). */
  fsync(): Promise<void> {
    // After a failed commit too (its batch is pending again).
    this.chain = this.chain.catch(() => {}).then(() => this.commitNow(true));
    return this.chain;
  }

  /** Persists pending state without waiting for the state file to reach disk. */
  flush(): Promise<void> {
    this.chain = this.chain.catch(() => {}).then(() => this.commitNow(false));
    return this.chain;
  }

  async close(): Promise<void> {
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    await this.fsync().catch(() => {});
    if (this.pending.size === 0 && !this.sizeDirty) this.unsynced?.close();
    await this.data.close();
    await this.state.close();
  }
}
