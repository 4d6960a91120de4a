import type { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
// The files themselves, not the folders' index.js: status loads only what it uses (the whole
// daemon alone costs ~0.3 s of start-up; status stays well under 200 ms).
import { callDaemon } from "../../daemon/control.js";
import { checkHealth, type Health } from "../../daemon/health.js";
import type { DaemonStatus } from "../../daemon/status.js";
import { type DetachedRecord, detachedAlive, readDetached } from "../../detach/detached.js";
import { listMigrations, migrationPaths } from "../../migration/state.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs, formatRate } from "../units.js";
import { originStateText } from "./origin-state.js";
import { originsTable, printEvents, sourcesText } from "./status-extra.js";

type Row = {
  id: string;
  status?: DaemonStatus;
  error?: string;
  /** Whether it is really served (not for a detached one). */
  health?: Health;
  /** A detached migration: no daemon, the process on plain files. */
  detached?: DetachedRecord & { alive: boolean };
};

interface StatusOpts {
  json?: boolean;
  watch?: boolean;
  interval: string;
  events?: boolean;
}

async function collect(ids?: string[]): Promise<Row[]> {
  const known = await listMigrations();
  const unknown = (ids ?? []).filter((id) => !known.includes(id));
  if (unknown.length > 0) {
    throw new UserError(
      `no migration ${unknown.join(", ")} on this host (have: ${known.join(", ") || "none"})`,
    );
  }
  const all = ids && ids.length > 0 ? ids : known;
  return Promise.all(
    all.map(async (id): Promise<Row> => {
      try {
        // During a failover (the supervisor restarting the daemon) this waits for the new one.
        const status = (await callDaemon(
          migrationPaths(id).socket,
          { op: "status" },
          5000,
        )) as DaemonStatus;
        return { id, status, health: await checkHealth(id, status) };
      } catch (err) {
        const d = await readDetached(id);
        if (d) return { id, detached: { ...d, alive: await detachedAlive(d) } };
        const error = err instanceof Error ? err.message : String(err);
        return { id, error, health: await checkHealth(id) };
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
  const verdicts = [
    s.total.refusedFiles ? `${s.total.refusedFiles} refused` : "",
    s.total.changedFiles ? `${s.total.changedFiles} changed` : "",
  ].filter(Boolean);
  const extra = verdicts.length ? ` (${verdicts.join(", ")})` : "";
  if (!d || d.crawled + d.uncrawled === 0) return `${s.files}${extra}`;
  return `${s.files}${extra} + dirs ${d.crawled}/${d.crawled + d.uncrawled} listed`;
}

/** One line per file refused (changed on the origin) or served from changed content. */
function verdictLines(rows: Row[]): string {
  const lines: string[] = [];
  for (const r of rows) {
    for (const f of r.status?.perFile ?? []) {
      if (f.refused) lines.push(`${r.id}: ${f.path}: refused, ${f.refused.reason}`);
      if (f.changed) {
        lines.push(
          `${r.id}: ${f.path}: changed on the origin (${f.changed.reason}), served from the new content`,
        );
      }
    }
  }
  return lines.map((l) => `${l}\n`).join("");
}

/** `ok`, or `full since 10:02:03 (12 requests failed)`. */
function cacheDiskText(s: DaemonStatus): string {
  const d = s.cacheDisk;
  if (!d) return "-";
  if (!d.full || d.fullSinceMs === null) return "ok";
  const since = new Date(d.fullSinceMs).toISOString().slice(11, 19);
  return `full since ${since} (${d.failedRequests} request${d.failedRequests === 1 ? "" : "s"} failed)`;
}

function table(rows: Row[]): string {
  return formatTable(
    [
      "ID",
      "ORIGIN",
      "ORIGIN STATE",
      "PID",
      "DAEMON",
      "SUPERVISOR",
      "RESTARTS",
      "FILES",
      "LOCAL/TOTAL",
      "DIRTY",
      "ONLY ON ORIGIN",
      "PREFETCH",
      "CACHE DISK",
      "BYTES FROM",
      "HEALTH",
    ],
    rows.map((r) => {
      const s = r.status;
      const d = r.detached;
      if (d) {
        const ns = d.nsPid === undefined ? "" : ` (ns ${d.nsPid})`;
        const pid = `${d.pid}${ns}${d.alive ? "" : " (exited)"}`;
        const row = [r.id, "-", "not needed", pid, "-", "-", "-", `plain files in ${d.root}`];
        return [...row, "-", "-", "-", "detached", "-", "-", "ok"];
      }
      const health = r.health?.text ?? "-";
      if (!s) return [r.id, "-", "daemon not running", ...Array<string>(11).fill("-"), health];
      const ns = s.restoredNsPid === undefined ? "" : ` (ns ${s.restoredNsPid})`;
      const pid =
        s.restoredPid === null ? "-" : `${s.restoredPid}${ns}${s.restoredAlive ? "" : " (exited)"}`;
      return [
        s.id,
        s.origin,
        originStateText(s.originState, s.originLink),
        pid,
        String(s.daemonPid),
        s.supervisorPid === null ? "-" : String(s.supervisorPid),
        String(s.serverRestarts),
        filesText(s),
        `${formatBytes(s.total.bytesLocal)}/${formatBytes(s.total.size)}`,
        formatBytes(s.total.bytesDirty),
        formatBytes(s.total.bytesOnOrigin),
        prefetchText(s),
        cacheDiskText(s),
        sourcesText(s),
        health,
      ];
    }),
  );
}

async function watch(ids: string[] | undefined, intervalMs: number): Promise<void> {
  // Only --watch draws bars: a plain status does not load the library.
  const { default: cliProgress } = await import("cli-progress");
  const bars = new cliProgress.MultiBar(
    {
      format:
        "{id} [{bar}] {percentage}% | {local}/{size} local | origin {origin}, {fetched} from it | {prefetch}",
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const byId = new Map<string, SingleBar>();
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
            size: formatBytes(s.total.size),
            fetched: formatBytes(s.total.bytesFromOrigin ?? s.total.bytesFetched),
            origin: originStateText(s.originState, s.originLink),
            prefetch: prefetchText(s),
          }
        : {
            id: r.id,
            local: "-",
            size: "-",
            origin: "-",
            fetched: "-",
            prefetch: "daemon not running",
          };
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
    .option("--events", "the migrations' events (dump, restore, first fetch, ...) in time order")
    .action(async (ids: string[], o: StatusOpts) => {
      if (o.events) {
        await printEvents(ids.length > 0 ? ids : await listMigrations(), !!o.json);
        return;
      }
      if (o.watch && process.stdout.isTTY && !o.json) {
        await watch(ids, Math.max(100, Number(o.interval) || 500));
        return;
      }
      const rows = await collect(ids);
      if (o.json) {
        printJson(
          rows.map((r) =>
            r.status
              ? { ...r.status, health: r.health }
              : r.detached
                ? { id: r.id, detached: r.detached }
                : { id: r.id, error: r.error, health: r.health },
          ),
        );
        return;
      }
      if (rows.length === 0) {
        process.stdout.write("no migrations on this host\n");
        return;
      }
      process.stdout.write(`${table(rows)}\n${verdictLines(rows)}`);
      const live = rows.flatMap((r) => (r.status ? [r.status] : []));
      if (live.length > 0) process.stdout.write(`\n${originsTable(live)}\n`);
    });
}
