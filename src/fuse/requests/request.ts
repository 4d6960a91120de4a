/**
 * A request as its handler sees it: the decoded request, the reply payload, what a handler
 * may ask of the session that dispatched it (`HandlerSession`, implemented by ../session.ts),
 * and the small helpers the handlers share to read a request's body, call the `FileSystem`
 * and encode an open reply. It sits below the session and the handlers so that both import
 * it and neither imports the other.
 */
import type { Entry, FileSystem, OpenReply, RequestContext } from "../filesystem.js";
import { encodeOpenOut, FOpen, type InHeader, OPEN_OUT_SIZE, readCString } from "../protocol.js";

export type Payload = Buffer[] | undefined;

export interface Request {
  h: InHeader;
  /** Bytes after the in-header, up to `len`. */
  body: Buffer;
  ctx: RequestContext;
  abort: AbortController;
  replied: boolean;
  pooled: Buffer[];
}

/** What the handlers need of the session that dispatched their request. */
export interface HandlerSession {
  /** Answers INIT (and negotiates the connection). */
  init(r: Request): Promise<Payload>;
  /** Answers DESTROY (calls the file system's `destroy` once). */
  destroy(): Promise<Payload>;
  /** A LOOKUP/CREATE/... reply with the session's default cache timeouts filled in. */
  entryOut(e: Entry): Buffer;
  /** A GETATTR/SETATTR reply with the session's default attribute timeout filled in. */
  attrOut(reply: { attr: Entry["attr"]; attrTimeoutMs?: number }): Buffer;
  /** OPEN/CREATE reply for `ino` about to go out: its backing id if the kernel serves it. */
  opened(o: OpenReply, ino: number): number | undefined;
  /** RELEASE of `fh`: forget its backing fd (or id). */
  released(fh: number, ino: number): void;
  /** The backing fd of a handle the reader threads did not serve, if any. */
  backingOf(fh: number): number | undefined;
}

export function enosys(): never {
  throw Object.assign(new Error("not implemented"), { code: "ENOSYS" });
}

/** `f[k]` bound to `f`, or an ENOSYS error if the file system does not implement it. */
export function need<K extends keyof FileSystem>(f: FileSystem, k: K): NonNullable<FileSystem[K]> {
  const m = f[k];
  if (!m) enosys();
  return (m as (...a: unknown[]) => unknown).bind(f) as NonNullable<FileSystem[K]>;
}

export function u64(b: Buffer, off: number): number {
  return Number(b.readBigUInt64LE(off));
}

export function name0(r: Request, off = 0): string {
  return readCString(r.body, off, r.body.length)[0];
}

function openFlags(o: OpenReply): number {
  return (
    (o.directIo ? FOpen.DIRECT_IO : 0) |
    (o.keepCache ? FOpen.KEEP_CACHE : 0) |
    (o.nonseekable ? FOpen.NONSEEKABLE : 0) |
    (o.cacheDir ? FOpen.CACHE_DIR : 0) |
    (o.noFlush ? FOpen.NOFLUSH : 0) |
    (o.parallelDirectWrites ? FOpen.PARALLEL_DIRECT_WRITES : 0)
  );
}

export function openOut(o: OpenReply, backingId?: number): Buffer {
  const b = Buffer.alloc(OPEN_OUT_SIZE);
  if (backingId === undefined) encodeOpenOut(b, 0, o.fh ?? 0, openFlags(o));
  else
    encodeOpenOut(
      b,
      0,
      o.fh ?? 0,
      (openFlags(o) & PASSTHROUGH_OPEN_FLAGS) | FOpen.PASSTHROUGH,
      backingId,
    );
  return b;
}

/** The only open flags the kernel accepts beside FOPEN_PASSTHROUGH (else the open is EIO). */
const PASSTHROUGH_OPEN_FLAGS = FOpen.NOFLUSH | FOpen.PARALLEL_DIRECT_WRITES;
