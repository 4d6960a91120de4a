/**
 * The engine's figures, read from its files and changing nothing: per file, its size, the bytes
 * here, dirty and still only on the origin, where its bytes came from and the integrity
 * verdict; the totals; per source; prefetch and the crawlers' progress; and whether the
 * engine is independent (no byte a file may need is left only on the origin).
 */
import { ABSENT, DIRTY, PRESENT } from "../store/blockfile.js";
import { type Accounting, sumCounters } from "./accounting.js";
import type { Integrity } from "./integrity.js";
import type { Prefetcher } from "./prefetch.js";
import type { EngineStatus, Entry, FileStatus } from "./types.js";

/** Bytes of `e` that are only on the origin (all of a `remote` file: it lives there). */
export function bytesOnOrigin(e: Entry): number {
  if (!e.blocks) return e.remoteSize;
  return e.dependsOnOrigin ? e.blocks.bytesIn(ABSENT) : 0;
}

/** No file has a byte only on the origin, and none is `remote` (the crawlers are asked apart). */
export function filesIndependent(entries: Iterable<Entry>): boolean {
  for (const e of entries) if (bytesOnOrigin(e) > 0 || !e.blocks) return false;
  return true;
}

/** The engine's status (see EngineStatus in types.ts). */
export function engineStatus(
  entries: Iterable<Entry>,
  integrity: Integrity,
  acct: Accounting,
  prefetch: Prefetcher,
): EngineStatus {
  const files: FileStatus[] = [];
  for (const e of entries) {
    const b = e.blocks;
    files.push({
      id: e.meta.id,
      path: e.meta.originPath,
      policy: e.meta.policy,
      size: b ? b.size : e.remoteSize,
      bytesLocal: b ? b.bytesIn(PRESENT) + b.bytesIn(DIRTY) : 0,
      bytesDirty: b ? b.bytesIn(DIRTY) : 0,
      bytesOnOrigin: bytesOnOrigin(e),
      ...e.stats,
      ...integrity.statusOf(e.meta.id),
    });
  }
  const sum = (k: "size" | "bytesLocal" | "bytesDirty" | "bytesOnOrigin") =>
    files.reduce((n, f) => n + f[k], 0);
  const total = {
    size: sum("size"),
    bytesLocal: sum("bytesLocal"),
    bytesDirty: sum("bytesDirty"),
    bytesOnOrigin: sum("bytesOnOrigin"),
    ...sumCounters([...files, acct.retired]),
    refusedFiles: files.filter((f) => f.refused).length,
    changedFiles: files.filter((f) => f.changed).length,
  };
  return {
    files,
    total,
    origins: acct.status(),
    prefetch: {
      mode: prefetch.mode,
      state: prefetch.state,
      bytesOnOrigin: total.bytesOnOrigin,
    },
    dirs: prefetch.crawlProgress(),
    independent:
      prefetch.crawlsDone() && files.every((f) => f.bytesOnOrigin === 0 && f.policy !== "remote"),
  };
}
