/**
 * Requests the kernel sends again after FUSE_NOTIFY_RESEND carry the top bit of `unique`
 * (FUSE_UNIQUE_RESEND). After a failover, the server that died may have carried such a request
 * out before it could answer. Reads, writes and attribute changes are the same when repeated;
 * a namespace operation is not: the repeat of a create finds its name taken (EEXIST), that of
 * a removal or rename finds the name gone (ENOENT). `repairResent` turns such a failure of a
 * resent request into the answer the first run would have given. (An exclusive create of a
 * name that existed before is then answered as if it had made it: the price of the window.)
 */
import { constants } from "node:fs";
import type { FileSystem } from "../filesystem.js";
import { Op, readCString } from "../protocol.js";
import {
  type HandlerSession,
  name0,
  need,
  openOut,
  type Payload,
  type Request,
  u64,
} from "./request.js";

export const UNIQUE_RESEND = 1n << 63n;

/** Operations whose repeat finds the name gone. */
const REMOVALS: readonly number[] = [Op.UNLINK, Op.RMDIR, Op.RENAME, Op.RENAME2];

export function isResent(unique: bigint): boolean {
  return (unique & UNIQUE_RESEND) !== 0n;
}

/** The reply a resent request that failed with `code` should get instead, if any. */
export async function repairResent(
  s: HandlerSession,
  r: Request,
  f: FileSystem,
  code: string | undefined,
): Promise<Payload | undefined> {
  const op = r.h.opcode;
  const parent = r.h.nodeid;
  if (code === "ENOENT" && REMOVALS.includes(op)) return [];
  if (code !== "EEXIST") return undefined;
  const lookup = need(f, "lookup");
  switch (op) {
    case Op.CREATE: {
      const flags = r.body.readUInt32LE(0);
      const entry = await lookup(parent, name0(r, 16), r.ctx);
      // Made by the first run: open it as that run would have, without creating or truncating.
      const plain = flags & ~(constants.O_CREAT | constants.O_EXCL | constants.O_TRUNC);
      const open = f.open ? await f.open(entry.ino, plain, r.ctx) : {};
      return [s.entryOut(entry), openOut(open, s.opened(open, entry.ino))];
    }
    case Op.MKNOD:
      return [s.entryOut(await lookup(parent, name0(r, 16), r.ctx))];
    case Op.MKDIR:
      return [s.entryOut(await lookup(parent, name0(r, 8), r.ctx))];
    case Op.SYMLINK:
      return [s.entryOut(await lookup(parent, readCString(r.body, 0, r.body.length)[0], r.ctx))];
    case Op.LINK: {
      const entry = await lookup(parent, name0(r, 8), r.ctx);
      return entry.ino === u64(r.body, 0) ? [s.entryOut(entry)] : undefined;
    }
    default:
      return undefined;
  }
}
