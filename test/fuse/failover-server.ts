/**
 * A FUSE server for the failover tests, started by a `Supervisor` (test/fuse/failover.test.ts):
 * serves the handed-over connection with a read-only file system whose node ids are fixed
 * (root 1, "data.bin" 2), so any server understands what the kernel holds. Reads of data.bin
 * bypass the page cache and take READ_DELAY_MS, so that a kill finds reads in flight. Its
 * content: 8-byte words, word k = k * 0x9E3779B97F4A7C15 mod 2^64 (little-endian).
 *
 * FAILOVER_BACKING=FILE: also "pt.bin" (3), FILE's content served by kernel passthrough.
 * FAILOVER_SUPERVISOR=SCRIPT: when the supervisor dies, start SCRIPT (failover-supervisor.ts)
 *   to adopt the connection.
 * FAILOVER_CRASH_WHILE=FILE: every server but the first exits at once with code 3 while FILE
 *   exists.
 * FAILOVER_READ_DELAY_MS: the delay of each read (default 5; the benchmark uses 0).
 * FAILOVER_HANG_OWN_STAT=1: the first server stats its own mount from a thread and never
 *   answers that GETATTR (a server killed then does not finish exiting).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import {
  type Attr,
  adoptionEnv,
  type FileSystem,
  FuseError,
  inheritedDevice,
  type OpenReply,
  serveInherited,
  takeOver,
  timespecNow,
  unmountOnSignals,
} from "../../src/fuse/index.js";

export const DATA_SIZE = 16 << 20;
const READ_DELAY_MS = Number(process.env.FAILOVER_READ_DELAY_MS ?? 5);
const start = timespecNow();

export function pattern(offset: number, length: number): Buffer {
  const first = Math.floor(offset / 8);
  const words = Math.ceil((offset + length) / 8) - first;
  const b = Buffer.alloc(words * 8);
  for (let k = 0; k < words; k++)
    b.writeBigUInt64LE((BigInt(first + k) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn, k * 8);
  return b.subarray(offset - first * 8, offset - first * 8 + length);
}

const BACKING = process.env.FAILOVER_BACKING;
let hangRootGetattr = false;
let nextFh = 1;

function attr(ino: number): Attr {
  const dir = ino === 1;
  return {
    ino,
    size: dir ? 0 : ino === 3 ? fs.statSync(BACKING!).size : DATA_SIZE,
    atime: start,
    mtime: start,
    ctime: start,
    mode: dir ? 0o40755 : 0o100444,
    nlink: dir ? 2 : 1,
    uid: 0,
    gid: 0,
  };
}

class Fixed implements FileSystem {
  async lookup(parent: number, name: string) {
    if (parent === 1 && name === "pt.bin" && BACKING) return { ino: 3, attr: attr(3) };
    if (parent !== 1 || name !== "data.bin") throw new FuseError("ENOENT");
    return { ino: 2, attr: attr(2) };
  }
  async getattr(ino: number) {
    if (ino === 1 && hangRootGetattr) await new Promise(() => {});
    if (ino !== 1 && ino !== 2 && !(ino === 3 && BACKING)) throw new FuseError("ENOENT");
    return { attr: attr(ino) };
  }
  async open(ino: number): Promise<OpenReply> {
    if (ino === 3 && BACKING) {
      // Every open gets its own fd (the kernel keeps the backing file it registered) and a
      // handle no other server of this mount gives: a RELEASE resent after a kill must not
      // end another open's handle.
      return {
        fh: process.pid * 2 ** 16 + nextFh++,
        backingFd: fs.openSync(BACKING, "r"),
        passthrough: true,
      };
    }
    if (ino !== 2) throw new FuseError("EISDIR");
    return { directIo: true };
  }
  async read(_ino: number, _fh: number, offset: number, size: number): Promise<Buffer> {
    await new Promise((r) => setTimeout(r, READ_DELAY_MS));
    return pattern(offset, Math.max(0, Math.min(size, DATA_SIZE - offset)));
  }
  async opendir() {
    return {};
  }
  async readdir(_ino: number, _fh: number, offset: number) {
    return [
      { name: ".", ino: 1, mode: 0o40755 },
      { name: "..", ino: 1, mode: 0o40755 },
      { name: "data.bin", ino: 2, mode: 0o100444 },
    ].slice(offset);
  }
}

if (process.argv[1]?.endsWith("failover-server.js")) {
  const handed = inheritedDevice();
  if (!handed) throw new Error("failover-server: not started by a supervisor");
  // A server must not be handed what its supervisor was handed to adopt a connection.
  if (process.env.FUSE_ADOPT) throw new Error("failover-server: handed FUSE_ADOPT");
  const crashWhile = process.env.FAILOVER_CRASH_WHILE;
  if (handed.restarts > 0 && crashWhile && fs.existsSync(crashWhile)) process.exit(3);
  const h = await takeOver(handed);
  const replacement = process.env.FAILOVER_SUPERVISOR;
  const m = await serveInherited(
    h,
    new Fixed(),
    { subtype: "failovertest", passthrough: BACKING !== undefined },
    replacement
      ? (adopt) =>
          spawn(process.execPath, [replacement], {
            detached: true,
            stdio: ["ignore", "inherit", "inherit", h.fd],
            env: adoptionEnv({ ...adopt, fd: 3 }, process.env),
          }).unref()
      : undefined,
  );
  unmountOnSignals(m);
  if (handed.restarts === 0 && process.env.FAILOVER_HANG_OWN_STAT === "1") {
    hangRootGetattr = true;
    fs.promises.stat(handed.mountpoint).catch(() => {});
  }
  await m.closed;
}
