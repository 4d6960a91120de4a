import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import {
  type Manifest,
  migrationPaths,
  prepare,
  readManifest,
  rewriteForMount,
} from "../../migrate/index.js";
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
    let manifest: Manifest;
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
    }
    const n = await rewriteForMount(manifest, o.out);
    for (const f of manifest.files) {
      if (f.restorePath !== f.originPath) {
        process.stdout.write(`${printable(f.originPath)} -> ${printable(f.restorePath)}\n`);
      }
    }
    process.stderr.write(`rewrote ${n} path(s) into ${o.out} (migration ${manifest.id})\n`);
  });
}
