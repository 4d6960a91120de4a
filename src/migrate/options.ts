/** Options shared by mount, restore and migrate, as stored in the manifest for the daemon. */
import { UserError } from "../common/errors.js";
import type { PrefetchMode } from "../fetch/index.js";
import type { ScrubContent } from "../origin/index.js";

export interface SshOptions {
  identityFile?: string;
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
}

const MAX_BLOCK = 16 * 1024 * 1024;

/** `64K`, `256K`, `1M` or bytes: a multiple of 4 KiB from 4 KiB to 16 MiB. */
export function parseBlockSize(text: string): number {
  const m = /^(\d+)\s*(k|ki|kib|m|mi|mib)?$/i.exec(text.trim());
  const unit = !m?.[2] ? 1 : m[2][0]!.toLowerCase() === "k" ? 1024 : 1024 * 1024;
  const bytes = m ? Number(m[1]) * unit : Number.NaN;
  if (!(bytes >= 4096 && bytes <= MAX_BLOCK && bytes % 4096 === 0)) {
    throw new UserError(
      `--block-size ${JSON.stringify(text)}: expected a multiple of 4K from 4K to 16M (e.g. 64K, 1M)`,
    );
  }
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
