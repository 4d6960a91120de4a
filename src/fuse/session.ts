/**
 * The raw layer's connection: device reader threads (reader.ts) read requests from /dev/fuse
 * and the dispatcher (requests/dispatch.ts) answers each with exactly one reply from its
 * handler. The session answers INIT (init.ts) or takes over a connection an earlier server
 * initialised, keeps the backing fds of open handles (reader fast path, kernel passthrough),
 * and sends notifications.
 */
import fs from "node:fs";
import { errnoCode, errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { Entry, FileSystem, OpenReply } from "./filesystem.js";
import { initOut, negotiate, otherMajorReply } from "./init.js";
import { KernelPassthrough, type PassthroughStatus } from "./kernel-passthrough.js";
import {
  decodeInitIn,
  ENTRY_OUT_SIZE,
  encodeAttrOut,
  encodeEntryOut,
  Init,
  notifyInvalEntry,
  notifyInvalInode,
  notifyResend,
  notifyStore,
  OP_NAMES,
} from "./protocol.js";
import { BackingTable, DeviceReader, type ReaderMessage } from "./reader.js";
import { Dispatcher } from "./requests/dispatch.js";
import type { HandlerSession, Payload, Request } from "./requests/request.js";
import type { Negotiated, SessionOptions } from "./session-options.js";

const log = logger("fuse");

export type { PassthroughStatus } from "./kernel-passthrough.js";

/** Requests served by the reader threads from backing fds (`OpenReply.backingFd`). */
export interface FastPathStats {
  reads: number;
  writes: number;
  /** Write-behind flushes started (`writeBehindBytes`). */
  flushes: number;
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
  private readonly table: BackingTable;
  /** Backing fds of handles the table had no room for (served by the main thread). */
  private readonly overflow = new Map<number, number>();
  private flushes = 0;
  private readonly kpt: KernelPassthrough;
  private readonly requests: Dispatcher;
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
    this.requests = new Dispatcher(fd, fileSystem, this.maxWrite, this);
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
      done = this.requests.dispatch(buf);
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
    this.requests.abortAll();
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
    for (const [op, n] of this.requests.counts) out[OP_NAMES[op] ?? String(op)] = n;
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
    return this.requests.pending;
  }

  /** Stops the readers without unmounting (tests, or after the mount is gone). */
  async stop(): Promise<void> {
    await Promise.all(this.readers.map((r) => r.stop()));
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
    const retry = otherMajorReply(init);
    if (retry) return [retry];
    const agreed = negotiate(init, this.opts, this.kpt);
    this.flags = agreed.flags;
    this.kernelFlags = agreed.kernelFlags;
    this.minor = agreed.minor;
    await this.fs.init?.({
      minor: this.minor,
      kernelFlags: agreed.kernelFlags,
      flags: this.flags,
      maxWrite: this.maxWrite,
      passthrough: (this.flags & Init.PASSTHROUGH) !== 0n,
    });
    const out = initOut(init, this.opts, this.minor, this.flags, this.maxWrite);
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
}
