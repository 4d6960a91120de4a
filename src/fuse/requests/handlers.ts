/**
 * One handler per FUSE opcode (go-fuse's raw layer): each decodes its request, calls the
 * `FileSystem` and encodes the reply payload; dispatch.ts dispatches to them and replies.
 */
import fs from "node:fs";
import { type DirEntry, direntType, type FileSystem } from "../filesystem.js";
import {
  decodeSetAttrIn,
  direntSize,
  ENTRY_OUT_SIZE,
  encodeDirent,
  encodeStatFs,
  Op,
  readCString,
  WRITE_IN_SIZE,
} from "../protocol.js";
import {
  type HandlerSession,
  name0,
  need,
  openOut,
  type Payload,
  type Request,
  u64,
} from "./request.js";

export type Handler = (s: HandlerSession, r: Request, fs: FileSystem) => Promise<Payload> | Payload;

function u32Out(n: number, size = 8): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(n, 0);
  return b;
}

/** One handler per opcode. A missing opcode (or FileSystem method) answers ENOSYS. */
export const HANDLERS: Partial<Record<number, Handler>> = {
  [Op.INIT]: (s, r) => s.init(r),
  [Op.DESTROY]: (s) => s.destroy(),
  [Op.LOOKUP]: async (s, r, f) => [
    s.entryOut(await need(f, "lookup")(r.h.nodeid, name0(r), r.ctx)),
  ],
  [Op.GETATTR]: async (s, r, f) => {
    const hasFh = r.body.length >= 16 && (r.body.readUInt32LE(0) & 1) !== 0;
    return [
      s.attrOut(await need(f, "getattr")(r.h.nodeid, hasFh ? u64(r.body, 8) : undefined, r.ctx)),
    ];
  },
  [Op.SETATTR]: async (s, r, f) => [
    s.attrOut(await need(f, "setattr")(r.h.nodeid, decodeSetAttrIn(r.body, 0), r.ctx)),
  ],
  [Op.READLINK]: async (_s, r, f) => [Buffer.from(await need(f, "readlink")(r.h.nodeid, r.ctx))],
  [Op.SYMLINK]: async (s, r, f) => {
    const [name, next] = readCString(r.body, 0, r.body.length);
    const target = readCString(r.body, next, r.body.length)[0];
    return [s.entryOut(await need(f, "symlink")(r.h.nodeid, name, target, r.ctx))];
  },
  [Op.MKNOD]: async (s, r, f) => {
    const mode = r.body.readUInt32LE(0);
    const rdev = r.body.readUInt32LE(4);
    return [s.entryOut(await need(f, "mknod")(r.h.nodeid, name0(r, 16), mode, rdev, r.ctx))];
  },
  [Op.MKDIR]: async (s, r, f) => [
    s.entryOut(await need(f, "mkdir")(r.h.nodeid, name0(r, 8), r.body.readUInt32LE(0), r.ctx)),
  ],
  [Op.UNLINK]: async (_s, r, f) => {
    await need(f, "unlink")(r.h.nodeid, name0(r), r.ctx);
    return [];
  },
  [Op.RMDIR]: async (_s, r, f) => {
    await need(f, "rmdir")(r.h.nodeid, name0(r), r.ctx);
    return [];
  },
  [Op.RENAME]: (_s, r, f) => rename(r, f, 8, 0),
  [Op.RENAME2]: (_s, r, f) => rename(r, f, 16, r.body.readUInt32LE(8)),
  [Op.LINK]: async (s, r, f) => [
    s.entryOut(await need(f, "link")(u64(r.body, 0), r.h.nodeid, name0(r, 8), r.ctx)),
  ],
  [Op.OPEN]: async (s, r, f) => {
    const o = f.open ? await f.open(r.h.nodeid, r.body.readUInt32LE(0), r.ctx) : {};
    return [openOut(o, s.opened(o, r.h.nodeid))];
  },
  [Op.READ]: async (s, r, f) => {
    const bfd = s.backingOf(u64(r.body, 0));
    if (bfd !== undefined) {
      const buf = r.ctx.buffer(r.body.readUInt32LE(16));
      const n = await new Promise<number>((res, rej) =>
        fs.read(bfd, buf, 0, buf.length, u64(r.body, 8), (e, k) => (e ? rej(e) : res(k))),
      );
      return [buf.subarray(0, n)];
    }
    const data = await need(f, "read")(
      r.h.nodeid,
      u64(r.body, 0),
      u64(r.body, 8),
      r.body.readUInt32LE(16),
      r.ctx,
    );
    const max = r.body.readUInt32LE(16);
    return [data.length > max ? data.subarray(0, max) : data];
  },
  [Op.WRITE]: async (s, r, f) => {
    const size = r.body.readUInt32LE(16);
    const data = r.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + size);
    const bfd = s.backingOf(u64(r.body, 0));
    if (bfd !== undefined) {
      const n = await new Promise<number>((res, rej) =>
        fs.write(bfd, data, 0, data.length, u64(r.body, 8), (e, k) => (e ? rej(e) : res(k))),
      );
      return [u32Out(n)];
    }
    return [
      u32Out(await need(f, "write")(r.h.nodeid, u64(r.body, 0), u64(r.body, 8), data, r.ctx)),
    ];
  },
  [Op.STATFS]: async (_s, r, f) => [
    encodeStatFs(
      f.statfs
        ? await f.statfs(r.h.nodeid, r.ctx)
        : {
            blocks: 0,
            bfree: 0,
            bavail: 0,
            files: 0,
            ffree: 0,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
          },
    ),
  ],
  [Op.RELEASE]: async (s, r, f) => {
    s.released(u64(r.body, 0), r.h.nodeid);
    await f.release?.(r.h.nodeid, u64(r.body, 0), r.body.readUInt32LE(8), r.ctx);
    return [];
  },
  [Op.FLUSH]: async (_s, r, f) => {
    await f.flush?.(r.h.nodeid, u64(r.body, 0), r.ctx);
    return [];
  },
  [Op.FSYNC]: async (_s, r, f) => {
    await f.fsync?.(r.h.nodeid, u64(r.body, 0), (r.body.readUInt32LE(8) & 1) !== 0, r.ctx);
    return [];
  },
  [Op.OPENDIR]: async (_s, r, f) => [
    openOut(f.opendir ? await f.opendir(r.h.nodeid, r.body.readUInt32LE(0), r.ctx) : {}),
  ],
  [Op.READDIR]: (s, r, f) => readdir(s, r, f, false),
  [Op.READDIRPLUS]: (s, r, f) => readdir(s, r, f, true),
  [Op.RELEASEDIR]: async (_s, r, f) => {
    await f.releasedir?.(r.h.nodeid, u64(r.body, 0), r.ctx);
    return [];
  },
  [Op.FSYNCDIR]: async (_s, r, f) => {
    await f.fsyncdir?.(r.h.nodeid, u64(r.body, 0), (r.body.readUInt32LE(8) & 1) !== 0, r.ctx);
    return [];
  },
  [Op.ACCESS]: async (_s, r, f) => {
    await f.access?.(r.h.nodeid, r.body.readUInt32LE(0), r.ctx);
    return [];
  },
  [Op.CREATE]: async (s, r, f) => {
    const flags = r.body.readUInt32LE(0);
    const mode = r.body.readUInt32LE(4);
    const res = await need(f, "create")(r.h.nodeid, name0(r, 16), mode, flags, r.ctx);
    return [s.entryOut(res.entry), openOut(res.open, s.opened(res.open, res.entry.ino))];
  },
  [Op.LSEEK]: async (_s, r, f) => {
    const off = await need(f, "lseek")(
      r.h.nodeid,
      u64(r.body, 0),
      u64(r.body, 8),
      r.body.readUInt32LE(16),
      r.ctx,
    );
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(off));
    return [b];
  },
  [Op.FALLOCATE]: async (_s, r, f) => {
    await need(f, "fallocate")(
      r.h.nodeid,
      u64(r.body, 0),
      u64(r.body, 8),
      u64(r.body, 16),
      r.body.readUInt32LE(24),
      r.ctx,
    );
    return [];
  },
  [Op.SETXATTR]: async (_s, r, f) => {
    const size = r.body.readUInt32LE(0);
    const [name, next] = readCString(r.body, 8, r.body.length);
    await need(f, "setxattr")(
      r.h.nodeid,
      name,
      r.body.subarray(next, next + size),
      r.body.readUInt32LE(4),
      r.ctx,
    );
    return [];
  },
  [Op.GETXATTR]: async (_s, r, f) =>
    sized(r, await need(f, "getxattr")(r.h.nodeid, name0(r, 8), r.ctx)),
  [Op.LISTXATTR]: async (_s, r, f) => {
    const names = await need(f, "listxattr")(r.h.nodeid, r.ctx);
    return sized(r, Buffer.from(names.map((n) => `${n}\0`).join("")));
  },
  [Op.REMOVEXATTR]: async (_s, r, f) => {
    await need(f, "removexattr")(r.h.nodeid, name0(r), r.ctx);
    return [];
  },
};

