/**
 * Device readers: worker threads that block in read(2) on /dev/fuse and hand each request to
 * the main thread as a view into a SharedArrayBuffer slot (no copy, no libuv thread pool: a
 * blocked device read never takes a thread that disk I/O needs).
 *
 * Fast path: READ and WRITE on a handle registered in the shared `BackingTable` (the file
 * system mapped it to a backing fd) never reach the main thread: the worker does the pread or
 * pwrite itself and writes the reply, keeping its slot for the next request.
 *
 * Slot protocol (per reader): `state[0]` is a wake-up counter, `state[1 + i]` is 0 when slot i
 * is free and 1 while the worker reads into it or the main thread handles its request.
 */
import { Worker } from "node:worker_threads";

/**
 * Table layout (Int32Array): [0] live entries, [1] fast READs served, [2] fast WRITEs served,
 * [3] unused, then `capacity` entries of 5 ints: seq (odd while being rewritten), kind
 * (0 never used, 1 live, 2 deleted), fh low 32 bits, fh high bits, backing fd. Open
 * addressing with linear probing; the main thread is the only writer.
 */
const HEAD = 4;
const ENTRY = 5;

/** fh -> backing fd, shared with the reader workers. */
export class BackingTable {
  readonly sab: SharedArrayBuffer;
  readonly capacity: number;
  private readonly t: Int32Array;
  /** fh -> [entry index, registrations]. */
  private readonly where = new Map<number, [number, number]>();

  constructor(capacity: number) {
    let cap = 16;
    while (cap < capacity) cap *= 2;
    this.capacity = cap;
    this.sab = new SharedArrayBuffer(4 * (HEAD + ENTRY * cap));
    this.t = new Int32Array(this.sab);
  }

  private static split(fh: number): [number, number] {
    return [fh | 0, Math.floor(fh / 0x100000000) | 0];
  }

  private static hash(lo: number, hi: number, mask: number): number {
    return (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 16) & mask;
  }

  private write(i: number, kind: number, lo: number, hi: number, fd: number): void {
    const b = HEAD + i * ENTRY;
    Atomics.add(this.t, b, 1);
    Atomics.store(this.t, b + 1, kind);
    Atomics.store(this.t, b + 2, lo);
    Atomics.store(this.t, b + 3, hi);
    Atomics.store(this.t, b + 4, fd);
    Atomics.add(this.t, b, 1);
  }

  /** Registers `fh` (a non-negative safe integer); false if the table is full. */
  add(fh: number, fd: number): boolean {
    const known = this.where.get(fh);
    const [lo, hi] = BackingTable.split(fh);
    if (known) {
      known[1]++;
      this.write(known[0], 1, lo, hi, fd);
      return true;
    }
    const mask = this.capacity - 1;
    let i = BackingTable.hash(lo, hi, mask);
    for (let n = 0; n < this.capacity; n++, i = (i + 1) & mask) {
      if (Atomics.load(this.t, HEAD + i * ENTRY + 1) === 1) continue;
      this.write(i, 1, lo, hi, fd);
      this.where.set(fh, [i, 1]);
      Atomics.add(this.t, 0, 1);
      return true;
    }
    return false;
  }

  /** Drops one registration of `fh`; the entry goes when the last one does. */
  remove(fh: number): void {
    const known = this.where.get(fh);
    if (!known || --known[1] > 0) return;
    this.where.delete(fh);
    const [lo, hi] = BackingTable.split(fh);
    this.write(known[0], 2, lo, hi, -1);
    Atomics.sub(this.t, 0, 1);
  }

  get fastReads(): number {
    return Atomics.load(this.t, 1);
  }

