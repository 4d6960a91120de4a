#!/usr/bin/env node
/**
 * The `lazyfs` command line. Each command lives in `commands/<name>.ts` and exports a function
 * that registers it on the program; this file only wires them up and turns errors into one
 * line: a UserError becomes `lazyfs: <message>` and its exit code, a usage error from commander
 * becomes `lazyfs: <message>` and exit code 2. Anything else is a bug and keeps its trace.
 */
import { Command, CommanderError } from "commander";
import { UserError } from "../common/errors.js";
import { printable } from "../common/printable.js";
import { registerDemo } from "./commands/demo.js";
import { registerDetach } from "./commands/detach.js";
import { registerInspect } from "./commands/inspect.js";
import { registerLog } from "./commands/log.js";
import { registerMetrics } from "./commands/metrics.js";
import { registerMigrate } from "./commands/migrate.js";
import { registerMount } from "./commands/mount.js";
import { registerOrigin } from "./commands/origin.js";
import { registerRestore } from "./commands/restore.js";
import { registerRewrite } from "./commands/rewrite.js";
import { registerStatus } from "./commands/status.js";
import { registerUnmount } from "./commands/unmount.js";
import { requireRootForPrivilegedCommands } from "./root.js";

const program = new Command();
program
  .name("lazyfs")
  .description("Migrate a running Linux process with CRIU; its files follow it on reference")
  .version("0.1.0")
  .exitOverride()
  .configureOutput({ outputError: () => {} });

requireRootForPrivilegedCommands(program);
registerInspect(program);
registerMount(program);
registerRewrite(program);
registerRestore(program);
registerMigrate(program);
registerStatus(program);
registerOrigin(program);
registerUnmount(program);
registerDetach(program);
registerLog(program);
registerMetrics(program);
registerDemo(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof UserError) {
    process.stderr.write(`lazyfs: ${printable(err.message)}\n`);
    process.exit(err.exitCode);
  }
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) process.exit(0);
    process.stderr.write(
      `lazyfs: ${printable(err.message.replace(/^error: /, "").split("\n")[0]!)}\n`,
    );
    process.exit(2);
  }
  throw err;
}
