/** The memory example's nodes: attributes, content, and the limits of names and sizes. */
import { constants as bufferConstants } from "node:buffer";
import { type Attr, FuseError, timespecNow } from "../filesystem.js";

export interface Node {
  attr: Attr;
  data: Buffer;
  children?: Map<string, number>;
  target?: string;
  xattrs: Map<string, Buffer>;
  nlookup: number;
}

/** Longest file content a Buffer can hold: larger sizes answer EFBIG. */
const MAX_SIZE = bufferConstants.MAX_LENGTH;
export const NAME_MAX = 255;

export function checkName(name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw new FuseError("ENAMETOOLONG");
}

export function newNode(ino: number, mode: number, uid: number, gid: number): Node {
  const now = timespecNow();
  return {
    attr: { ino, size: 0, atime: now, mtime: now, ctime: now, mode, nlink: 1, uid, gid },
    data: Buffer.alloc(0),
    xattrs: new Map(),
    nlookup: 0,
  };
}

/** Sets the size of a file's content: zeros past the old end, EFBIG past what fits. */
export function resize(n: Node, size: number): void {
  if (size > MAX_SIZE) throw new FuseError("EFBIG");
  if (size > n.data.length) {
    const grown = Buffer.alloc(
      Math.min(MAX_SIZE, Math.max(size, Math.min(n.data.length * 2, size + (64 << 20)))),
    );
    n.data.copy(grown, 0, 0, n.attr.size);
    n.data = grown;
  } else if (size < n.attr.size) {
    n.data.fill(0, size, n.attr.size);
  }
  n.attr.size = size;
}
