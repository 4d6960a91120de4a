import { rm } from "node:fs/promises";
import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { recoverStaleMount } from "../../fuse/index.js";
import {
  callControl,
  endDetached,
  listMigrations,
  migrationPaths,
  readDetached,
  readManifest,
} from "../../migrate/index.js";

async function unmountOne(id: string, force: boolean, purge: boolean): Promise<void> {
  const paths = migrationPaths(id);
  if (await readDetached(id)) {
    // No LazyFS is left; only the record, and the process's plain files while it runs.
    const r = await endDetached(id, purge);
    process.stdout.write(
      `${id}: detached migration ended${r.purged ? `; removed ${paths.dir} (its plain files too)` : ""}\n`,
    );
    return;
  }
  try {
    const r = (await callControl(paths.socket, { op: "unmount", force })) as {
      unmounted: string;
      holders: number;
    };
    process.stdout.write(
      `${id}: unmounted ${r.unmounted}${r.holders > 0 ? ` (forced; ${r.holders} process(es) still had files open)` : ""}\n`,
    );
  } catch (err) {
    if (!(err instanceof UserError) || !/no LazyFS daemon is running/.test(err.message)) throw err;
    // The daemon is gone (crashed or killed): clear a stale mount it may have left.
    const manifest = await readManifest(paths.manifest).catch(() => undefined);
    const stale = manifest ? await recoverStaleMount(manifest.mountpoint) : false;
    process.stdout.write(
      `${id}: no daemon was running${stale ? `; detached the stale mount ${manifest!.mountpoint}` : ""}\n`,
    );
  }
  if (purge) {
    // Give the daemon a moment to finish closing its cache before it disappears.
    await new Promise((r) => setTimeout(r, 200));
    await rm(paths.dir, { recursive: true, force: true });
    process.stdout.write(`${id}: removed ${paths.dir} (cache and images)\n`);
  }
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
