/**
 * The INIT handshake, the first request on a connection: the protocol version and features
 * this library asks for, given what the kernel offers and the session's options, and the INIT
 * reply. The session keeps what was agreed (`Negotiated`) and tells the file system.
 */
import type { KernelPassthrough } from "./kernel-passthrough.js";
import {
  encodeInitOut,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  Init,
  type InitIn,
} from "./protocol.js";
import type { SessionOptions } from "./session-options.js";

/** The session options that steer INIT. */
export type InitOptions = Required<
  Pick<
    SessionOptions,
    "writebackCache" | "readdirplus" | "autoInvalData" | "passthrough" | "maxBackground"
  >
>;

/** What INIT agrees: the minor version, the flags in effect, the flags the kernel offered. */
export interface Agreed {
  minor: number;
  flags: bigint;
  kernelFlags: bigint;
}

/**
 * The answer to an INIT of another major version than ours: an error for an older kernel,
 * our version for a newer one; none for our own major.
 */
export function otherMajorReply(init: InitIn): Buffer | undefined {
  if (init.major < FUSE_KERNEL_VERSION)
    throw Object.assign(new Error("old kernel"), { code: "EPROTO" });
  if (init.major > FUSE_KERNEL_VERSION) {
    // The kernel will re-send INIT with our major.
    return encodeInitOut({
      ...zeroInit(),
      major: FUSE_KERNEL_VERSION,
      minor: FUSE_KERNEL_MINOR_VERSION,
    });
  }
  return undefined;
}

/** What to agree to the kernel's INIT `init`; asks kernel passthrough whether it can be had. */
export function negotiate(
  init: InitIn,
  o: InitOptions,
  kpt: Pick<KernelPassthrough, "negotiate">,
): Agreed {
  // Never POSIX_LOCKS or FLOCK_LOCKS: without them the kernel keeps fcntl and flock locks
  // itself, on the inode every process using the mount shares, where /proc/locks (and so a
  // CRIU dump) sees them and a server restart keeps them. With them, locks would live only in
  // the server and vanish from /proc/locks.
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
  if (kpt.negotiate(kernelFlags, off)) want = (want | Init.PASSTHROUGH) & ~Init.WRITEBACK_CACHE;
  return {
    flags: want & kernelFlags,
    kernelFlags,
    minor: Math.min(init.minor, FUSE_KERNEL_MINOR_VERSION),
  };
}

/** The INIT reply for what was agreed. */
export function initOut(
  init: InitIn,
  o: InitOptions,
  minor: number,
  flags: bigint,
  maxWrite: number,
): Buffer {
  return encodeInitOut({
    major: FUSE_KERNEL_VERSION,
    minor,
    maxReadahead: init.maxReadahead,
    flags,
    maxBackground: o.maxBackground,
    congestionThreshold: Math.floor((o.maxBackground * 3) / 4),
    maxWrite,
    timeGran: 1,
    maxPages: maxWrite / 4096,
    // Backing files on a plain (not stacked) file system.
    maxStackDepth: flags & Init.PASSTHROUGH ? 1 : 0,
  });
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
