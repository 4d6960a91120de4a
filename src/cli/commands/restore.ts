import type { Command } from "commander";
import { UserError } from "../../common/errors.js";
import { pidNamespaceLine, restoreLazily } from "../../migrate/index.js";
import {
  addCommonOptions,
  addCriuOptions,
  type CommonOpts,
  type CriuOpts,
  commonRequest,
  criuOptions,
} from "../options.js";
import { printJson } from "../table.js";

interface RestoreOpts extends CommonOpts, CriuOpts {
  images: string;
  origin: string;
  json?: boolean;
}

export function registerRestore(program: Command): void {
  const cmd = program
    .command("restore")
    .description(
      "restore a dump here with its files served lazily from the origin (plan, mount, rewrite, criu restore -d); prints the restored PID",
    )
    .requiredOption("--images <dir>", "CRIU images directory (copied from the origin host)")
    .requiredOption(
      "--origin <dest>",
      "where the files are, as for ssh: host, user@host, a Host alias, ssh://user@host[:port]",
    )
    .option("--json", "print the result as JSON");
  addCriuOptions(addCommonOptions(cmd)).action(async (o: RestoreOpts) => {
    if (!o.images) throw new UserError("--images needs a directory");
    const r = await restoreLazily({
      imagesDir: o.images,
      origin: o.origin,
      ...commonRequest(o),
      criu: criuOptions(o),
    });
    if (o.json) {
      printJson({
        id: r.id,
        pid: r.pid,
        ...(r.pidNamespace ? { pidNamespace: r.pidNamespace } : {}),
        mountpoint: r.manifest.mountpoint,
        served: r.manifest.files.filter((f) => f.served).length,
        rewritten: r.rewritten,
        planMs: r.planMs,
        mountMs: r.mountMs,
        rewriteMs: r.rewriteMs,
        criuRestoreMs: r.criuRestoreMs,
      });
    } else {
      process.stdout.write(`${r.pid}\n`);
      if (r.pidNamespace) process.stderr.write(`${pidNamespaceLine(r.pid, r.pidNamespace)}\n`);
      process.stderr.write(
        `restored pid ${r.pid} as migration ${r.id}; ${r.rewritten} path(s) served from ${r.manifest.mountpoint}\n`,
      );
    }
  });
}
