import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { type DetachResult, detachMigration, type RemoteChoice } from "../../detach/index.js";
import { listMigrations } from "../../migration/index.js";
import { absoluteDir, addCriuOptions, type CriuOpts, criuOptions } from "../options.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";

interface DetachOpts extends CriuOpts {
  wait?: boolean | string;
  remote: string;
  dir?: string;
  criu?: string;
  json?: boolean;
}

/** `--wait` alone waits an hour; `--wait MS` that long. */
export function parseWait(v: boolean | string | undefined): number {
  if (v === undefined || v === false) return 0;
  if (v === true) return 3_600_000;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`--wait ${v}: expected milliseconds`);
  return n;
}

export function parseRemoteChoice(v: string): RemoteChoice {
  if (v === "copy" || v === "refuse") return v;
  throw new UserError(`--remote ${v}: expected copy or refuse`);
}

export function detachRows(r: DetachResult): string[][] {
  const t = r.timeline;
  const m = r.materialized;
  const how = m.cloned > 0 ? `${m.linked} linked, ${m.cloned} cloned` : `${m.linked} linked`;
  return [
    ["wait", formatMs(t.waitMs), "for independence"],
    ["dump", formatMs(t.dumpMs), "criu dump inside the process's mount namespace"],
    [
      "materialize",
      formatMs(t.materializeMs),
      `${m.files} files (${how}), ${m.dirs} dirs, ${m.symlinks} symlinks into ${r.root}${m.bytesThroughMount > 0 ? `; ${formatBytes(m.bytesThroughMount)} read through the mount` : ""}`,
    ],
    [
      "restore",
      formatMs(t.criuRestoreMs),
      `criu restore with ${r.binds.join(", ")} bound from ${r.root}`,
    ],
    ["freeze", formatMs(t.freezeMs), "the process was stopped this long"],
    ["stop daemon", formatMs(t.stopDaemonMs), "daemon exited, mount gone"],
    ["cleanup", formatMs(t.cleanupMs), "cache names and images removed"],
  ];
}

export function registerDetach(program: Command): void {
  const cmd = program
    .command("detach")
    .description(
      "once a migration is independent: make its files plain local files at the same paths, move the process onto them (local CRIU dump + restore) and stop LazyFS",
    )
    .argument("[id]", "migration id (default: the only one)")
    .option("--wait [ms]", "wait for independence (default: refuse if the origin is still needed)")
    .option(
      "--remote <what>",
      "files under policy remote: refuse (default) or copy (their current content becomes local)",
      "refuse",
    )
    .option("--dir <dir>", "where the plain files go (default <state>/<id>/root)")
    .option("--criu <path>", "CRIU binary on this host")
    .option("--json", "print the result as JSON");
  addCriuOptions(cmd).action(async (id: string | undefined, o: DetachOpts) => {
    const ids = await listMigrations();
    if (!id) {
      if (ids.length !== 1) {
        throw new UserError(`name the migration to detach: ${ids.join(", ") || "there is none"}`);
      }
      id = ids[0]!;
    }
    const root = absoluteDir(o.dir, "--dir");
    const r = await detachMigration({
      id,
      remote: parseRemoteChoice(o.remote),
      waitMs: parseWait(o.wait),
      ...(root ? { root } : {}),
      ...(o.criu ? { criuPath: o.criu } : {}),
      criu: criuOptions(o),
    });
    if (o.json) {
      printJson(r);
      return;
    }
    process.stdout.write(
      `${formatTable(["STEP", "TIME", "DETAIL"], detachRows(r))}\ndetached: pid ${r.pid} runs on plain files; no LazyFS is left for ${r.id}\n`,
    );
  });
}
