/**
 * Seeded mutations of CRIU image files for the fuzz test: bit flips, truncation, an entry's
 * length field inflated, entries duplicated (up to thousands of times: the repeated pstree
 * task), random bytes over a range. Pure functions of (bytes, rng).
 */
import { parseImage } from "../../src/criu/index.js";

/** mulberry32: a small, fast, seedable PRNG (uniform in [0, 1)). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const MUTATIONS = ["flip", "truncate", "inflate", "duplicate", "random"] as const;
export type Mutation = (typeof MUTATIONS)[number];

/** Largest number of bytes a `duplicate` mutation adds (40,000 pstree entries fit). */
const DUPLICATE_BYTES = 8 * 1024 * 1024;

const int = (r: () => number, n: number) => Math.floor(r() * n);

/** Byte offsets of the entries' SIZE words (empty for raw or unparsable images). */
function entryOffsets(bytes: Buffer, name: string): { offset: number; size: number }[] {
  try {
    return parseImage(bytes, name).entries.map((e) => ({
      offset: e.offset,
      size: 4 + e.payload.length + (e.extra?.length ?? 0),
    }));
  } catch {
    return [];
  }
}

export function mutate(bytes: Buffer, name: string, kind: Mutation, r: () => number): Buffer {
  const out = Buffer.from(bytes);
  if (out.length === 0) return out;
  switch (kind) {
    case "flip": {
      for (let i = 0, n = 1 + int(r, 8); i < n; i++) {
        const at = int(r, out.length);
        out[at] = out[at]! ^ (1 << int(r, 8));
      }
      return out;
    }
    case "truncate":
      return out.subarray(0, int(r, out.length));
    case "inflate": {
      const entries = entryOffsets(bytes, name);
      if (entries.length === 0) return mutate(bytes, name, "flip", r);
      const e = entries[int(r, entries.length)]!;
      const big = [e.size + int(r, 64), 0x7fffffff, 0xffffffff, out.length * 2][int(r, 4)]!;
      out.writeUInt32LE(big >>> 0, e.offset);
      return out;
    }
    case "duplicate": {
      const entries = entryOffsets(bytes, name);
      if (entries.length === 0) return mutate(bytes, name, "random", r);
      const e = entries[int(r, entries.length)]!;
      const one = bytes.subarray(e.offset, e.offset + e.size);
      // At most DUPLICATE_BYTES of copies: the mutation itself must not be what eats memory.
      const times = Math.min([1, 2, 100, 40_000][int(r, 4)]!, Math.floor(DUPLICATE_BYTES / e.size));
      const copies = Buffer.concat(Array.from({ length: times }, () => one));
      return Buffer.concat([
        bytes.subarray(0, e.offset + e.size),
        copies,
        bytes.subarray(e.offset + e.size),
      ]);
    }
    case "random": {
      const at = int(r, out.length);
      const len = Math.min(out.length - at, 1 + int(r, 64));
      for (let i = 0; i < len; i++) out[at + i] = int(r, 256);
      return out;
    }
  }
}