/** GETXATTR/LISTXATTR: size 0 asks for the length; a too-small buffer is ERANGE. */
function sized(r: Request, value: Buffer): Payload {
  const size = r.body.readUInt32LE(0);
  if (size === 0) return [u32Out(value.length)];
  if (value.length > size)
    throw Object.assign(new Error("xattr buffer too small"), { code: "ERANGE" });
  return [value];
}

async function rename(r: Request, f: FileSystem, namesAt: number, flags: number): Promise<Payload> {
  const [oldName, next] = readCString(r.body, namesAt, r.body.length);
  const newName = readCString(r.body, next, r.body.length)[0];
  await need(f, "rename")(r.h.nodeid, oldName, u64(r.body, 0), newName, flags, r.ctx);
  return [];
}

/** READDIR, and READDIRPLUS (`plus`): each entry with its LOOKUP reply (zeros if that fails). */
async function readdir(
  s: HandlerSession,
  r: Request,
  f: FileSystem,
  plus: boolean,
): Promise<Payload> {
  const ino = r.h.nodeid;
  const fh = u64(r.body, 0);
  const offset = u64(r.body, 8);
  const size = r.body.readUInt32LE(16);
  const entries: DirEntry[] = await need(f, "readdir")(ino, fh, offset, r.ctx);
  const out = Buffer.alloc(size);
  let used = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const name = Buffer.from(e.name);
    const need = direntSize(name.length) + (plus ? ENTRY_OUT_SIZE : 0);
    if (used + need > size) break;
    if (plus) {
      let entry: Buffer | undefined;
      if (e.name !== "." && e.name !== ".." && f.lookup) {
        try {
          entry = s.entryOut(await f.lookup(ino, e.name, r.ctx));
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
