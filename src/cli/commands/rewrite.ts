import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { checkStateDir } from "../../common/private-files.js";
import { prepare, rewriteForMount } from "../../migrate/index.js";
import {
  discardMigration,
  type Manifest,
  migrationPaths,
  readManifest,
} from "../../migration/index.js";
import { addCommonOptions, type CommonOpts, commonRequest } from "../options.js";
import { printable } from "../table.js";

interface RewriteOpts extends CommonOpts {
  id?: string;
  images?: string;
  origin?: string;
  out: string;
}

export function registerRewrite(program: Command): void {
  const cmd = program
    .command("rewrite")
    .description(
      "copy a dump so that every referenced file missing on this host points into the LazyFS mount (stock CRIU can then restore it)",
    )
    .requiredOption("--out <dir>", "where the rewritten images go")
    .option("--id <id>", "use the plan of a mounted migration")
    .option("--images <dir>", "CRIU images directory (plans anew, with --origin)")
    .option("--origin <url>", "where the files are: ssh://user@host[:port]");
  addCommonOptions(cmd).action(async (o: RewriteOpts) => {
    const out = absoluteOrRelative(o.out);
    await checkStateDir(out, "--out");
    let manifest: Manifest;
    // `--images` plans only for this rewrite: its state is not kept (nothing mounts it).
    let transient = false;
    if (o.id) {
      manifest = await readManifest(migrationPaths(o.id).manifest);
    } else {
      if (!o.images || !o.origin) {
        throw new UserError("rewrite needs --id ID, or --images DIR and --origin ssh://user@host");
      }
      ({ manifest } = await prepare({
        imagesDir: o.images,
        origin: o.origin,
        ...commonRequest(o),
      }));
      transient = true;
    }
    const outIsNew = !existsSync(out);
    let n: number;
    try {
      n = await rewriteForMount(manifest, out);
    } catch (err) {
      if (outIsNew) await rm(out, { recursive: true, force: true });
      throw err;
    } finally {
      if (transient) await discardMigration(manifest.id);
    }
    for (const f of manifest.files) {
      if (f.restorePath !== f.originPath) {
        process.stdout.write(`${printable(f.originPath)} -> ${printable(f.restorePath)}\n`);
      }
    }
    process.stderr.write(
      `rewrote ${n} path(s) into ${printable(out)} (${transient ? `to be served at ${printable(manifest.mountpoint)}` : `migration ${manifest.id}`})\n`,
    );
  });
}

function absoluteOrRelative(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, "") : p;
}
