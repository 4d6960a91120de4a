import { readFile, rmdir } from "node:fs/promises";
import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { stopDaemon } from "../../daemon/index.js";
import { endDetached, readDetached } from "../../detach/index.js";
import { recoverStaleMount } from "../../fuse/index.js";
import {
  discardMigration,
  listMigrations,
  migrationPaths,
  readManifest,
} from "../../migration/index.js";
import { printable } from "../table.js";

/** Removes LazyFS's default mount point /lazyfs/<id> when it is left empty. */
async function removeDefaultMountpoint(id: string, mountpoint: string | undefined) {
  const paths = migrationPaths(id);
  if (mountpoint === paths.defaultMountpoint) await rmdir(mountpoint).catch(() => {});
}

async function unmountOne(id: string, force: boolean, purge: boolean): Promise<void> {
  const paths = migrationPaths(id);
  if (await readDetached(id)) {
    // No LazyFS is left; only the record, and the process's plain files while it runs.
    const r = await endDetached(id, purge);
    process.stdout.write(
      `${id}: detached migration ended${r.purged ? `; removed ${printable(paths.dir)} (its plain files too)` : ""}\n`,
    );
    return;
  }
  const manifest = await readManifest(paths.manifest).catch(() => undefined);
  try {
    // Returns once the daemon and its supervisor are gone, and with them the mount point.
    const r = await stopDaemon(paths.socket, { force, waitMs: UNMOUNT_WAIT_MS });
    if (manifest && (await isMounted(manifest.mountpoint))) {
      await recoverStaleMount(manifest.mountpoint);
    }
    await removeDefaultMountpoint(id, manifest?.mountpoint);
    process.stdout.write(
      `${id}: unmounted ${printable(r.unmounted ?? "-")}${r.holders > 0 ? ` (forced; ${r.holders} process(es) still had files open)` : ""}\n`,
    );
  } catch (err) {
    if (!(err instanceof UserError) || !/no LazyFS daemon is running/.test(err.message)) throw err;
    // The daemon is gone (crashed or killed): clear a stale mount it may have left.
    const stale = manifest ? await recoverStaleMount(manifest.mountpoint) : false;
    await removeDefaultMountpoint(id, manifest?.mountpoint);
    process.stdout.write(
      `${id}: no daemon was running${stale ? `; detached the stale mount ${printable(manifest!.mountpoint)}` : ""}\n`,
    );
  }
  if (purge) {
    await discardMigration(id, manifest?.cacheDir);
    const custom = manifest && !manifest.cacheDir.startsWith(`${paths.dir}/`);
    process.stdout.write(
      `${id}: removed ${printable(paths.dir)} (cache and images)${custom ? ` and LazyFS's files in ${printable(manifest.cacheDir)}` : ""}\n`,
    );
  }
}

/** How long `unmount` waits for the daemon to flush, unmount and exit before killing it. */
const UNMOUNT_WAIT_MS = 60_000;

async function isMounted(mountpoint: string): Promise<boolean> {
  const table = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  return table.split("\n").some((l) => l.split(" ")[4] === mountpoint);
}

export function registerUnmount(program: Command): void {
  program
    .command("unmount")
    .alias("stop")
    .description(
      "stop serving a migration; refuses while a process still uses its files unless --force",
    )
    .argument("[id]", "migration id (default: the only one)")
    .option("-f, --force", "unmount even though processes still have files open there")
    .option("--all", "every migration on this host")
    .option("--purge", "also delete the migration's cache and images (data written there is lost)")
    .action(
      async (id: string | undefined, o: { force?: boolean; all?: boolean; purge?: boolean }) => {
        const ids = await listMigrations();
        let targets: string[];
        if (o.all) targets = ids;
        else if (id) {
          if (!ids.includes(id)) {
            throw new UserError(
              `no migration ${id} on this host (have: ${ids.join(", ") || "none"})`,
            );
          }
          targets = [id];
        } else if (ids.length === 1) targets = ids;
        else
          throw new UserError(
            `name the migration to unmount: ${ids.join(", ") || "there is none"}`,
          );
        for (const t of targets) await unmountOne(t, o.force ?? false, o.purge ?? false);
      },
    );
}
