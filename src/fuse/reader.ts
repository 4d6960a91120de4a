/**
 * Device readers: worker threads that block in read(2) on /dev/fuse and hand each request to
 * the main thread as a view into a SharedArrayBuffer slot (no copy, no libuv thread pool: a
 * blocked device read never takes a thread that disk I/O needs).
 *
 * Slot protocol (per reader): `state[0]` is a wake-up counter, `state[1 + i]` is 0 when slot i
 * is free and 1 while the worker reads into it or the main thread handles its request.
 */
import { Worker } from "node:worker_threads";

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const { fd, sab, stateSab, slots, slotSize } = workerData;
const state = new Int32Array(stateSab);
const views = [];
for (let i = 0; i < slots; i++) views.push(new Uint8Array(sab, i * slotSize, slotSize));
function claim() {
  for (;;) {
    const gen = Atomics.load(state, 0);
    for (let i = 0; i < slots; i++) if (Atomics.compareExchange(state, 1 + i, 0, 1) === 0) return i;
    Atomics.wait(state, 0, gen);
  }
}
for (;;) {
  const slot = claim();
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
  parentPort.postMessage({ slot, len: n });
}
`;

export interface ReaderMessage {
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
    onMessage: (r: DeviceReader, m: ReaderMessage) => void,
  ) {
    const sab = new SharedArrayBuffer(slots * slotSize);
    const stateSab = new SharedArrayBuffer(4 * (slots + 1));
    this.state = new Int32Array(stateSab);
    for (let i = 0; i < slots; i++) this.views.push(Buffer.from(sab, i * slotSize, slotSize));
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { fd, sab, stateSab, slots, slotSize },
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
