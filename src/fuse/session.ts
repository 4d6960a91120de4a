/**
 * The raw layer: reads requests from /dev/fuse, dispatches each opcode to one handler that
 * calls the `FileSystem`, and writes exactly one reply per request (none for FORGET,
 * BATCH_FORGET and INTERRUPT, as the protocol says). Also sends notifications.
 */
import fs from "node:fs";
import { errnoCode, errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import {
  type DirEntry,
  direntType,
  type Entry,
  errnoOf,
  type FileSystem,
  type OpenReply,
} from "./filesystem.js";
import { HANDLERS } from "./handlers.js";
import { KernelPassthrough, type PassthroughStatus } from "./kernel-passthrough.js";
import {
  decodeInHeader,
  decodeInitIn,
  direntSize,
  ENTRY_OUT_SIZE,
  encodeAttrOut,
  encodeDirent,
  encodeEntryOut,
  encodeInitOut,
  encodeOutHeader,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  IN_HEADER_SIZE,
  Init,
  notifyInvalEntry,
  notifyInvalInode,
  notifyResend,
  notifyStore,
  OP_NAMES,
  Op,
  OUT_HEADER_SIZE,
} from "./protocol.js";
import { BackingTable, DeviceReader, type ReaderMessage } from "./reader.js";
import { enosys, type HandlerSession, need, type Payload, type Request, u64 } from "./request.js";
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

export interface SessionOptions {
  /** Largest WRITE (and READ) request, bytes; default 1 MiB (max_pages 256). */
  maxWrite?: number;
  /** Worker threads blocked in read(2) on the device; default 2. */
  readers?: number;
  /** Requests each reader can have in flight; default 16. */
  slotsPerReader?: number;
  /** Let the kernel cache writes and send them in big batches; default false. */
  writebackCache?: boolean;
  /** Answer READDIRPLUS (readdir + lookup per entry); default true. */
  readdirplus?: boolean;
  /** Kernel invalidates cached data when it sees mtime/size change; default false. */
  autoInvalData?: boolean;
  /** Default entry/attr cache timeouts, ms; default 1000. */
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
  /** Max background (readahead/writeback) requests the kernel queues; default 64. */
  maxBackground?: number;
  /**
   * Open handles with a `backingFd` that the reader threads serve directly; default 4096.
   * Handles beyond that are still served from their backing fd, by the main thread.
   */
  backingHandles?: number;
  /**
   * Write-behind for backing fds: after this many bytes written through the fast path to one
   * backing fd, start flushing it to disk (fdatasync in the libuv pool, one at a time per fd)
   * while writing goes on, so that a later fsync has little left to do and dirty data stays
   * bounded. 0 (default) leaves flushing to the kernel and to FSYNC.
   */
  writeBehindBytes?: number;
  /**
   * Kernel passthrough (Linux >= 6.9, CAP_SYS_ADMIN, koffi): opens whose reply sets
   * `passthrough` are served by the kernel from their backing fd. Negotiating it turns the
   * writeback cache off (the kernel allows only one of the two). Default false; the
   * environment variable LAZYFS_FUSE_PASSTHROUGH=0 turns it off whatever the option says.
   */
  passthrough?: boolean;
  /**
   * Where the passthrough table is kept for a server that takes this connection over (a
   * supervised server gets it from its supervisor); none: a restarted server cannot go on
   * with the passthrough opens its predecessor left.
   */
  passthroughStateFile?: string;
  /**
   * Serve a connection whose INIT an earlier server already answered (a server restarted by a
   * supervisor, see supervisor.ts): no INIT is expected, these parameters are in effect, and
   * the kernel is asked to resend every request the earlier server read and did not answer.
   */
  resume?: Negotiated;
}

/** What INIT agreed on a connection: what a server taking it over must keep to. */
export interface Negotiated {
  minor: number;
  /** Flags in effect. */
  flags: bigint;
  /** Flags the kernel offered. */
  kernelFlags: bigint;
  maxWrite: number;
}

export type { PassthroughStatus } from "./kernel-passthrough.js";

/** Requests served by the reader threads from backing fds (`OpenReply.backingFd`). */
export interface FastPathStats {
  reads: number;
  writes: number;
  /** Write-behind flushes started (`writeBehindBytes`). */
  flushes: number;
}

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

export class Session implements HandlerSession {
  readonly fd: number;
  readonly fs: FileSystem;
  readonly maxWrite: number;
  /** Minor protocol version agreed at INIT (0 before). */
  minor = 0;
  /** Flags in effect after INIT. */
  flags = 0n;
  /** Resolves once INIT was answered; rejects if the session ends first. */
  readonly ready: Promise<void>;
  /** Resolves when the kernel side went away (unmount/abort) and every reply was written. */
  readonly closed: Promise<void>;

  private readonly opts: Required<Omit<SessionOptions, "resume" | "passthroughStateFile">>;
  private kernelFlags = 0n;
  private readonly readers: DeviceReader[] = [];
  private readonly inflight = new Map<bigint, Request>();
  private readonly pool: Buffer[] = [];
  private readonly table: BackingTable;
  /** Backing fds of handles the table had no room for (served by the main thread). */
  private readonly overflow = new Map<number, number>();
  private flushes = 0;
  private readonly kpt: KernelPassthrough;
  /** Requests dispatched on the main thread, per opcode. */
  private readonly counts = new Map<number, number>();
  private readyResolve!: () => void;
  private readyReject!: (e: Error) => void;
  private destroyed = false;
  private fatal: string | undefined;

  constructor(fd: number, fileSystem: FileSystem, options: SessionOptions = {}) {
    this.fd = fd;
    this.fs = fileSystem;
    this.opts = {
      maxWrite: 1 << 20,
      readers: 2,
      slotsPerReader: 16,
      writebackCache: false,
      readdirplus: true,
      autoInvalData: false,
      entryTimeoutMs: 1000,
      attrTimeoutMs: 1000,
      maxBackground: 64,
      backingHandles: 4096,
      writeBehindBytes: 0,
      passthrough: false,
      ...options,
    };
    this.kpt = new KernelPassthrough(fd, options.passthroughStateFile);
    this.maxWrite =
      options.resume?.maxWrite ?? Math.min(Math.max(this.opts.maxWrite, 4096), 256 * 4096);
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {});
    const slotSize = this.maxWrite + 4096;
    this.table = new BackingTable(this.opts.backingHandles);
    for (let i = 0; i < this.opts.readers; i++) {
      this.readers.push(
        new DeviceReader(
          fd,
          this.opts.slotsPerReader,
          slotSize,
          this.table,
          this.opts.writeBehindBytes,
          (r, m) => this.onMessage(r, m),
        ),
      );
    }
    this.closed = Promise.all(this.readers.map((r) => r.exited)).then(() => this.finish());
    if (options.resume) void this.resumeFrom(options.resume);
  }

  /** What INIT agreed (valid once `ready`), for a server that takes this connection over. */
  get negotiated(): Negotiated {
    return {
      minor: this.minor,
      flags: this.flags,
      kernelFlags: this.kernelFlags,
      maxWrite: this.maxWrite,
    };
  }

  /** Takes over an initialised connection (`SessionOptions.resume`). */
  private async resumeFrom(n: Negotiated): Promise<void> {
    this.minor = n.minor;
    this.flags = n.flags;
    this.kernelFlags = n.kernelFlags;
    this.kpt.resume(n.kernelFlags, n.flags);
    try {
      await this.fs.init?.({
        minor: n.minor,
        kernelFlags: n.kernelFlags,
        flags: n.flags,
        maxWrite: this.maxWrite,
        passthrough: this.kpt.status().enabled,
        inheritedPassthrough: this.kpt.passthroughInodes(),
      });
    } catch (e) {
      log.error("init of the file system failed", { error: errorMessage(e) });
    }
    this.readyResolve();
    if (!(n.flags & Init.HAS_RESEND)) {
      log.warn("the kernel cannot resend: requests the previous server held are lost");
      return;
    }
    try {
      await this.resend();
      log.info("resumed the connection; asked the kernel to resend unanswered requests");
    } catch (e) {
      log.error("resend failed", { error: errorMessage(e) });
    }
  }

  private onMessage(reader: DeviceReader, m: ReaderMessage): void {
    if (m.flush !== undefined) {
      this.flushBehind(m.flush);
      return;
    }
    if (m.slot === undefined || m.len === undefined) {
      if (m.end) this.fatal = m.end;
      return;
    }
    const slot = m.slot;
    const buf = reader.views[slot].subarray(0, m.len);
    let done: Promise<void> | undefined;
    try {
      done = this.dispatch(buf);
    } catch (e) {
      log.error("bad request", { error: errorMessage(e) });
    }
    if (done) done.finally(() => reader.release(slot));
    else reader.release(slot);
  }

  /** Backing fds with a write-behind flush under way. */
  private readonly flushing = new Set<number>();

  private flushBehind(fd: number): void {
    if (this.flushing.has(fd)) return;
    this.flushing.add(fd);
    this.flushes++;
    // The handle may be released (its fd closed, even reused) meanwhile: harmless, an error or
    // an early flush of another file.
    fs.fdatasync(fd, () => this.flushing.delete(fd));
  }

  private async finish(): Promise<void> {
    if (this.fatal) log.error("device read failed", { error: this.fatal });
    this.readyReject(new Error("FUSE session ended before INIT"));
    await this.callDestroy();
    for (const r of this.inflight.values()) r.abort.abort();
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }

  private async callDestroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      await this.fs.destroy?.();
    } catch (e) {
      log.error("destroy failed", { error: errorMessage(e) });
    }
  }

  /** How many READ/WRITE requests the reader threads served from backing fds. */
  get fastPath(): FastPathStats {
    return { reads: this.table.fastReads, writes: this.table.fastWrites, flushes: this.flushes };
  }

  /**
   * An OPEN/CREATE reply for inode `ino` is about to go out: returns the backing id when the
   * kernel serves it (passthrough), else registers its backing fd (fast path), if any.
   */
  opened(o: OpenReply, ino: number): number | undefined {
    const fh = o.fh ?? 0;
    const id = this.kpt.opened(ino, fh, o.backingFd, o.passthrough === true);
    if (id !== undefined || o.backingFd === undefined) return id;
    if (!Number.isSafeInteger(fh) || fh < 0 || !this.table.add(fh, o.backingFd))
      this.overflow.set(fh, o.backingFd);
    return undefined;
  }

  /** RELEASE of `fh`: forget its backing fd (or id) before the file system may close it. */
  released(fh: number, ino: number): void {
    this.kpt.released(ino, fh);
    if (!this.overflow.delete(fh)) this.table.remove(fh);
  }

  /** Kernel passthrough: negotiated or why not, opens served by the kernel, fallbacks. */
  get passthrough(): PassthroughStatus {
    return this.kpt.status();
  }

  /**
   * Requests the server has seen, per opcode name (READ and WRITE include those the reader
   * threads served from backing fds); passthrough I/O never shows here.
   */
  requestCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [op, n] of this.counts) out[OP_NAMES[op] ?? String(op)] = n;
    out.READ = (out.READ ?? 0) + this.table.fastReads;
    out.WRITE = (out.WRITE ?? 0) + this.table.fastWrites;
    return out;
  }

  /** The backing fd of a handle the reader threads did not serve (table full), if any. */
  backingOf(fh: number): number | undefined {
    return this.overflow.size ? this.overflow.get(fh) : undefined;
  }

  /** Number of requests received and not yet answered. */
  get pending(): number {
    return this.inflight.size;
  }

  /** Stops the readers without unmounting (tests, or after the mount is gone). */
  async stop(): Promise<void> {
    await Promise.all(this.readers.map((r) => r.stop()));
  }

  private takeBuffer(r: Request, size: number): Buffer {
    if (size > this.maxWrite)
      throw new RangeError(`buffer of ${size} bytes exceeds max_write ${this.maxWrite}`);
    const b = this.pool.pop() ?? Buffer.allocUnsafeSlow(this.maxWrite);
    r.pooled.push(b);
    return b.subarray(0, size);
  }

  private dispatch(buf: Buffer): Promise<void> | undefined {
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
        const payload = handler ? await handler(this, r, this.fs) : enosys();
        this.reply(r, 0, payload);
      } catch (e) {
        // After a failover, a resent request the dead server had already carried out.
        const repaired = isResent(h.unique)
          ? await repairResent(this, r, this.fs, errnoCode(e)).catch(() => undefined)
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

  // ---- notifications (async writes: the kernel may wait on page locks held by requests
  // that the main thread still has to answer) ----

  private async notify(parts: Buffer[]): Promise<boolean> {
    try {
      await new Promise<void>((res, rej) => fs.writev(this.fd, parts, (e) => (e ? rej(e) : res())));
      return true;
    } catch (e) {
      if (errnoCode(e) === "ENOENT") return false;
      throw e;
    }
  }

  /** Drops cached data of `ino` in [offset, offset+length) (length 0 = to the end; offset -1 = attributes only). Resolves false if the kernel does not know the inode. */
  invalInode(ino: number, offset = 0, length = 0): Promise<boolean> {
    return this.notify(notifyInvalInode(ino, offset, length));
  }

  /** Drops the cached name `name` in directory `parent`. */
  invalEntry(parent: number, name: string): Promise<boolean> {
    return this.notify(notifyInvalEntry(parent, name));
  }

  /** Pushes `data` into the kernel page cache of `ino` at `offset`. */
  store(ino: number, offset: number, data: Buffer): Promise<boolean> {
    return this.notify(notifyStore(ino, offset, data));
  }

  /** Asks the kernel to send again every request it sent and has no reply for. */
  resend(): Promise<boolean> {
    return this.notify(notifyResend());
  }

  // ---- used by handlers ----

  entryOut(e: Entry): Buffer {
    const b = Buffer.alloc(ENTRY_OUT_SIZE);
    encodeEntryOut(b, 0, {
      ...e,
      entryTimeoutMs: e.entryTimeoutMs ?? this.opts.entryTimeoutMs,
      attrTimeoutMs: e.attrTimeoutMs ?? this.opts.attrTimeoutMs,
    });
    return b;
  }

  attrOut(reply: { attr: Entry["attr"]; attrTimeoutMs?: number }): Buffer {
    const b = Buffer.alloc(16 + 88);
    encodeAttrOut(b, 0, reply.attr, reply.attrTimeoutMs ?? this.opts.attrTimeoutMs);
    return b;
  }

  async init(r: Request): Promise<Payload> {
    const init = decodeInitIn(r.body, 0, r.body.length);
    if (init.major < FUSE_KERNEL_VERSION)
      throw Object.assign(new Error("old kernel"), { code: "EPROTO" });
    if (init.major > FUSE_KERNEL_VERSION) {
      // The kernel will re-send INIT with our major.
      return [
        encodeInitOut({
          ...zeroInit(),
          major: FUSE_KERNEL_VERSION,
          minor: FUSE_KERNEL_MINOR_VERSION,
        }),
      ];
    }
    const o = this.opts;
    let want =
      Init.ASYNC_READ |
      Init.BIG_WRITES |
      Init.ATOMIC_O_TRUNC |
      Init.MAX_PAGES |
      Init.PARALLEL_DIROPS |
      Init.ASYNC_DIO |
      Init.CACHE_SYMLINKS |
      Init.HAS_EXPIRE_ONLY |
      Init.HAS_RESEND |
      Init.INIT_EXT;
    if (o.writebackCache) want |= Init.WRITEBACK_CACHE;
    if (o.readdirplus) want |= Init.DO_READDIRPLUS | Init.READDIRPLUS_AUTO;
    if (o.autoInvalData) want |= Init.AUTO_INVAL_DATA;
    const kernelFlags =
      init.minor >= 36 && init.flags & Init.INIT_EXT ? init.flags : init.flags & 0xffffffffn;
    const off = !o.passthrough
      ? "session option passthrough is off"
      : process.env.LAZYFS_FUSE_PASSTHROUGH === "0"
        ? "LAZYFS_FUSE_PASSTHROUGH=0"
        : undefined;
    if (this.kpt.negotiate(kernelFlags, off))
      want = (want | Init.PASSTHROUGH) & ~Init.WRITEBACK_CACHE;
    this.flags = want & kernelFlags;
    this.kernelFlags = kernelFlags;
    this.minor = Math.min(init.minor, FUSE_KERNEL_MINOR_VERSION);
    await this.fs.init?.({
      minor: this.minor,
      kernelFlags,
      flags: this.flags,
      maxWrite: this.maxWrite,
      passthrough: (this.flags & Init.PASSTHROUGH) !== 0n,
    });
    const out = encodeInitOut({
      major: FUSE_KERNEL_VERSION,
      minor: this.minor,
      maxReadahead: init.maxReadahead,
      flags: this.flags,
      maxBackground: o.maxBackground,
      congestionThreshold: Math.floor((o.maxBackground * 3) / 4),
      maxWrite: this.maxWrite,
      timeGran: 1,
      maxPages: this.maxWrite / 4096,
      // Backing files on a plain (not stacked) file system.
      maxStackDepth: this.flags & Init.PASSTHROUGH ? 1 : 0,
    });
    log.info("init", {
      minor: this.minor,
      flags: `0x${this.flags.toString(16)}`,
      maxWrite: this.maxWrite,
      passthrough: this.kpt.status().enabled ? "on" : this.kpt.status().reason,
    });
    queueMicrotask(() => this.readyResolve());
    return [out];
  }

  async destroy(): Promise<Payload> {
    await this.callDestroy();
    return [];
  }

  async readdir(r: Request, plus: boolean): Promise<Payload> {
    const ino = r.h.nodeid;
    const fh = u64(r.body, 0);
    const offset = u64(r.body, 8);
    const size = r.body.readUInt32LE(16);
    const entries: DirEntry[] = await need(this.fs, "readdir")(ino, fh, offset, r.ctx);
    const out = Buffer.alloc(size);
    let used = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const name = Buffer.from(e.name);
      const need = direntSize(name.length) + (plus ? ENTRY_OUT_SIZE : 0);
      if (used + need > size) break;
      if (plus) {
        let entry: Buffer | undefined;
        if (e.name !== "." && e.name !== ".." && this.fs.lookup) {
          try {
            entry = this.entryOut(await this.fs.lookup(ino, e.name, r.ctx));
          } catch {
            entry = undefined;
          }
        }
        if (entry) entry.copy(out, used);
        else out.fill(0, used, used + ENTRY_OUT_SIZE);
        used += ENTRY_OUT_SIZE;
      }
      used += encodeDirent(out, used, e.ino, offset + i + 1, direntType(e.mode), name);
    }
    return [out.subarray(0, used)];
  }
}

function zeroInit() {
  return {
    major: 0,
    minor: 0,
    maxReadahead: 0,
    flags: 0n,
    maxBackground: 0,
    congestionThreshold: 0,
    maxWrite: 0,
    timeGran: 0,
    maxPages: 0,
  };
}
