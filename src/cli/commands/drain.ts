/**
 * `lazyfs migrate` with several trees (`--pid P1,P2,...` or `--unit NAME`): drain them from the
 * origin in one command and print one combined report. Exit 0 only when every tree runs here.
 */
import type { Command } from "commander";
import { errorMessage, UserError } from "../../common/errors.js";
import { DetachWaitStopped } from "../../detach/index.js";
import {
  type DrainResult,
  type DrainSelection,
  drainProcesses,
  type Interruption,
} from "../../migrate/index.js";
import { parsePid, positiveInt } from "../options.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";
import { parseRemoteChoice } from "./detach.js";
import { detachAfterMigrate, type MigrateOpts, migrateRequestFields } from "./migrate-request.js";

/** Options that name one migration's own resource: several trees cannot share them. */
const ONE_TREE_ONLY: [keyof MigrateOpts, string][] = [
  ["mountpoint", "--mountpoint"],
  ["cache", "--cache"],
  ["metrics", "--metrics"],
  ["originSnapshot", "--origin-snapshot"],
];

export async function drainCommand(
  cmd: Command,
  o: MigrateOpts,
  interruption: Interruption,
): Promise<void> {
  for (const [key, flag] of ONE_TREE_ONLY) {
    if (o[key] !== undefined) {
      throw new UserError(
        `${flag} names one migration's own ${flag.slice(2)}: give it for one --pid only`,
      );
    }
  }
  const select: DrainSelection =
    o.unit !== undefined
      ? { unit: o.unit }
      : { pids: o.pid!.split(",").map((p) => parsePid(p.trim(), "--pid")) };
  const parallel = positiveInt(o.parallel, "--parallel");
  parseRemoteChoice(o.detachRemote);
  const r = await drainProcesses({
    ...migrateRequestFields(cmd, o),
    select,
    parallel,
    interruption,
    firstFetchWaitMs: 0,
  });
  // --detach: each migrated tree once it is independent, one after the other.
  const detached = new Map<number, string>();
  if (o.detach) {
    for (const t of r.trees) {
      if (!("migrated" in t)) continue;
      // A signal ends the waits for independence; the trees stay migrated, on LazyFS.
      try {
        const d = await detachAfterMigrate(t.migrated.id, o, interruption.aborted);
        detached.set(t.pid, `detached: pid ${d.pid} on plain files`);
      } catch (err) {
        detached.set(
          t.pid,
          err instanceof DetachWaitStopped
            ? errorMessage(err)
            : `detach failed: ${errorMessage(err)}`,
        );
      }
    }
  }
  print(r, o, detached);
  const stayed = r.trees.filter((t) => !("migrated" in t));
  if (stayed.length > 0) {
    throw new UserError(
      `${stayed.length} of ${r.trees.length} trees not migrated (pid ${stayed.map((t) => t.pid).join(", ")}); each runs on at ${o.from}`,
    );
  }
}

function print(r: DrainResult, o: MigrateOpts, detached: Map<number, string>): void {
  if (o.json) {
    printJson({
      ...(r.cgroup ? { cgroup: r.cgroup } : {}),
      wallMs: r.wallMs,
      trees: r.trees.map((t) =>
        "migrated" in t
          ? {
              originPid: t.pid,
              id: t.migrated.id,
              pid: t.migrated.pid,
              mountpoint: t.migrated.manifest.mountpoint,
              timeline: t.migrated.timeline,
              ...(detached.has(t.pid) ? { detach: detached.get(t.pid) } : {}),
            }
          : { originPid: t.pid, error: t.error },
      ),
    });
    return;
  }
  const rows = r.trees.map((t) =>
    "migrated" in t
      ? [
          String(t.pid),
          "migrated",
          t.migrated.id,
          String(t.migrated.pid),
          formatMs(t.migrated.timeline.freezeMs),
          formatBytes(t.migrated.timeline.imageBytes),
          detached.get(t.pid) ?? "",
        ]
      : [String(t.pid), "stayed", "", "", "", "", t.error],
  );
  const moved = r.trees.length - r.trees.filter((t) => !("migrated" in t)).length;
  process.stdout.write(
    `${formatTable(["ORIGIN PID", "RESULT", "MIGRATION", "PID HERE", "FREEZE", "IMAGES", "DETAIL"], rows)}\n` +
      `drained${r.cgroup ? ` ${r.cgroup}` : ""}: ${moved} of ${r.trees.length} trees run here (${formatMs(r.wallMs)} in all)\n`,
  );
}
