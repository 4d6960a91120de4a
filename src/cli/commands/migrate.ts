import type { Command } from "commander";
import { errorMessage, UserError } from "../../common/errors.js";
import { type DetachResult, DetachWaitStopped } from "../../detach/index.js";
import { Interruption, migrateProcess, pidNamespaceLine } from "../../migrate/index.js";
import { parseSnapshotMode } from "../../origin-host/index.js";
import { addCommonOptions, addCriuOptions, parsePid } from "../options.js";
import { formatTable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";
import { detachRows, parseRemoteChoice } from "./detach.js";
import { drainCommand } from "./drain.js";
import { migrateContainerCommand } from "./migrate-container.js";
import { detachAfterMigrate, type MigrateOpts, migrateRequestFields } from "./migrate-request.js";

function originCriuText(c: { source: string; pushedBytes: number }): string {
  if (c.source === "pushed") return `pushed there by this migration, ${formatBytes(c.pushedBytes)}`;
  if (c.source === "cached") return "pushed there by an earlier migration";
  return c.source === "explicit" ? "--origin-criu" : "found there";
}

export function registerMigrate(program: Command): void {
  const cmd = program
    .command("migrate")
    .description(
      "run on the target: checkpoint PID on the origin over SSH, pull the images, restore it here with its files following on reference",
    )
    .requiredOption(
      "--from <dest>",
      "the origin host as for ssh: host, user@host, a Host alias, ssh://user@host[:port]",
    )
    .option(
      "--pid <pid[,pid...]>",
      "root of the process tree to migrate (on the origin); several, comma-separated, drain many trees in one command",
    )
    .option(
      "--unit <name>",
      "migrate every process tree of a systemd unit on the origin (or of a cgroup: --unit /path/in/sys/fs/cgroup)",
    )
    .option("--parallel <n>", "with several trees: how many migrate at once", "4")
    .option(
      "--container <name|id>",
      "migrate a running podman container instead of a process tree: its image and volumes follow on reference",
    )
    .option(
      "--origin-criu <path>",
      "CRIU on the origin (default: $LAZYFS_CRIU, /opt/lazyfs/criu, PATH)",
    )
    .option("--keep-origin-images", "keep the dump directory on the origin")
    .option(
      "--origin-snapshot <mode>",
      "reflink: clone the files read from the origin at the dump (btrfs, xfs) and read the clones, so later changes there do not matter; auto: the same where the file system can, else without (a warning); none (default)",
    )
    .option(
      "--on-restored <command>",
      "shell command run here once the process runs here, before its original is ended (e.g. move a service address); $LAZYFS_PID (host pid), $LAZYFS_ID (and $LAZYFS_NS_PID in a new pid namespace) are set; failure aborts the migration",
    )
    .option(
      "--detach",
      "once independent, detach: plain local files, no LazyFS left (implies --prefetch immediate unless given)",
    )
    .option(
      "--detach-remote <what>",
      "with --detach: remote-policy files, refuse or copy",
      "refuse",
    )
    .option("--json", "print the result as JSON");
  addCriuOptions(addCommonOptions(cmd)).action(async (o: MigrateOpts) => {
    // Held until the result is printed: a migration that completed says so, whatever came.
    const interruption = Interruption.listen();
    try {
      const pids = o.pid?.split(",");
      const chosen = [o.pid, o.unit, o.container].filter((v) => v !== undefined).length;
      if (chosen !== 1) {
        throw new UserError(
          "migrate needs exactly one of --pid PID[,PID...], --unit NAME and --container NAME|ID",
        );
      }
      if (o.container !== undefined) await migrateContainerCommand(o.container, o);
      else if (o.unit !== undefined || (pids && pids.length > 1)) {
        await drainCommand(cmd, o, interruption);
      } else await migrate(cmd, o, interruption);
    } finally {
      interruption.close();
    }
  });
}

/** The migration (and `--detach`), then its result printed. */
async function migrate(cmd: Command, o: MigrateOpts, interruption: Interruption): Promise<void> {
  // Checked before anything is done: a bad value must not cost a migration.
  parseRemoteChoice(o.detachRemote);
  const r = await migrateProcess({
    ...migrateRequestFields(cmd, o),
    pid: parsePid(o.pid!, "--pid"),
    ...(o.originSnapshot ? { originSnapshot: parseSnapshotMode(o.originSnapshot) } : {}),
    firstFetchWaitMs: 1000,
    interruption,
  });
  const t = r.timeline;
  if (r.pidNamespace) process.stderr.write(`${pidNamespaceLine(r.pid, r.pidNamespace)}\n`);
  let detached: DetachResult | undefined;
  /** Why `--detach` was not done: a signal ended its wait (the migration stands). */
  let notDetached: string | undefined;
  if (o.detach) {
    // The wait for independence may be long: a signal ends it, and the command ends as the
    // completed migration it is (its output, exit 0). The detach itself, once begun, is
    // finished first (the signals stay caught).
    detached = await detachAfterMigrate(r.id, o, interruption.aborted).catch((err: unknown) => {
      if (err instanceof DetachWaitStopped) {
        notDetached = err.message;
        return undefined;
      }
      throw new UserError(
        `migrated: pid ${r.pid} runs here as migration ${r.id}, but detach failed: ${errorMessage(err)}`,
        { cause: err },
      );
    });
  }
  if (notDetached) process.stderr.write(`lazyfs: ${notDetached}\n`);
  if (o.json) {
    printJson({
      id: r.id,
      pid: r.pid,
      ...(r.pidNamespace ? { pidNamespace: r.pidNamespace } : {}),
      mountpoint: r.manifest.mountpoint,
      criu: r.criu,
      originKept: r.originKept,
      timeline: t,
      ...(detached ? { detach: detached } : {}),
    });
    return;
  }
  const first = t.firstFetchMs === null ? "none yet" : `+${formatMs(t.firstFetchMs)} after restore`;
  process.stdout.write(
    `${formatTable(
      ["STEP", "TIME", "DETAIL"],
      [
        [
          "dump",
          formatMs(t.dumpMs),
          `criu dump of pid ${o.pid} on ${o.from} (CRIU ${r.criu.origin.version}, ${originCriuText(r.criu.origin)}: ${r.criu.origin.path})`,
        ],
        [
          "image transfer",
          formatMs(t.transferMs),
          `${formatBytes(t.imageBytes)} of images over SFTP`,
        ],
        [
          "restore",
          formatMs(t.restoreMs),
          `plan + mount + rewrite + criu restore (CRIU ${r.criu.target.version}: ${r.criu.target.path}; ${r.rewritten} paths into ${r.manifest.mountpoint})`,
        ],
        ...(o.originSnapshot && o.originSnapshot !== "none"
          ? [
              [
                "origin snapshot",
                formatMs(t.snapshotMs),
                `${t.snapshotFiles} file(s) cloned on the origin at the dump (part of the image transfer)`,
              ],
            ]
          : []),
        ...(o.onRestored ? [["--on-restored", formatMs(t.onRestoredMs), o.onRestored]] : []),
        [
          "end original",
          formatMs(t.endOriginMs),
          r.originKept === "stopped"
            ? `kept stopped on the origin until the restore here succeeded, then killed`
            : "ended at the dump (origin and target share one pid namespace)",
        ],
        ["freeze", formatMs(t.freezeMs), "dump start to the process running here"],
        ["first origin fetch", first, ""],
      ],
    )}\nmigrated: pid ${r.pid} runs here as migration ${r.id}\n`,
  );
  if (detached) {
    process.stdout.write(
      `${formatTable(["DETACH STEP", "TIME", "DETAIL"], detachRows(detached))}\ndetached: pid ${detached.pid} runs on plain files; no LazyFS is left for ${r.id}\n`,
    );
  }
}
