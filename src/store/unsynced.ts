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
  private constructor(
    private fd: number,
    private readonly path: string,
  ) {}

  /**
   * Opens `path` (created if missing): returns the records a previous process of this boot left
   * (undefined when there are none or they are from before a reboot) and a fresh log.
   */
  static open(path: string): { log: Unsynced; replay?: Replay } {
    let replay: Replay | undefined;
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
    const fd = fs.openSync(
      path,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND,
      0o600,
    );
    const log = new Unsynced(fd, path);
    log.reset(new Map());
    return { log, ...(replay ? { replay } : {}) };
  }

  private append(records: Buffer): void {
    if (this.fd < 0) return;
    fs.writeSync(this.fd, records, 0, records.length, null);
  }

  /** Blocks `indices` are now in `state` (their bytes, if any, already written). */
  blocks(indices: Iterable<number>, state: number): void {
    const list = [...indices];
    if (list.length === 0) return;
    const b = Buffer.alloc(list.length * RECORD);
    list.forEach((i, k) => {
      b[k * RECORD] = state;
      b.writeDoubleLE(i, k * RECORD + 1);
    });
    this.append(b);
  }

  size(bytes: number): void {
    const b = Buffer.alloc(RECORD);
    b[0] = SIZE;
    b.writeDoubleLE(bytes, 1);
    this.append(b);
  }

  /** After a commit: only what is still pending is kept. */
  reset(pending: ReadonlyMap<number, number>, size?: number): void {
    if (this.fd < 0) return;
    fs.ftruncateSync(this.fd, 0);
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header, 0);
    header.write(bootId(), 8, "latin1");
    fs.writeSync(this.fd, header, 0, HEADER, 0);
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