  get fastWrites(): number {
    return Atomics.load(this.t, 2);
  }
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const { fd, sab, stateSab, slots, slotSize, tableSab, capacity, writeBehind } = workerData;
const unflushed = new Map();
const state = new Int32Array(stateSab);
const table = new Int32Array(tableSab);
const mask = capacity - 1;
const views = [];
for (let i = 0; i < slots; i++) views.push(Buffer.from(sab, i * slotSize, slotSize));
const out = Buffer.allocUnsafeSlow(slotSize);
function claim() {
  for (;;) {
    const gen = Atomics.load(state, 0);
    for (let i = 0; i < slots; i++) if (Atomics.compareExchange(state, 1 + i, 0, 1) === 0) return i;
    Atomics.wait(state, 0, gen);
  }
}
function backing(lo, hi) {
  if (Atomics.load(table, 0) === 0) return -1;
  let i = (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 16) & mask;
  for (let n = 0; n < capacity; n++, i = (i + 1) & mask) {
    const b = ${HEAD} + i * ${ENTRY};
    for (;;) {
      const seq = Atomics.load(table, b);
      if (seq & 1) continue;
      const kind = Atomics.load(table, b + 1);
      const elo = Atomics.load(table, b + 2);
      const ehi = Atomics.load(table, b + 3);
      const efd = Atomics.load(table, b + 4);
      if (Atomics.load(table, b) !== seq) continue;
      if (kind === 0) return -1;
      if (kind === 1 && elo === lo && ehi === hi) return efd;
      break;
    }
  }
  return -1;
}
function u64(b, off) {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 0x100000000;
}
function reply(req, len, error) {
  out.writeUInt32LE(len, 0);
  out.writeInt32LE(error, 4);
  req.copy(out, 8, 8, 16);
  try {
    fs.writeSync(fd, out, 0, len);
  } catch (e) {
    // ENOENT: the kernel no longer waits for this request; anything else ends the session.
  }
  return true;
}
function errno(e) {
  const n = e && e.errno;
  return typeof n === "number" && n !== 0 ? -Math.abs(n) : -5;
}
// pread/pwrite of \`len\` bytes (fewer at EOF); -errno if nothing was transferred.
function io(sync, bfd, buf, off, len, pos) {
  let done = 0;
  try {
    while (done < len) {
      const k = sync(bfd, buf, off + done, len - done, pos + done);
      if (k === 0) break;
      done += k;
    }
  } catch (e) {
    if (done === 0) return errno(e);
  }
  return done;
}
// Serves READ (15) / WRITE (16) on a registered handle; false to pass the request on.
function fast(req, n) {
  const op = req.readUInt32LE(4);
  if ((op !== 15 && op !== 16) || n < 80 || req.readUInt16LE(36) !== 0) return false;
  const bfd = backing(req.readInt32LE(40), req.readInt32LE(44));
  if (bfd < 0) return false;
  const pos = u64(req, 48);
  const size = req.readUInt32LE(56);
  if (op === 16 && 80 + size > n) return false;
  const k =
    op === 15
      ? io(fs.readSync, bfd, out, 16, Math.min(size, slotSize - 16), pos)
      : io(fs.writeSync, bfd, req, 80, size, pos);
  if (k < 0) return reply(req, 16, k);
  Atomics.add(table, op === 15 ? 1 : 2, 1);
  if (op === 15) return reply(req, 16 + k, 0);
  out.writeUInt32LE(k, 16);
  out.writeUInt32LE(0, 20);
  reply(req, 24, 0);
  if (writeBehind > 0) {
    const w = (unflushed.get(bfd) || 0) + k;
    unflushed.set(bfd, w >= writeBehind ? 0 : w);
    if (w >= writeBehind) parentPort.postMessage({ flush: bfd });
  }
  return true;
}
let slot = -1;
for (;;) {
  if (slot < 0) slot = claim();
  let n;
  for (;;) {
    try {
      n = fs.readSync(fd, views[slot], 0, slotSize, null);
      break;
    } catch (e) {
      const code = e && e.code;
      if (code === "ENOENT" || code === "EINTR" || code === "EAGAIN") continue;
      parentPort.postMessage({ end: code === "ENODEV" ? null : String(code || e) });
      process.exit(0);
    }
  }
  if (fast(views[slot], n)) continue;
  parentPort.postMessage({ slot, len: n });
  slot = -1;
}
`;

export interface ReaderMessage {
  /** A backing fd that had `writeBehind` bytes written since its last flush message. */
  flush?: number;
  slot?: number;
  len?: number;
  end?: string | null;
}

export class DeviceReader {
  private readonly worker: Worker;
  private readonly state: Int32Array;
  readonly views: Buffer[] = [];
  readonly exited: Promise<void>;

  constructor(
    fd: number,
    slots: number,
    slotSize: number,
    table: BackingTable,
    writeBehind: number,
    onMessage: (r: DeviceReader, m: ReaderMessage) => void,
  ) {
    const sab = new SharedArrayBuffer(slots * slotSize);
    const stateSab = new SharedArrayBuffer(4 * (slots + 1));
    this.state = new Int32Array(stateSab);
    for (let i = 0; i < slots; i++) this.views.push(Buffer.from(sab, i * slotSize, slotSize));
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        fd,
        sab,
        stateSab,
        slots,
        slotSize,
        tableSab: table.sab,
        capacity: table.capacity,
        writeBehind,
      },
      stdout: false,
      stderr: false,
    });
    this.worker.on("message", (m: ReaderMessage) => onMessage(this, m));
    this.exited = new Promise((resolve) => {
      this.worker.once("exit", () => resolve());
      this.worker.once("error", () => resolve());
    });
  }

  /** Gives a slot back to the worker. */
  release(slot: number): void {
    Atomics.store(this.state, 1 + slot, 0);
    Atomics.add(this.state, 0, 1);
    Atomics.notify(this.state, 0);
  }

  /** Stops the worker (it may be blocked in read(2); terminate() still ends the thread). */
  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
