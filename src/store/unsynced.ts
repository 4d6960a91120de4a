/**
 * Block states and sizes a `BlockFile` changed and has not committed to its state file yet,
 * kept for a restart of the server process (a failover), not of the machine.
 *
 * The block file commits states in batches after syncing the data (so that a machine crash
 * never leaves a block recorded without its bytes), and a write nobody fsync'd stays pending
 * until then. When only the server process dies, the data file's bytes are safe in the page
 * cache, but the pending states would be lost: a new server would see a written block as
 * absent (and fetch the origin's bytes over it) or the file at its old size. So every pending
 * change is also appended here at once (no sync), tagged with the kernel's boot id; the next
 * open applies the records if the machine has not rebooted since, and discards them if it has
 * (then the state file alone is the truth, as after any crash).
 *
 * Layout: "LAZYFSU1", the 36-byte boot id, then 9-byte records: kind (0 absent, 1 present,
 * 2 dirty: value = block index; 3 size: value = bytes), float64 LE value.
 *
 * The cache's disk may be full: an append that fails (or is short) is cut off again, so that
 * the log never holds a torn record, and the log is not `intact` until the next `reset`
 * rewrites it; the block file then commits its state file instead before answering a write.
 */
import fs from "node:fs";

const MAGIC = Buffer.from("LAZYFSU1");
const HEADER = 8 + 36;
const RECORD = 9;
const SIZE = 3;

let bootIdCache: string | undefined;

function bootId(): string {
  bootIdCache ??= fs
    .readFileSync("/proc/sys/kernel/random/boot_id", "utf8")
    .trim()
    .padEnd(36)
    .slice(0, 36);
  return bootIdCache;
}

/** What a previous process of this boot left uncommitted. */
export interface Replay {
  size?: number;
  /** Block index -> state, in order (a later record wins). */
  states: Map<number, number>;
}

export class Unsynced {
  /** Bytes of whole records (and header) in the file. */
  private length = 0;
  private lost = false;

  private constructor(
    private fd: number,
    private readonly path: string,
  ) {}

  /** Every change appended since the last `reset` is in the log. */
  get intact(): boolean {
    return this.fd >= 0 && !this.lost;
  }

  /**
   * Opens `path` (created if missing): returns the records a previous process of this boot left
   * (undefined when there are none or they are from before a reboot) and the log, fresh or,
   * with records to replay, going on after them (until the caller's commit `reset`s it).
   */
  static open(path: string): { log: Unsynced; replay?: Replay } {
    let replay: Replay | undefined;
    let whole = 0;
    try {
      const buf = fs.readFileSync(path);
      if (
        buf.length >= HEADER &&
        buf.subarray(0, 8).equals(MAGIC) &&
        buf.toString("latin1", 8, HEADER) === bootId()
      ) {
        const states = new Map<number, number>();
        let size: number | undefined;
        for (let o = HEADER; o + RECORD <= buf.length; o += RECORD) {
          whole = o + RECORD;
          const kind = buf[o]!;
          const value = buf.readDoubleLE(o + 1);
          if (kind === SIZE) size = value;
          else if (kind <= 2 && Number.isSafeInteger(value) && value >= 0) {
            states.delete(value);
            states.set(value, kind);
          }
        }
        if (states.size > 0 || size !== undefined)
          replay = { states, ...(size === undefined ? {} : { size }) };
      }
    } catch {
      // none
    }
    let fd = -1;
    try {
      fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600);
    } catch {
      // No log (no room for its inode): every write is committed before it is answered.
    }
    const log = new Unsynced(fd, path);
    if (replay && fd >= 0) {
      // Kept until they are committed: the disk may have no room for that yet.
      log.length = whole;
      try {
        fs.ftruncateSync(fd, whole);
      } catch {
        log.lost = true;
      }
    } else log.reset(new Map());
    return { log, ...(replay ? { replay } : {}) };
  }

  /** Appends whole records; false (and nothing appended) if they could not all be written. */
  private append(records: Buffer): boolean {
    if (this.fd < 0) return false;
    try {
      const n = fs.writeSync(this.fd, records, 0, records.length, this.length);
      if (n === records.length) {
        this.length += n;
        return true;
      }
    } catch {
      // the disk is full
    }
    try {
      fs.ftruncateSync(this.fd, this.length);
    } catch {
      // a later append writes over it at `length`; replay reads whole records only
    }
    this.lost = true;
    return false;
  }

  /** Blocks `indices` are now in `state` (their bytes, if any, already written). */
  blocks(indices: Iterable<number>, state: number): boolean {
    const list = [...indices];
    if (list.length === 0) return true;
    const b = Buffer.alloc(list.length * RECORD);
    list.forEach((i, k) => {
      b[k * RECORD] = state;
      b.writeDoubleLE(i, k * RECORD + 1);
    });
    return this.append(b);
  }

  size(bytes: number): boolean {
    const b = Buffer.alloc(RECORD);
    b[0] = SIZE;
    b.writeDoubleLE(bytes, 1);
    return this.append(b);
  }

  /** After a commit: only what is still pending is kept. */
  reset(pending: ReadonlyMap<number, number>, size?: number): void {
    if (this.fd < 0) return;
    // The header over the old one, then cut: the first page stays, so this needs no space.
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header, 0);
    header.write(bootId(), 8, "latin1");
    this.length = 0;
    this.lost = false;
    try {
      fs.ftruncateSync(this.fd, HEADER);
      if (fs.writeSync(this.fd, header, 0, HEADER, 0) === HEADER) this.length = HEADER;
    } catch {
      // the disk is full
    }
    if (this.length !== HEADER) {
      this.lost = true;
      return;
    }
    if (size !== undefined) this.size(size);
    const byState = new Map<number, number[]>();
    for (const [i, s] of pending) {
      const l = byState.get(s) ?? [];
      l.push(i);
      byState.set(s, l);
    }
    for (const [s, l] of byState) this.blocks(l, s);
  }

  /** Everything is committed and synced: the log goes. */
  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
    fs.rmSync(this.path, { force: true });
  }
}
