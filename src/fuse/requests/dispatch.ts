/**
 * Requests, from their bytes to their one reply: decodes each request the device readers hand
 * over, dispatches its opcode to one handler (handlers.ts) that calls the `FileSystem`, and
 * writes exactly one reply per request (none for FORGET, BATCH_FORGET and INTERRUPT, as the
 * protocol says). A thrown error becomes an errno; an interrupt fires the handler's signal.
 * Keeps the requests in flight, the pool of reply buffers and the count per opcode.
 */
import fs from "node:fs";
import { errnoCode, errorMessage } from "../../common/errors.js";
import { logger } from "../../common/log.js";
import { errnoOf, type FileSystem } from "../filesystem.js";
import {
  decodeInHeader,
  encodeOutHeader,
  IN_HEADER_SIZE,
  OP_NAMES,
  Op,
  OUT_HEADER_SIZE,
} from "../protocol.js";
import { HANDLERS } from "./handlers.js";
import { enosys, type HandlerSession, type Payload, type Request, u64 } from "./request.js";
import { isResent, repairResent } from "./resend.js";

const log = logger("fuse");

/** Requests that change nothing (answered EINTR as soon as the kernel interrupts them). */
const WITHOUT_EFFECT = new Set<number>([
  Op.READ,
  Op.GETATTR,
  Op.READLINK,
  Op.STATFS,
  Op.GETXATTR,
  Op.LISTXATTR,
  Op.ACCESS,
]);

/** The errno for a thrown value; logs anything that is not a plain errno error. */
function errnoFor(err: unknown, op: string): number {
  if (err instanceof DOMException && err.name === "AbortError") return errnoOf("EINTR") ?? 4;
  const code = errnoCode(err);
  const n = code === undefined ? undefined : errnoOf(code);
  if (n !== undefined) return n;
  const num = (err as { errno?: unknown } | null)?.errno;
  if (typeof num === "number" && num !== 0) return Math.abs(num);
  log.error("handler failed", { op, error: errorMessage(err), stack: (err as Error)?.stack });
  return errnoOf("EIO") ?? 5;
}

export class Dispatcher {
  /** Requests dispatched on the main thread, per opcode. */
  readonly counts = new Map<number, number>();
  private readonly inflight = new Map<bigint, Request>();
  private readonly pool: Buffer[] = [];

  /** `session` is what the handlers get; replies go to `fd`. */
  constructor(
    private readonly fd: number,
    private readonly fs: FileSystem,
    private readonly maxWrite: number,
    private readonly session: HandlerSession,
  ) {}

  /** Number of requests received and not yet answered. */
  get pending(): number {
    return this.inflight.size;
  }

  /** The connection ended: fires the signal of every request still in flight. */
  abortAll(): void {
    for (const r of this.inflight.values()) r.abort.abort();
  }

  private takeBuffer(r: Request, size: number): Buffer {
    if (size > this.maxWrite)
      throw new RangeError(`buffer of ${size} bytes exceeds max_write ${this.maxWrite}`);
    const b = this.pool.pop() ?? Buffer.allocUnsafeSlow(this.maxWrite);
    r.pooled.push(b);
    return b.subarray(0, size);
  }

  dispatch(buf: Buffer): Promise<void> | undefined {
    const h = decodeInHeader(buf);
    this.counts.set(h.opcode, (this.counts.get(h.opcode) ?? 0) + 1);
    const body = buf.subarray(IN_HEADER_SIZE + h.totalExtlen * 8, h.len);
    if (h.opcode === Op.FORGET) {
      this.fs.forget?.(h.nodeid, u64(body, 0));
      return undefined;
    }
    if (h.opcode === Op.BATCH_FORGET) {
      const count = body.readUInt32LE(0);
      for (let i = 0; i < count; i++)
        this.fs.forget?.(u64(body, 8 + i * 16), u64(body, 16 + i * 16));
      return undefined;
    }
    if (h.opcode === Op.INTERRUPT) {
      this.interrupt(body.readBigUInt64LE(0));
      return undefined;
    }
    const abort = new AbortController();
    const r: Request = {
      h,
      body,
      abort,
      replied: false,
      pooled: [],
      ctx: {
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
        signal: abort.signal,
        buffer: (size: number) => this.takeBuffer(r, size),
      },
    };
    this.inflight.set(h.unique, r);
    const handler = HANDLERS[h.opcode];
    const op = OP_NAMES[h.opcode] ?? String(h.opcode);
    if (log.enabled("debug")) log.debug("request", { op, unique: String(h.unique), ino: h.nodeid });
    return (async () => {
      try {
        const payload = handler ? await handler(this.session, r, this.fs) : enosys();
        this.reply(r, 0, payload);
      } catch (e) {
        // After a failover, a resent request the dead server had already carried out.
        const repaired = isResent(h.unique)
          ? await repairResent(this.session, r, this.fs, errnoCode(e)).catch(() => undefined)
          : undefined;
        if (repaired) this.reply(r, 0, repaired);
        else this.reply(r, -errnoFor(e, op));
      }
    })();
  }

  /**
   * The kernel interrupted request `unique` (its caller got a signal): the handler's
   * ctx.signal fires. A request that changes nothing is answered EINTR at once, as the caller
   * may simply ask again. Any other is answered by its handler, which may fail with EINTR only
   * if it did nothing: a write reported interrupted after it took effect is written again by
   * the caller (a restarted `write` with O_APPEND appends its data twice).
   */
  private interrupt(unique: bigint): void {
    const r = this.inflight.get(unique);
    if (!r) return;
    r.abort.abort();
    if (WITHOUT_EFFECT.has(r.h.opcode)) this.reply(r, -(errnoOf("EINTR") ?? 4));
  }

  private reply(r: Request, error: number, payload?: Payload): void {
    if (r.replied) return;
    r.replied = true;
    this.inflight.delete(r.h.unique);
    const parts = error === 0 && payload ? payload : [];
    const len = parts.reduce((n, p) => n + p.length, OUT_HEADER_SIZE);
    const hdr = Buffer.allocUnsafe(OUT_HEADER_SIZE);
    encodeOutHeader(hdr, len, error, r.h.unique);
    try {
      fs.writevSync(this.fd, [hdr, ...parts]);
    } catch (e) {
      // ENOENT: the kernel no longer waits for this request (interrupted, resent, aborted).
      const code = errnoCode(e);
      if (code !== "ENOENT" && code !== "ENODEV" && code !== "EBADF")
        log.error("reply failed", { op: OP_NAMES[r.h.opcode], error: errorMessage(e) });
    }
    for (const b of r.pooled) this.pool.push(b);
    r.pooled.length = 0;
  }
}
