/**
 * Scrub origin for the honeypot scenario: file content is synthesized on the target and the
 * real file's bytes are never read. Metadata (stat, readdir) comes from `base` when given;
 * content is zeros, a seeded pseudo-random stream (stable per path and offset), or a user
 * module whose default export is `(path, offset, length) => Buffer | Promise<Buffer>`.
 */
import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";
import { UserError } from "../common/errors.js";
import type { Origin, OriginDirEntry, OriginStat } from "./types.js";

export type ScrubGenerator = (
  path: string,
  offset: number,
  length: number,
) => Buffer | Promise<Buffer>;

export type ScrubContent =
  | { kind: "zeros" }
  | { kind: "random"; seed: string }
  | { kind: "module"; path: string }
  | { kind: "function"; generate: ScrubGenerator };

const RANDOM_CHUNK = 32;

/** Deterministic bytes for (seed, path, offset..offset+length): SHA-256 in counter mode. */
export function seededBytes(seed: string, path: string, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let pos = 0;
  while (pos < length) {
    const abs = offset + pos;
    const counter = Math.floor(abs / RANDOM_CHUNK);
    const block = createHash("sha256").update(`${seed}\0${path}\0${counter}`).digest();
    const skip = abs - counter * RANDOM_CHUNK;
    pos += block.copy(out, pos, skip, Math.min(RANDOM_CHUNK, skip + length - pos));
  }
  return out;
}

export class ScrubOrigin implements Origin {
  readonly name: string;
  readonly mtimePrecisionMs: number;
  private generator?: Promise<ScrubGenerator>;

  constructor(
    private readonly content: ScrubContent = { kind: "zeros" },
    private readonly base?: Origin,
  ) {
    this.name = `scrub:${content.kind}`;
    this.mtimePrecisionMs = base?.mtimePrecisionMs ?? 1;
  }

  private noBase(op: string, path: string): never {
    throw new UserError(`${this.name}: ${op} ${path}: no metadata origin configured`);
  }

  stat(path: string): Promise<OriginStat> {
    return this.base ? this.base.stat(path) : this.noBase("stat", path);
  }

  lstat(path: string): Promise<OriginStat> {
    return this.base ? this.base.lstat(path) : this.noBase("lstat", path);
  }

  readlink(path: string): Promise<string> {
    return this.base ? this.base.readlink(path) : this.noBase("readlink", path);
  }

  readdir(path: string): Promise<OriginDirEntry[]> {
    return this.base ? this.base.readdir(path) : this.noBase("readdir", path);
  }

  private loadModule(modulePath: string): Promise<ScrubGenerator> {
    this.generator ??= import(pathToFileURL(modulePath).href).then(
      (mod: { default?: unknown }) => {
        if (typeof mod.default !== "function") {
          throw new UserError(`scrub module ${modulePath} has no default export function`);
        }
        return mod.default as ScrubGenerator;
      },
      (err: unknown) => {
        throw new UserError(`scrub module ${modulePath} cannot be loaded: ${String(err)}`, {
          cause: err,
        });
      },
    );
    return this.generator;
  }

  async read(path: string, offset: number, length: number): Promise<Buffer> {
    const c = this.content;
    if (c.kind === "zeros") return Buffer.alloc(length);
    if (c.kind === "random") return seededBytes(c.seed, path, offset, length);
    const gen = c.kind === "function" ? c.generate : await this.loadModule(c.path);
    const out = await gen(path, offset, length);
    if (!Buffer.isBuffer(out) || out.length > length) {
      throw new UserError(
        `${this.name}: generator returned ${Buffer.isBuffer(out) ? `${out.length} bytes` : typeof out} for ${path} @${offset}+${length}`,
      );
    }
    return out;
  }

  async write(path: string, offset: number): Promise<void> {
    throw new UserError(
      `${this.name}: write ${path} @${offset}: a scrubbed file is never written to its origin`,
    );
  }

  async truncate(path: string): Promise<void> {
    throw new UserError(
      `${this.name}: truncate ${path}: a scrubbed file is never written to its origin`,
    );
  }

  async close(): Promise<void> {}
}
