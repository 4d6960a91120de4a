/**
 * The FUSE kernel protocol (`include/uapi/linux/fuse.h`, major 7, up to minor 45): opcodes,
 * flags, wire struct sizes, and the decoders/encoders for the structs this library uses.
 * Everything here is little-endian and pure (no I/O), so it can be unit-tested alone.
 */

import type { Timespec } from "./time.js";

export const FUSE_KERNEL_VERSION = 7;
/** Highest minor version this library speaks; the kernel's may be lower or higher. */
export const FUSE_KERNEL_MINOR_VERSION = 45;
export const FUSE_ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

export const OP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Op).map(([k, v]) => [v, k]),
);

/** INIT flags (bits 0..31 in `flags`, 32..63 in `flags2`). */
export const Init = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  FLOCK_LOCKS: 1n << 10n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  INIT_EXT: 1n << 30n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  PASSTHROUGH: 1n << 37n,
  NO_EXPORT_SUPPORT: 1n << 38n,
  HAS_RESEND: 1n << 39n,
} as const;

/** Set in `unique` of a request the kernel resent after FUSE_NOTIFY_RESEND. */
export const FUSE_UNIQUE_RESEND = 1n << 63n;

/** FOPEN_* flags in `fuse_open_out.open_flags`. */
export const FOpen = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  /** Served by the kernel from the backing file named by `backing_id` (FUSE_PASSTHROUGH). */
  PASSTHROUGH: 1 << 7,
} as const;

/** FATTR_* bits of `fuse_setattr_in.valid`. */
export const FAttr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

export const Notify = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
  RESEND: 7,
} as const;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;
export const WRITE_IN_SIZE = 40;
export const INIT_OUT_SIZE = 64;
export const STATFS_OUT_SIZE = 80;
export const DIRENT_BASE_SIZE = 24;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  totalExtlen: number;
}

export function decodeInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: Number(b.readBigUInt64LE(16)),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
    totalExtlen: b.readUInt16LE(36),
  };
}

export function encodeOutHeader(b: Buffer, len: number, error: number, unique: bigint): void {
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
}

/** File attributes as the kernel wants them; times to the nanosecond. */
export interface Attr {
  ino: number;
  size: number;
  /** 512-byte blocks; derived from size when omitted. */
  blocks?: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** File type and permission bits (S_IFREG | 0o644, ...). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev?: number;
  blksize?: number;
}

function writeTime(b: Buffer, secOff: number, nsecOff: number, t: Timespec): void {
  b.writeBigInt64LE(BigInt(t.sec), secOff);
  b.writeUInt32LE(t.nsec, nsecOff);
}

export function encodeAttr(b: Buffer, off: number, a: Attr): void {
  b.writeBigUInt64LE(BigInt(a.ino), off);
  b.writeBigUInt64LE(BigInt(a.size), off + 8);
  b.writeBigUInt64LE(BigInt(a.blocks ?? Math.ceil(a.size / 512)), off + 16);
  writeTime(b, off + 24, off + 48, a.atime);
  writeTime(b, off + 32, off + 52, a.mtime);
  writeTime(b, off + 40, off + 56, a.ctime);
  b.writeUInt32LE(a.mode >>> 0, off + 60);
  b.writeUInt32LE(a.nlink, off + 64);
  b.writeUInt32LE(a.uid >>> 0, off + 68);
  b.writeUInt32LE(a.gid >>> 0, off + 72);
  b.writeUInt32LE((a.rdev ?? 0) >>> 0, off + 76);
  b.writeUInt32LE(a.blksize ?? 4096, off + 80);
  b.writeUInt32LE(0, off + 84);
}

function writeValid(b: Buffer, secOff: number, nsecOff: number, ms: number): void {
  const v = Math.max(0, ms);
  const sec = Math.floor(v / 1000);
  b.writeBigUInt64LE(BigInt(sec), secOff);
  b.writeUInt32LE(Math.round((v - sec * 1000) * 1e6), nsecOff);
}

export interface EntryOut {
  ino: number;
  generation?: number;
  attr: Attr;
  entryTimeoutMs: number;
  attrTimeoutMs: number;
}

export function encodeEntryOut(b: Buffer, off: number, e: EntryOut): void {
  b.writeBigUInt64LE(BigInt(e.ino), off);
  b.writeBigUInt64LE(BigInt(e.generation ?? 0), off + 8);
  writeValid(b, off + 16, off + 32, e.entryTimeoutMs);
  writeValid(b, off + 24, off + 36, e.attrTimeoutMs);
  encodeAttr(b, off + 40, e.attr);
}

export function encodeAttrOut(b: Buffer, off: number, attr: Attr, timeoutMs: number): void {
  writeValid(b, off, off + 8, timeoutMs);
  b.writeUInt32LE(0, off + 12);
  encodeAttr(b, off + 16, attr);
}

export function encodeOpenOut(
  b: Buffer,
  off: number,
  fh: number,
  openFlags: number,
  backingId = 0,
): void {
  b.writeBigUInt64LE(BigInt(fh), off);
  b.writeUInt32LE(openFlags, off + 8);
  b.writeInt32LE(backingId, off + 12);
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: bigint;
}

export function decodeInitIn(b: Buffer, off: number, len: number): InitIn {
  const lo = BigInt(b.readUInt32LE(off + 12));
  const hi = len >= 20 ? BigInt(b.readUInt32LE(off + 16)) : 0n;
  return {
    major: b.readUInt32LE(off),
    minor: b.readUInt32LE(off + 4),
    maxReadahead: b.readUInt32LE(off + 8),
    flags: (hi << 32n) | lo,
  };
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: bigint;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  /** With FUSE_PASSTHROUGH: how deep backing files may be stacked (1: on a plain fs). */
  maxStackDepth?: number;
}

