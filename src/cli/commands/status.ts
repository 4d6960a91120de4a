import cliProgress from "cli-progress";
import type { Command } from "commander";
import {
  callControl,
  type DaemonStatus,
  type DetachedRecord,
  detachedAlive,
  listMigrations,
  migrationPaths,
  readDetached,
} from "../../migrate/index.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs, formatRate } from "../units.js";

type Row = {
  id: string;
  status?: DaemonStatus;
  error?: string;
  /** A detached migration: no daemon, the process on plain files. */
  detached?: DetachedRecord & { alive: boolean };
};

async function collect(ids?: string[]): Promise<Row[]> {
  const all = ids && ids.length > 0 ? ids : await listMigrations();
  return Promise.all(
    all.map(async (id): Promise<Row> => {
      try {
        const status = (await callControl(migrationPaths(id).socket, {
          op: "status",
        })) as DaemonStatus;
        return { id, status };
      } catch (err) {
        const d = await readDetached(id);
        if (d) return { id, detached: { ...d, alive: await detachedAlive(d) } };
        return { id, error: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
}

function prefetchText(s: DaemonStatus): string {
  const p = s.prefetch;
  const dirsLeft = s.dirs ? s.dirs.uncrawled + s.dirs.pendingFiles : 0;
  if (s.total.bytesOnOrigin === 0 && dirsLeft === 0) return "done";
  if (p.state === "running") {
    const eta = p.etaMs === null ? "" : `, ETA ${formatMs(p.etaMs)}`;
    return `running ${formatRate(p.rateBytesPerSec)}${eta}`;
  }
  return p.mode === "none" ? "off" : p.state;
}

/** Planned files, and lazy directories listed so far (crawled/known). */
function filesText(s: DaemonStatus): string {
  const d = s.dirs;
  if (!d || d.crawled + d.uncrawled === 0) return String(s.files);
  return `${s.files} + dirs ${d.crawled}/${d.crawled + d.uncrawled} listed`;
}

function table(rows: Row[]): string {
  return formatTable(
    [
      "ID",
      "ORIGIN",
      "ORIGIN STATE",
      "PID",
      "FILES",
      "LOCAL/TOTAL",
      "DIRTY",
      "ONLY ON ORIGIN",
      "PREFETCH",
    ],
    rows.map((r) => {
      const s = r.status;
      const d = r.detached;
      if (d) {
        const pid = `${d.pid}${d.alive ? "" : " (exited)"}`;
        return [
          r.id,
          "-",
          "not needed",
          pid,
          `plain files in ${d.root}`,
          "-",
          "-",
          "-",
          "detached",
        ];
      }
      if (!s) return [r.id, "-", "daemon not running", "-", "-", "-", "-", "-", "-"];
      const pid =
        s.restoredPid === null ? "-" : `${s.restoredPid}${s.restoredAlive ? "" : " (exited)"}`;
      return [
        s.id,
        s.origin,
        s.originState === "released" ? "not needed" : s.originState,
        pid,
        filesText(s),
        `${formatBytes(s.total.bytesLocal)}/${formatBytes(s.total.size)}`,
        formatBytes(s.total.bytesDirty),
        formatBytes(s.total.bytesOnOrigin),
        prefetchText(s),
      ];
    }),
  );
}

async function watch(ids: string[] | undefined, intervalMs: number): Promise<void> {
  const bars = new cliProgress.MultiBar(
    {
      format: "{id} [{bar}] {percentage}% | {local}/{total} local | origin {origin} | {prefetch}",
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const byId = new Map<string, cliProgress.SingleBar>();
  let stop = false;
  process.once("SIGINT", () => {
    stop = true;
  });
  while (!stop) {
    for (const r of await collect(ids)) {
      const s = r.status;
      const total = s ? Math.max(1, s.total.size) : 1;
      const payload = s
        ? {
            id: r.id,
            local: formatBytes(s.total.bytesLocal),
            total: formatBytes(s.total.size),
            origin: s.originState === "released" ? "not needed" : s.originState,
            prefetch: prefetchText(s),
          }
        : { id: r.id, local: "-", total: "-", origin: "-", prefetch: "daemon not running" };
      let bar = byId.get(r.id);
      if (!bar) {
        bar = bars.create(total, 0, payload);
        byId.set(r.id, bar);
      }
      bar.setTotal(total);
      bar.update(s ? s.total.bytesLocal : 0, payload);
    }
    await new Promise((res) => setTimeout(res, intervalMs));
  }
  bars.stop();
}

export function registerStatus(program: Command): void {
  program
    .command("status")
    .description(
      "show every migration on this host: files, bytes local/total, dirty, origin state, prefetch",
    )
    .argument("[ids...]", "migration ids (default: all)")
    .option("--json", "print the status as JSON")
    .option("--watch", "live progress bars (in a terminal) until Ctrl-C")
    .option("--interval <ms>", "refresh interval for --watch", "500")
    .action(async (ids: string[], o: { json?: boolean; watch?: boolean; interval: string }) => {
      if (o.watch && process.stdout.isTTY && !o.json) {
        await watch(ids, Math.max(100, Number(o.interval) || 500));
        return;
      }
      const rows = await collect(ids);
      if (o.json) {
        printJson(
          rows.map(
            (r) =>
              r.status ??
              (r.detached ? { id: r.id, detached: r.detached } : { id: r.id, error: r.error }),
          ),
        );
        return;
      }
      if (rows.length === 0) {
        process.stdout.write("no migrations on this host\n");
        return;
      }
      process.stdout.write(`${table(rows)}\n`);
    });
}
