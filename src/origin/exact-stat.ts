/**
 * What SFTP does not tell about a file: its inode number, its status-change time and times
 * in nanoseconds. `stat` of many paths in one shell command on the origin, and the check that
 * a file is still the one a checkpoint recorded.
 */
import { shq } from "../common/shell.js";
import type { OriginStat } from "./types.js";

/** `stat -L --printf` format of one line per path (`-` for a path that is not there). */
export const EXACT_STAT_FORMAT = "%i %s %f %u %g %.9X %.9Y %.9Z";

/** Shell text printing one EXACT_STAT_FORMAT line (or `-`) per path, in order. */
export function exactStatScript(paths: readonly string[]): string {
  if (paths.length === 0) return "true";
  return `for p in ${paths.map(shq).join(" ")}; do stat -L --printf '${EXACT_STAT_FORMAT}\\n' -- "$p" 2>/dev/null || echo -; done`;
}

/** Parses one EXACT_STAT_FORMAT line; undefined for `-` or garbage. */
export function parseExactStat(line: string | undefined): OriginStat | undefined {
  const f = (line ?? "-").trim().split(" ");
  if (f.length !== 8) return undefined;
  const mode = Number.parseInt(f[2]!, 16);
  const st: OriginStat = {
    ino: Number(f[0]),
    size: Number(f[1]),
    mode,
    uid: Number(f[3]),
    gid: Number(f[4]),
    atimeMs: Number(f[5]) * 1000,
    mtimeMs: Number(f[6]) * 1000,
    ctimeMs: Number(f[7]) * 1000,
    isDirectory: (mode & 0o170000) === 0o040000,
  };
  return Number.isFinite(st.size) && Number.isFinite(st.mtimeMs) ? st : undefined;
}

/** The file identity a checkpoint records and every later origin read is checked against. */
export interface FileIdentity {
  size: number;
  /** Nanosecond precision (as a float of ms) when taken with `stat`. */
  mtimeMs: number;
  ctimeMs?: number;
  ino?: number;
}

const NS_SLACK_MS = 0.0005; // float noise of `sec.nsec * 1000`

/**
 * Why `now` is not the file `expect` describes, or undefined when it is. When either side
 * comes from SFTP (no ctime, no inode: whole seconds) mtimes are compared in whole seconds;
 * two exact ones to the nanosecond, with inode and ctime.
 */
export function identityDiffers(expect: FileIdentity, now: OriginStat): string | undefined {
  if (now.size !== expect.size) return `size ${expect.size} -> ${now.size}`;
  const exact = now.ctimeMs !== undefined && expect.ctimeMs !== undefined;
  const mtimeChanged = exact
    ? Math.abs(now.mtimeMs - expect.mtimeMs) > NS_SLACK_MS
    : Math.floor(now.mtimeMs / 1000) !== Math.floor(expect.mtimeMs / 1000);
  if (mtimeChanged) {
    return `mtime ${new Date(expect.mtimeMs).toISOString()} -> ${new Date(now.mtimeMs).toISOString()}`;
  }
  if (exact && expect.ino !== undefined && now.ino !== undefined && now.ino !== expect.ino) {
    return `inode ${expect.ino} -> ${now.ino} (replaced)`;
  }
  if (
    exact &&
    expect.ctimeMs !== undefined &&
    Math.abs(now.ctimeMs! - expect.ctimeMs) > NS_SLACK_MS
  ) {
    return `ctime ${new Date(expect.ctimeMs).toISOString()} -> ${new Date(now.ctimeMs!).toISOString()}`;
  }
  return undefined;
}

/**
 * Exact stats of paths asked for one at a time, run as few shell commands as possible: the
 * paths asked while one command runs go together in the next (an SSH server allows only a
 * few sessions per connection: 10 with OpenSSH's default MaxSessions).
 */
export class ExactStatBatcher {
  private queue = new Map<
    string,
    { resolve(st: OriginStat | undefined): void; reject(e: unknown): void }[]
  >();
  private running = false;

  constructor(private readonly run: (script: string) => Promise<string>) {}

  stat(path: string): Promise<OriginStat | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.queue.get(path) ?? [];
      waiting.push({ resolve, reject });
      this.queue.set(path, waiting);
      if (!this.running) setImmediate(() => void this.flush());
    });
  }

  private async flush(): Promise<void> {
    if (this.running || this.queue.size === 0) return;
    this.running = true;
    const batch = this.queue;
    this.queue = new Map();
    const paths = [...batch.keys()];
    try {
      const lines = (await this.run(exactStatScript(paths))).split("\n");
      paths.forEach((p, i) => {
        const st = parseExactStat(lines[i]);
        for (const w of batch.get(p)!) w.resolve(st);
      });
    } catch (err) {
      for (const ws of batch.values()) for (const w of ws) w.reject(err);
    } finally {
      this.running = false;
      if (this.queue.size > 0) void this.flush();
    }
  }
}
