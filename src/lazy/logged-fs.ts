/**
 * A LazyFileSystem whose FUSE requests are written to an access log (access-log.ts). It is
 * the same object seen through a proxy: requests of the logged operations are timed, named
 * (inode -> path, learned from the replies that hand inodes to the kernel) and recorded after
 * they completed; everything else goes straight to the file system. Without an access log the
 * proxy does not exist, so the log costs nothing when off.
 */
import type { ByteSource } from "../fetch/index.js";
import type { Entry, RequestContext } from "../fuse/index.js";
import type { AccessLog } from "./access-log.js";
import type { LazyFileSystem } from "./filesystem.js";
import type { SourceReport } from "./nodes.js";
import { ROOT_INO } from "./nodes.js";

type Fn = (...args: unknown[]) => unknown;

/** For each logged op: how to find the path, offset and length among its arguments. */
interface OpShape {
  /** The inode the op works on (arg index), or a (parent, name) pair. */
  ino?: number;
  parentName?: [number, number];
  offset?: number;
  /** A length argument, or a Buffer argument whose length counts. */
  length?: number;
  data?: number;
  /** The reply hands the kernel an inode for (parent, name). */
  entry?: boolean;
  /** Default source of the bytes, when the engine did not report one. */
  source?: ByteSource;
}

const OPS: Record<string, OpShape> = {
  lookup: { parentName: [0, 1], entry: true },
  getattr: { ino: 0 },
  setattr: { ino: 0 },
  readlink: { ino: 0 },
  open: { ino: 0 },
  opendir: { ino: 0 },
  readdir: { ino: 0 },
  read: { ino: 0, offset: 2, length: 3 },
  write: { ino: 0, offset: 2, data: 3, source: "local-write" },
  fallocate: { ino: 0, offset: 2, length: 3, source: "local-write" },
  fsync: { ino: 0 },
  release: { ino: 0 },
  create: { parentName: [0, 1], entry: true },
  mknod: { parentName: [0, 1], entry: true },
  mkdir: { parentName: [0, 1], entry: true },
  symlink: { parentName: [0, 1], entry: true },
  link: { parentName: [1, 2], entry: true },
  unlink: { parentName: [0, 1] },
  rmdir: { parentName: [0, 1] },
  rename: { parentName: [0, 1] },
};

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

function errnoOf(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : "EIO";
}

/** `fs` with every logged request recorded in `log`. */
export function withAccessLog(fs: LazyFileSystem, log: AccessLog): LazyFileSystem {
  const paths = new Map<number, string>([[ROOT_INO, "/"]]);
  const pathOf = (ino: number): string => {
    const known = paths.get(ino);
    if (known) return known;
    const fileId = fs.tree.get(ino)?.fileId;
    return fileId?.startsWith("/") ? fileId : `ino:${ino}`;
  };
  const wrap = (op: string, shape: OpShape, fn: Fn): Fn => {
    return (...args: unknown[]) => {
      const t = Date.now();
      const path = shape.parentName
        ? join(pathOf(args[shape.parentName[0]] as number), args[shape.parentName[1]] as string)
        : pathOf(args[shape.ino ?? 0] as number);
      const ctx = args[args.length - 1] as (RequestContext & SourceReport) | undefined;
      if (ctx && typeof ctx === "object") ctx.source = undefined;
      const offset = shape.offset === undefined ? undefined : (args[shape.offset] as number);
      const done = (length: number | undefined, error: string | undefined) => {
        const source = ctx?.source ?? shape.source;
        log.add(t, ctx?.pid ?? 0, op, path, offset, length, source, error);
      };
      let result: Promise<unknown>;
      try {
        result = Promise.resolve(fn(...args));
      } catch (err) {
        done(undefined, errnoOf(err));
        throw err;
      }
      return result.then(
        (v) => {
          if (shape.entry) {
            const ino = op === "create" ? (v as { entry: Entry }).entry.ino : (v as Entry).ino;
            paths.set(ino, path);
          } else if (op === "rename") {
            const to = join(pathOf(args[2] as number), args[3] as string);
            for (const [ino, p] of paths) {
              if (p === path) paths.set(ino, to);
              else if (p.startsWith(`${path}/`)) paths.set(ino, to + p.slice(path.length));
            }
          }
          const length =
            op === "read"
              ? (v as Buffer).length
              : shape.data !== undefined
                ? (args[shape.data] as Buffer).length
                : shape.length !== undefined
                  ? (args[shape.length] as number)
                  : undefined;
          done(length, undefined);
          return v;
        },
        (err: unknown) => {
          done(undefined, errnoOf(err));
          throw err;
        },
      );
    };
  };
  const cache = new Map<PropertyKey, unknown>();
  return new Proxy(fs, {
    get(target, prop) {
      const hit = cache.get(prop);
      if (hit !== undefined) return hit;
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      const shape = typeof prop === "string" ? OPS[prop] : undefined;
      const bound = (v as Fn).bind(target) as Fn;
      let out = shape ? wrap(prop as string, shape, bound) : bound;
      if (prop === "forget") {
        // A node the kernel forgot and the tree dropped needs no name any more.
        out = (ino: unknown, n: unknown) => {
          bound(ino, n);
          if (!target.tree.get(ino as number)) paths.delete(ino as number);
        };
      }
      cache.set(prop, out);
      return out;
    },
  });
}
