/**
 * Reading a migration's access log (`--access-log FILE`, written by lazy/access-log.ts):
 * records in time order, filtered by path glob (the policy globs' syntax), operation and
 * caller pid, and following the file as it grows.
 */
import { existsSync } from "node:fs";
import { open } from "node:fs/promises";
import { UserError } from "../common/errors.js";
import { completeLines } from "../common/jsonl.js";
import { matchGlob } from "../fetch/index.js";
import type { AccessRecord } from "../lazy/index.js";
import { migrationPaths, readManifest } from "../migration/index.js";

export interface LogFilter {
  /** Glob as in --policy: without `/` it matches the basename anywhere. */
  path?: string;
  op?: string;
  pid?: number;
}

/** The access log file of migration `id`; a UserError when it has none. */
export async function accessLogOf(id: string): Promise<string> {
  const paths = migrationPaths(id);
  if (!existsSync(paths.dir)) throw new UserError(`no migration ${id} on this host`);
  const m = await readManifest(paths.manifest);
  const file = m.serve.accessLog;
  if (!file) {
    throw new UserError(
      `migration ${id} keeps no access log (start it with --access-log FILE to record one)`,
    );
  }
  return file;
}

export function matches(r: AccessRecord, f: LogFilter): boolean {
  if (f.op !== undefined && r.op !== f.op) return false;
  if (f.pid !== undefined && r.pid !== f.pid) return false;
  return f.path === undefined || matchGlob(r.path, f.path);
}

/** Records of complete lines in `text`; a malformed line is a UserError naming it. */
function parseLines(text: string, file: string, firstLine: number): AccessRecord[] {
  const out: AccessRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === "") continue;
    let r: AccessRecord;
    try {
      r = JSON.parse(line) as AccessRecord;
    } catch {
      throw new UserError(`${file}:${firstLine + i}: not an access log record`);
    }
    if (typeof r.t !== "number" || typeof r.op !== "string") {
      throw new UserError(`${file}:${firstLine + i}: not an access log record`);
    }
    out.push(r);
  }
  return out;
}

/** Every record of `file` matching `filter`, by the time its first request arrived. */
export async function readAccessLog(file: string, filter: LogFilter = {}): Promise<AccessRecord[]> {
  // A line still being written (no newline yet) is left for later.
  return parseLines(await completeLines(file), file, 1)
    .filter((r) => matches(r, filter))
    .sort((a, b) => a.t - b.t);
}

/**
 * Calls `onRecords` with the matching records appended to `file` from byte `from` on, polling
 * every `intervalMs`, until `signal` aborts.
 */
export async function followAccessLog(
  file: string,
  from: number,
  filter: LogFilter,
  onRecords: (r: AccessRecord[]) => void,
  signal: AbortSignal,
  intervalMs = 300,
): Promise<void> {
  let pos = from;
  let line = 1;
  let rest = "";
  while (!signal.aborted) {
    const fh = await open(file, "r").catch(() => undefined);
    if (fh) {
      try {
        const { size } = await fh.stat();
        if (size < pos) pos = 0; // rotated or truncated: start over
        if (size > pos) {
          const buf = Buffer.alloc(size - pos);
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          pos += bytesRead;
          const text = rest + buf.subarray(0, bytesRead).toString("utf8");
          const end = text.lastIndexOf("\n") + 1;
          rest = text.slice(end);
          const recs = parseLines(text.slice(0, end), file, line);
          line += text.slice(0, end).split("\n").length - 1;
          const hits = recs.filter((r) => matches(r, filter));
          if (hits.length > 0) onRecords(hits);
        }
      } finally {
        await fh.close();
      }
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
