import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { callControl, listMigrations, migrationPaths } from "../../migrate/index.js";

async function unmountOne(id: string, force: boolean): Promise<void> {
  const r = (await callControl(migrationPaths(id).socket, { op: "unmount", force })) as {
    unmounted: string;
    holders: number;
  };
  process.stdout.write(
    `${id}: unmounted ${r.unmounted}${r.holders > 0 ? ` (forced; ${r.holders} process(es) still had files open)` : ""}\n`,
  );
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
    .action(async (id: string | undefined, o: { force?: boolean; all?: boolean }) => {
      const ids = await listMigrations();
      let targets: string[];
      if (o.all) targets = ids;
      else if (id) {
        if (!ids.includes(id))
          throw new UserError(
            `no migration ${id} on this host (have: ${ids.join(", ") || "none"})`,
          );
        targets = [id];
      } else if (ids.length === 1) targets = ids;
      else
        throw new UserError(`name the migration to unmount: ${ids.join(", ") || "there is none"}`);
      for (const t of targets) await unmountOne(t, o.force ?? false);
    });
}
