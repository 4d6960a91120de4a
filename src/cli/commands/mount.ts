import { existsSync } from "node:fs";
import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { printable } from "../../common/printable.js";
import { runDaemon, startDaemon } from "../../daemon/index.js";
import { prepare } from "../../migrate/index.js";
import { discardMigration } from "../../migration/index.js";
import { addCommonOptions, type CommonOpts, commonRequest } from "../options.js";

interface MountOpts extends CommonOpts {
  id?: string;
  images?: string;
  origin?: string;
  background?: boolean;
}

export function registerMount(program: Command): void {
  const cmd = program
    .command("mount")
    .description(
      "serve the files a dump references under a FUSE mount, fetched from the origin on first touch (foreground unless --background)",
    )
    .option("--images <dir>", "CRIU images directory")
    .option(
      "--origin <dest>",
      "where the files are, as for ssh: host, user@host, a Host alias, ssh://user@host[:port]",
    )
    .option("--id <id>", "serve an already planned migration again (e.g. after a daemon crash)")
    .option("--background", "detach; print the migration id and mount point");
  addCommonOptions(cmd).action(async (o: MountOpts) => {
    let id = o.id;
    // Only a migration planned by this very command is removed again when it fails.
    let planned: { cacheDir?: string } | undefined;
    if (id) {
      // A planned migration is served with the settings it was planned with (its manifest);
      // an option given here would be silently ignored, so it is refused instead.
      const given = cmd.options
        .map((opt) => opt.attributeName())
        .filter((name) => !["id", "background"].includes(name))
        .filter((name) => cmd.getOptionValueSource(name) === "cli");
      if (given.length > 0) {
        const flags = given.map(
          (name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
        );
        throw new UserError(
          `mount --id ${id} serves the migration with the settings it was planned with; ${flags.join(", ")} cannot be changed here`,
        );
      }
    } else {
      if (!o.images || !o.origin) {
        throw new UserError("mount needs --images DIR and --origin DEST (as for ssh), or --id ID");
      }
      const request = commonRequest(o);
      const { cacheDir } = request;
      const cacheIsNew = cacheDir !== undefined && !existsSync(cacheDir);
      const { manifest } = await prepare({ imagesDir: o.images, origin: o.origin, ...request });
      id = manifest.id;
      planned = cacheDir && cacheIsNew ? { cacheDir } : {};
      process.stderr.write(
        `migration ${id}: ${manifest.files.filter((f) => f.served).length} file(s) at ${printable(manifest.mountpoint)}\n`,
      );
    }
    try {
      if (o.background) {
        await startDaemon(id);
        process.stdout.write(`${id}\n`);
        return;
      }
      await runDaemon(id);
    } catch (err) {
      if (planned) await discardMigration(id, planned.cacheDir);
      throw err;
    }
  });
}
