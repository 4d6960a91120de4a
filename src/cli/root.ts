/**
 * Who may run what: every command that mounts, restores, migrates or talks to a daemon needs
 * root (FUSE with allow_other, CRIU, the root-only state under /var/lib/lazyfs); for another
 * user it is one line, `lazyfs: must be run as root`, before anything is tried. Commands that
 * only read what the user can read anyway (`inspect` of readable images) run for anybody.
 */
import type { Command } from "commander";
import { UserError } from "../common/errors.js";

/** Commands that need no privilege: they only read files the user names. */
export const UNPRIVILEGED_COMMANDS: ReadonlySet<string> = new Set(["inspect", "help"]);

export function requireRootForPrivilegedCommands(program: Command): void {
  program.hook("preAction", (_program, action) => {
    if (UNPRIVILEGED_COMMANDS.has(action.name())) return;
    if ((process.geteuid?.() ?? 0) !== 0) {
      throw new UserError("must be run as root");
    }
  });
}
