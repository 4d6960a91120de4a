/**
 * Reading files whose names come from outside (images directories, logs) without trusting
 * what they are: regular files only (a FIFO is opened non-blocking and refused, so it cannot
 * hang the reader; a symlink to /dev/zero is refused by its type, not read forever), and never
 * more than a stated number of bytes: the whole file up to a limit, or only its head or tail.
 */
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { errnoCode, errorMessage, UserError } from "./errors.js";

/** Why a path is not a regular file, in words (`a FIFO`, `a character device`, ...). */
function kindOf(mode: number): string {
  switch (mode & constants.S_IFMT) {
    case constants.S_IFIFO:
      return "a FIFO";
    case constants.S_IFCHR:
      return "a character device";
    case constants.S_IFBLK:
      return "a block device";
    case constants.S_IFDIR:
      return "a directory";
    case constants.S_IFSOCK:
      return "a socket";
    default:
      return "of another type";
  }
}

/** A file whose type or size we refuse; `code` says which (for callers that skip some). */
export class UnreadableFileError extends UserError {
  constructor(
    readonly path: string,
    readonly code: "missing" | "type" | "size" | "access" | "io",
    problem: string,
  ) {
    super(`${path}: ${problem}`);
  }
}

async function openRegular(path: string, what: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") throw new UnreadableFileError(path, "missing", `no such ${what}`);
    if (code === "EACCES" || code === "EPERM") {
      throw new UnreadableFileError(path, "access", `cannot read ${what}: permission denied`);
    }
    if (code === "EISDIR") {
      throw new UnreadableFileError(path, "type", `a directory, not a regular file (${what})`);
    }
    throw new UnreadableFileError(path, "io", `cannot read ${what}: ${errorMessage(err)}`);
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new UnreadableFileError(
      path,
      "type",
      `${kindOf(st.mode)}, not a regular file; refusing to read it (${what})`,
    );
  }
  return { fh, size: st.size };
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break; // shrank meanwhile
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** The whole of a regular file of at most `maxBytes` bytes; larger ones are refused. */
export async function readRegularFile(
  path: string,
  maxBytes: number,
  what = "file",
): Promise<Buffer> {
  const { fh, size } = await openRegular(path, what);
  try {
    if (size > maxBytes) {
      throw new UnreadableFileError(
        path,
        "size",
        `${what} of ${size} bytes is larger than the limit of ${maxBytes} bytes; refusing it`,
      );
    }
    return await readAt(fh, 0, size);
  } finally {
    await fh.close();
  }
}

/** At most the first `maxBytes` bytes of a regular file. */
export async function readHead(path: string, maxBytes: number, what = "file"): Promise<Buffer> {
  const { fh, size } = await openRegular(path, what);
  try {
    return await readAt(fh, 0, Math.min(size, maxBytes));
  } finally {
    await fh.close();
  }
}

/** At most the last `maxBytes` bytes of a regular file (logs: the errors are at the end). */
export async function readTail(path: string, maxBytes: number, what = "file"): Promise<Buffer> {
  const { fh, size } = await openRegular(path, what);
  try {
    const length = Math.min(size, maxBytes);
    return await readAt(fh, size - length, length);
  } finally {
    await fh.close();
  }
}
