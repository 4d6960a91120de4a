/** Shared fixtures for the engine tests: temp dirs, random origin files, hashes. */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FileMeta, Policy } from "../../src/fetch/index.js";

export async function tempDir(
  prefix: string,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `lazyfs-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

/** Writes `size` random bytes to `path` and returns them. */
export async function randomFile(path: string, size: number): Promise<Buffer> {
  const data = randomBytes(size);
  await writeFile(path, data);
  return data;
}

/** A FileMeta for `path` as it is now (what a checkpoint would record). */
export async function metaOf(id: string, path: string, policy: Policy = "lazy"): Promise<FileMeta> {
  const st = await stat(path);
  return {
    id,
    originPath: path,
    size: st.size,
    mtimeMs: st.mtimeMs,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    policy,
  };
}

/** Deterministic pseudo-random generator (mulberry32) for reproducible access patterns. */
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

/** 32 readers on random ranges of `size` bytes; returns the ranges read. */
export async function concurrentRandomReads(
  read: (offset: number, length: number) => Promise<Buffer>,
  source: Buffer,
  readers = 32,
  perReader = 12,
  seed = 7,
): Promise<void> {
  const rand = rng(seed);
  const size = source.length;
  await Promise.all(
    Array.from({ length: readers }, async () => {
      for (let k = 0; k < perReader; k++) {
        const offset = Math.floor(rand() * size);
        const length = 1 + Math.floor(rand() * 700_000);
        const got = await read(offset, length);
        const want = source.subarray(offset, offset + length);
        if (!got.equals(want)) throw new Error(`bytes differ at @${offset}+${length}`);
      }
    }),
  );
}
