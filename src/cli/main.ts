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
import { requireRootForPrivilegedCommands } from "./root.js";

const program = new Command();
program
  .name("lazyfs")
  .description("Migrate a running Linux process with CRIU; its files follow it on reference")
  .version("0.1.0")
  .exitOverride()
  .configureOutput({ outputError: () => {} });

requireRootForPrivilegedCommands(program);

/**
 * Each command's module, loaded only when needed: a command run loads its own module and
 * what that imports, not every command's (a whole-program load costs ~0.3 s of Node start-up
 * per call, which `lazyfs status` in a loop or a script would pay each time).
 */
const COMMANDS: Record<string, () => Promise<(program: Command) => void>> = {
  inspect: async () => (await import("./commands/inspect.js")).registerInspect,
  mount: async () => (await import("./commands/mount.js")).registerMount,
  rewrite: async () => (await import("./commands/rewrite.js")).registerRewrite,
  restore: async () => (await import("./commands/restore.js")).registerRestore,
  migrate: async () => (await import("./commands/migrate.js")).registerMigrate,
  status: async () => (await import("./commands/status.js")).registerStatus,
  origin: async () => (await import("./commands/origin.js")).registerOrigin,
  unmount: async () => (await import("./commands/unmount.js")).registerUnmount,
  detach: async () => (await import("./commands/detach.js")).registerDetach,
  log: async () => (await import("./commands/log.js")).registerLog,
  metrics: async () => (await import("./commands/metrics.js")).registerMetrics,
  demo: async () => (await import("./commands/demo.js")).registerDemo,
};

/** The command named on the command line (its first word that is not an option), if any. */
const named = process.argv.slice(2).find((arg) => !arg.startsWith("-"));
const versionOnly =
  named === undefined && process.argv.some((a) => a === "-V" || a === "--version");
// Help or a mistyped command: every command is registered, as commander expects.
const wanted =
  named !== undefined && named in COMMANDS ? [named] : versionOnly ? [] : Object.keys(COMMANDS);
for (const register of await Promise.all(wanted.map((name) => COMMANDS[name]!()))) {
  register(program);
}

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