export function encodeInitOut(o: InitOut): Buffer {
  const b = Buffer.alloc(INIT_OUT_SIZE);
  b.writeUInt32LE(o.major, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(Number(o.flags & 0xffffffffn), 12);
  b.writeUInt16LE(o.maxBackground, 16);
  b.writeUInt16LE(o.congestionThreshold, 18);
  b.writeUInt32LE(o.maxWrite, 20);
  b.writeUInt32LE(o.timeGran, 24);
  b.writeUInt16LE(o.maxPages, 28);
  b.writeUInt16LE(0, 30);
  b.writeUInt32LE(Number((o.flags >> 32n) & 0xffffffffn), 32);
  b.writeUInt32LE(o.maxStackDepth ?? 0, 36);
  return b;
}

/** Decoded `fuse_setattr_in`: only the fields whose FATTR bit is set are present. */
export interface SetAttrIn {
  fh?: number;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  /** The time to set, or "now" (the server's clock). */
  atime?: Timespec | "now";
  mtime?: Timespec | "now";
  ctime?: Timespec;
}

function readTime(b: Buffer, secOff: number, nsecOff: number): Timespec {
  return { sec: Number(b.readBigInt64LE(secOff)), nsec: b.readUInt32LE(nsecOff) };
}

export function decodeSetAttrIn(b: Buffer, off: number): SetAttrIn {
  const valid = b.readUInt32LE(off);
  const s: SetAttrIn = {};
  if (valid & FAttr.FH) s.fh = Number(b.readBigUInt64LE(off + 8));
  if (valid & FAttr.SIZE) s.size = Number(b.readBigUInt64LE(off + 16));
  if (valid & FAttr.ATIME)
    s.atime = valid & FAttr.ATIME_NOW ? "now" : readTime(b, off + 32, off + 56);
  if (valid & FAttr.MTIME)
    s.mtime = valid & FAttr.MTIME_NOW ? "now" : readTime(b, off + 40, off + 60);
  if (valid & FAttr.CTIME) s.ctime = readTime(b, off + 48, off + 64);
  if (valid & FAttr.MODE) s.mode = b.readUInt32LE(off + 68);
  if (valid & FAttr.UID) s.uid = b.readUInt32LE(off + 76);
  if (valid & FAttr.GID) s.gid = b.readUInt32LE(off + 80);
  return s;
}

export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export function encodeStatFs(s: StatFs): Buffer {
  const b = Buffer.alloc(STATFS_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(s.blocks), 0);
  b.writeBigUInt64LE(BigInt(s.bfree), 8);
  b.writeBigUInt64LE(BigInt(s.bavail), 16);
  b.writeBigUInt64LE(BigInt(s.files), 24);
  b.writeBigUInt64LE(BigInt(s.ffree), 32);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.frsize, 48);
  return b;
}

/** Size of a `fuse_dirent` with this name length, padded to 8 bytes. */
export function direntSize(nameLen: number): number {
  return (DIRENT_BASE_SIZE + nameLen + 7) & ~7;
}

/** Writes one `fuse_dirent` at `off`; returns the bytes used. `b` must have room. */
export function encodeDirent(
  b: Buffer,
  off: number,
  ino: number,
  nextOff: number,
  type: number,
  name: Buffer,
): number {
  const size = direntSize(name.length);
  b.writeBigUInt64LE(BigInt(ino), off);
  b.writeBigUInt64LE(BigInt(nextOff), off + 8);
  b.writeUInt32LE(name.length, off + 16);
  b.writeUInt32LE(type, off + 20);
  name.copy(b, off + DIRENT_BASE_SIZE);
  b.fill(0, off + DIRENT_BASE_SIZE + name.length, off + size);
  return size;
}

/** A NUL-terminated string starting at `off`; returns it and the offset after the NUL. */
export function readCString(b: Buffer, off: number, end: number): [string, number] {
  let nul = b.indexOf(0, off);
  if (nul < 0 || nul > end) nul = end;
  return [b.toString("utf8", off, nul), nul + 1];
}

/** Notification messages (out header with unique 0 and error = code). */
export function encodeNotify(code: number, body: Buffer[]): Buffer[] {
  const len = OUT_HEADER_SIZE + body.reduce((n, p) => n + p.length, 0);
  const h = Buffer.alloc(OUT_HEADER_SIZE);
  encodeOutHeader(h, len, code, 0n);
  return [h, ...body];
}

export function notifyInvalInode(ino: number, offset: number, length: number): Buffer[] {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(BigInt(ino), 0);
  b.writeBigInt64LE(BigInt(offset), 8);
  b.writeBigInt64LE(BigInt(length), 16);
  return encodeNotify(Notify.INVAL_INODE, [b]);
}

export function notifyInvalEntry(parent: number, name: string): Buffer[] {
  const n = Buffer.from(`${name}\0`);
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(parent), 0);
  b.writeUInt32LE(n.length - 1, 8);
  b.writeUInt32LE(0, 12);
  return encodeNotify(Notify.INVAL_ENTRY, [b, n]);
}

export function notifyStore(ino: number, offset: number, data: Buffer): Buffer[] {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(BigInt(ino), 0);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(data.length, 16);
  b.writeUInt32LE(0, 20);
  return encodeNotify(Notify.STORE, [b, data]);
}

export function notifyResend(): Buffer[] {
  return encodeNotify(Notify.RESEND, []);
}
