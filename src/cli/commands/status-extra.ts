/**
 * The parts of `lazyfs status` added for observability: the per-origin table printed under
 * the migrations table, and `--events` (a migration's life from its events.jsonl).
 */
import { existsSync } from "node:fs";
import { UserError } from "../../common/errors.js";
import type { DaemonStatus } from "../../daemon/status.js";
import { type MigrationEvent, readEvents } from "../../migration/events.js";
import { migrationPaths } from "../../migration/state.js";
import { formatTable, printable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";

/** One row per source of bytes of every migration that answered. */
export function originsTable(statuses: readonly DaemonStatus[]): string {
  const rows: string[][] = [];
  for (const s of statuses) {
    for (const o of s.origins ?? []) {
      rows.push([
        s.id,
        o.name,
        o.kind,
        o.state === "released" ? "released (not needed)" : o.state,
        formatBytes(o.bytes),
        String(o.requests),
        String(o.errors),
        String(o.reconnects),
      ]);
    }
  }
  return formatTable(
    ["ID", "SOURCE", "KIND", "STATE", "BYTES", "REQUESTS", "ERRORS", "RECONNECTS"],
    rows,
  );
}

/** Bytes by where they came from, for the migrations table. */
export function sourcesText(s: DaemonStatus): string {
  const t = s.total;
  const parts = [`${formatBytes(t.bytesFromOrigin ?? t.bytesFetched)} origin`];
  if (t.bytesSynthesized) parts.push(`${formatBytes(t.bytesSynthesized)} synthesized`);
  if (t.bytesFromLocalCopy) parts.push(`${formatBytes(t.bytesFromLocalCopy)} local copy`);
  if (t.bytesWritten) parts.push(`${formatBytes(t.bytesWritten)} written`);
  const same = s.identical;
  if (same?.identicalFiles) {
    parts.push(`${same.identicalFiles} identical here (${formatBytes(same.identicalBytes)})`);
  }
  return parts.join(", ");
}

function detail(e: MigrationEvent): string {
  const skip = new Set(["t", "type"]);
  return Object.entries(e)
    .filter(([k, v]) => !skip.has(k) && v !== undefined && v !== null)
    .map(([k, v]) => {
      const text = typeof v === "string" ? printable(v) : JSON.stringify(v);
      return k.endsWith("Ms") && typeof v === "number"
        ? `${k.slice(0, -2)}=${formatMs(v)}`
        : k === "bytes" && typeof v === "number"
          ? `bytes=${formatBytes(v)}`
          : `${k}=${text}`;
    })
    .join(" ");
}

/** `status ID... --events`: each migration's events, oldest first. */
export async function printEvents(ids: readonly string[], json: boolean): Promise<void> {
  const all = await Promise.all(
    ids.map(async (id) => {
      const dir = migrationPaths(id).dir;
      if (!existsSync(dir)) throw new UserError(`no migration ${id} on this host`);
      return { id, events: await readEvents(dir) };
    }),
  );
  if (json) {
    printJson(all);
    return;
  }
  const blocks = all.map(({ id, events }) => {
    if (events.length === 0) return `${id}: no events recorded`;
    const t0 = events[0]!.t;
    const rows = events.map((e) => [
      new Date(e.t).toISOString(),
      e.t === t0 ? "0 ms" : `+${formatMs(e.t - t0)}`,
      e.type,
      detail(e),
    ]);
    return `${id}\n${formatTable(["TIME", "SINCE FIRST", "EVENT", "DETAIL"], rows)}`;
  });
  process.stdout.write(`${blocks.join("\n\n")}\n`);
}
