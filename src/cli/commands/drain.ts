/**
 * `lazyfs migrate` with several trees (`--pid P1,P2,...` or `--unit NAME`): drain them from the
 * origin in one command and print one combined report. Exit 0 only when every tree runs here.
 */
import type { Command } from "commander";
import { errorMessage, UserError } from "../../common/errors.js";
import { detachMigration } from "../../detach/index.js";
import {
  type DrainResult,
  type DrainSelection,
  drainProcesses,
  type Interruption,
} from "../../migrate/index.js";
import { parsePrefetch } from "../../migration/index.js";
import {
  type CommonOpts,
  type CriuOpts,
  commonRequest,
  criuOptions,
  parsePid,
  positiveInt,
} from "../options.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";
import { parseRemoteChoice } from "./detach.js";

interface DrainOpts extends CommonOpts, CriuOpts {
  from: string;
  pid?: string;
  unit?: string;
  parallel: string;
  onRestored?: string;
  originCriu?: string;
  keepOriginImages?: boolean;
  originSnapshot?: string;
  json?: boolean;
  detach?: boolean;
  detachRemote: string;
}

/** Options that name one migration's own resource: several trees cannot share them. */
const ONE_TREE_ONLY: [keyof DrainOpts, string][] = [
  ["mountpoint", "--mountpoint"],
  ["cache", "--cache"],
  ["metrics", "--metrics"],
  ["originSnapshot", "--origin-snapshot"],
];

export async function drainCommand(
  cmd: Command,
  o: DrainOpts,
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
  const remoteChoice = parseRemoteChoice(o.detachRemote);
  const common = commonRequest(o);
  if (o.detach && cmd.getOptionValueSource("prefetch") === "default") {
    common.serve.prefetch = parsePrefetch("immediate");
  }
  const r = await drainProcesses({
    origin: o.from,
    select,
    parallel,
    interruption,
    ...common,
    criu: criuOptions(o),
    ...(o.onRestored ? { onRestored: o.onRestored } : {}),
    ...(o.originCriu ? { originCriu: o.originCriu } : {}),
    ...(o.keepOriginImages ? { keepOriginImages: true } : {}),
    firstFetchWaitMs: 0,
  });
  // --detach: each migrated tree once it is independent, one after the other.
  const detached = new Map<number, string>();
  if (o.detach) {
    interruption.close();
    for (const t of r.trees) {
      if (!("migrated" in t)) continue;
      try {
        const d = await detachMigration({
          id: t.migrated.id,
          remote: remoteChoice,
          waitMs: 24 * 3_600_000,
          ...(o.criu ? { criuPath: o.criu } : {}),
          criu: criuOptions(o),
        });
        detached.set(t.pid, `detached: pid ${d.pid} on plain files`);
      } catch (err) {
        detached.set(t.pid, `detach failed: ${errorMessage(err)}`);
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

function print(r: DrainResult, o: DrainOpts, detached: Map<number, string>): void {
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
