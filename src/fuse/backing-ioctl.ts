/**
 * The two /dev/fuse ioctls of kernel passthrough (Linux >= 6.9), called through koffi
 * (Node cannot make an ioctl itself):
 *
 *   FUSE_DEV_IOC_BACKING_OPEN  _IOW(229, 1, struct fuse_backing_map { int32 fd; uint32 flags;
 *                              uint64 padding })  -> a backing id (> 0) for that fd
 *   FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32 backing id)
 *
 * The kernel allows them only to a caller with CAP_SYS_ADMIN. koffi is loaded on first use;
 * when it cannot be loaded the caller gets the reason and serves files without passthrough.
 */

import { errorMessage } from "../common/errors.js";
import { errnoName, loadLibc } from "../common/libc.js";

const FUSE_DEV_IOC_MAGIC = 229;
const IOC_WRITE = 1;

/** Linux's _IOW(type, nr, size) on the common architectures (x86, arm, riscv, loongarch). */
function iow(nr: number, size: number): number {
  return ((IOC_WRITE << 30) | (size << 16) | (FUSE_DEV_IOC_MAGIC << 8) | nr) >>> 0;
}

export const FUSE_DEV_IOC_BACKING_OPEN = iow(1, 16);
export const FUSE_DEV_IOC_BACKING_CLOSE = iow(2, 4);

/** An ioctl failure with the errno code (`EPERM`, ...). */
export class IoctlError extends Error {
  constructor(
    readonly code: string,
    what: string,
  ) {
    super(`${what}: ${code}`);
    this.name = "IoctlError";
  }
}

export interface BackingIoctls {
  /** Registers `fd` with the FUSE connection of `devFd`; returns its backing id. */
  open(devFd: number, fd: number): number;
  /** Forgets a backing id (files opened with it keep their own reference). */
  close(devFd: number, id: number): void;
}

type Ioctl = (fd: number, request: number, type: string, arg: Buffer) => number;

let loaded: { ioctls?: BackingIoctls; reason?: string } | undefined;

/** The ioctls, or why they cannot be made here (koffi missing, not Linux, no libc). */
export function backingIoctls(): { ioctls?: BackingIoctls; reason?: string } {
  loaded ??= load();
  return loaded;
}

function load(): { ioctls?: BackingIoctls; reason?: string } {
  if (process.platform !== "linux") return { reason: `not Linux (${process.platform})` };
  const c = loadLibc();
  if (typeof c === "string") return { reason: c };
  let ioctl: Ioctl;
  try {
    ioctl = c.lib.func("int ioctl(int, unsigned long, ...)") as Ioctl;
  } catch (err) {
    return { reason: `koffi: no ioctl in libc: ${errorMessage(err)}` };
  }
  const fail = (what: string): never => {
    throw new IoctlError(errnoName(c.errno()), what);
  };
  return {
    ioctls: {
      open(devFd, fd) {
        const map = Buffer.alloc(16);
        map.writeInt32LE(fd, 0);
        const id = ioctl(devFd, FUSE_DEV_IOC_BACKING_OPEN, "void *", map);
        return id > 0 ? id : fail(`FUSE_DEV_IOC_BACKING_OPEN of fd ${fd}`);
      },
      close(devFd, id) {
        const arg = Buffer.alloc(4);
        arg.writeUInt32LE(id, 0);
        if (ioctl(devFd, FUSE_DEV_IOC_BACKING_CLOSE, "void *", arg) < 0)
          fail(`FUSE_DEV_IOC_BACKING_CLOSE of id ${id}`);
      },
    },
  };
}
