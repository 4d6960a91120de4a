/** Options shared by mount, restore and migrate, as stored in the manifest for the daemon. */
import { UserError } from "../common/errors.js";
import type { PrefetchMode } from "../fetch/index.js";
import type { ScrubContent } from "../origin/index.js";

export interface SshOptions {
  identityFile?: string;
  /** `ssh -F FILE`. */
  configFile?: string;
  /** `ssh -o KEY=VALUE`, in order. */
  options?: string[];
  knownHostsFile?: string;
  acceptNewHostKey?: boolean;
  timeoutMs?: number;
}

export interface ServeOptions {
  prefetch: { mode: PrefetchMode; delayMs?: number };
  bwlimitBytesPerSec?: number;
  allowChanged: boolean;
  /** Fetch whole files on first reference (the paper's behaviour) instead of blocks. */
  wholeFile?: boolean;
  /** Content of `scrub` files (never the real bytes). */
  scrub: ScrubContent;
  /** Fetch granularity of a new cache, bytes (a cache keeps the size it was made with). */
  blockSize?: number;
  /** Absolute path of the access log (JSON lines, one per coalesced run of FUSE requests). */
  accessLog?: string;
  /** HOST:PORT where the daemon serves this migration's metrics. */
  metrics?: string;
  /**
   * Soft mount: a read that needs an unreachable origin fails (EIO) after this long. Absent:
   * hard, it waits for the origin however long it takes.
   */
  originTimeoutMs?: number;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration: `5s`, `2m`, `1h`, `500ms` (a bare number is seconds). */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * DURATION_UNITS[m[2] ?? "s"]! : Number.NaN;
  if (!(ms > 0) || !Number.isFinite(ms)) {
    throw new UserError(
      `${what} ${JSON.stringify(text)}: expected a duration such as 5s, 2m or 500ms`,
    );
  }
  return Math.round(ms);
}

const MAX_BLOCK = 16 * 1024 * 1024;

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A size in bytes: `4096`, `64K`, `16M`, `1G` (binary units; `KiB`, `MiB`, `GiB` too). */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+)\s*(?:([kmg])(?:ib|i)?)?$/i.exec(text.trim());
  if (!m) {
    throw new UserError(
      `${what} ${JSON.stringify(text)}: expected a size such as 4096, 64K, 16M or 1G`,
    );
  }
  return Number(m[1]) * SIZE_UNITS[(m[2] ?? "").toLowerCase()]!;
}

/** `64K`, `256K`, `1M` or bytes: a multiple of 4 KiB from 4 KiB to 16 MiB. */
export function parseBlockSize(text: string): number {
  const bad = () =>
    new UserError(
      `--block-size ${JSON.stringify(text)}: expected a multiple of 4K from 4K to 16M (e.g. 64K, 1M)`,
    );
  let bytes: number;
  try {
    bytes = parseSize(text, "--block-size");
  } catch {
    throw bad();
  }
  if (!(bytes >= 4096 && bytes <= MAX_BLOCK && bytes % 4096 === 0)) throw bad();
  return bytes;
}

/** `none`, `immediate`, `idle`, or `delay:<ms>` / a bare number of ms. */
export function parsePrefetch(text: string): ServeOptions["prefetch"] {
  if (text === "none" || text === "immediate" || text === "idle") return { mode: text };
  const m = /^(?:delay:)?(\d+)(ms|s)?$/.exec(text);
  if (m) return { mode: "delay", delayMs: Number(m[1]) * (m[2] === "s" ? 1000 : 1) };
  throw new UserError(
    `--prefetch ${JSON.stringify(text)}: expected none, immediate, idle or delay:<ms> (e.g. delay:5000)`,
  );
}

const RATE_UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
};

/**
 * A rate in bytes per second: `500k`, `10M`, `1Mi` (bytes), or bits with a `bit` suffix
 * (`100mbit`).
 */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g|ki|mi|gi)?(b|bit|bps|B)?(\/s)?$/i.exec(text.trim());
  if (!m) {
    throw new UserError(`rate ${JSON.stringify(text)}: expected e.g. 500k, 10M, 1Mi or 100mbit`);
  }
  const unit = RATE_UNITS[(m[2] ?? "").toLowerCase()]!;
  const bits = m[3] !== undefined && /^bit|^bps/i.test(m[3]) && m[3] !== "B";
  const v = (Number(m[1]) * unit) / (bits ? 8 : 1);
  if (!(v > 0)) throw new UserError(`rate ${JSON.stringify(text)} must be positive`);
  return Math.round(v);
}

/** `zeros`, `random[:SEED]` or `module:PATH` (default export (path, offset, length) => bytes). */
export function parseScrub(text: string): ScrubContent {
  if (text === "zeros") return { kind: "zeros" };
  const m = /^random(?::(.+))?$/.exec(text);
  if (m) return { kind: "random", seed: m[1] ?? "lazyfs" };
  if (text.startsWith("module:") && text.length > 7) return { kind: "module", path: text.slice(7) };
  throw new UserError(
    `--scrub ${JSON.stringify(text)}: expected zeros, random[:SEED] or module:PATH`,
  );
}
