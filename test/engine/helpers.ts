/** Shared fixtures for the engine tests: temp dirs, random origin files, hashes. */

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FileMeta, Policy } from "../../src/fetch/index.js";
import type { SshdHandle } from "../../src/hosts/sshd.js";
import { type Origin, SftpOrigin, type SftpOriginOptions } from "../../src/origin/index.js";

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

/** Wraps an origin and records every range it served. */
export class RecordingOrigin implements Origin {
  readonly reads: { path: string; offset: number; length: number }[] = [];
  /** Metadata requests, as `op path` (stat, lstat, readlink, readdir). */
  readonly asked: string[] = [];
  readonly name: string;
  readonly mtimePrecisionMs: number;
  constructor(private readonly inner: Origin) {
    this.name = inner.name;
    this.mtimePrecisionMs = inner.mtimePrecisionMs;
  }
  stat(p: string) {
    this.asked.push(`stat ${p}`);
    return this.inner.stat(p);
  }
  lstat(p: string) {
    this.asked.push(`lstat ${p}`);
    return this.inner.lstat(p);
  }
  readlink(p: string) {
    this.asked.push(`readlink ${p}`);
    return this.inner.readlink(p);
  }
  async read(...args: Parameters<Origin["read"]>) {
    const [path, offset, length] = args;
    this.reads.push({ path, offset, length });
    return this.inner.read(...args);
  }
  readdir(p: string) {
    this.asked.push(`readdir ${p}`);
    return this.inner.readdir(p);
  }
  write(p: string, o: number, d: Buffer) {
    return this.inner.write(p, o, d);
  }
  truncate(p: string, s: number) {
    return this.inner.truncate(p, s);
  }
  close() {
    return this.inner.close();
  }
  bytesRead(path?: string) {
    return this.reads.filter((r) => !path || r.path === path).reduce((n, r) => n + r.length, 0);
  }
  /** Throws if any byte of `path` was read twice. */
  assertNoOverlap(path: string) {
    const rs = this.reads.filter((r) => r.path === path).sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < rs.length; i++) {
      assert.ok(
        rs[i]!.offset >= rs[i - 1]!.offset + rs[i - 1]!.length,
        `range @${rs[i]!.offset} read twice`,
      );
    }
  }
}

/** Slot writes of the crash test: partial blocks at both ends, deterministic content. */
export const SLOT = 48 * 1024;
export function slotWrite(slot: number): { offset: number; data: Buffer } {
  const data = Buffer.alloc(SLOT - 100);
  const r = rng(slot * 7919 + 13);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(Math.floor(r() * 2 ** 32), i);
  return { offset: slot * SLOT + 50, data };
}

/** An SFTP origin for a test sshd: its client key and known_hosts, no agent. */
export function sftpOriginFor(
  sshd: SshdHandle,
  extra: Partial<SftpOriginOptions> = {},
): SftpOrigin {
  return new SftpOrigin({
    host: sshd.host,
    port: sshd.port,
    username: sshd.user,
    identityFile: sshd.identityFile,
    knownHostsFile: sshd.knownHostsFile,
    agent: undefined,
    ...extra,
  });
}
