/**
 * `criu dump` on the origin over SSH: a dump directory there and CRIU's own error lines when
 * it fails (the dump itself runs in a session of its own: dump-session.ts).
 */
import { UserError } from "../common/errors.js";
import { shq } from "../common/shell.js";
import type { SftpOrigin } from "../origin/index.js";

/** Runs a command on the origin; a non-zero exit is a UserError naming `what`. */
export async function runOnOrigin(
  origin: SftpOrigin,
  command: string,
  what: string,
): Promise<string> {
  const r = await origin.exec(command);
  if (r.code !== 0) {
    const detail = (r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ");
    throw new UserError(`${origin.name}: ${what} failed (exit ${r.code}): ${detail}`);
  }
  return r.stdout;
}

/** A new dump directory on the origin: on tmpfs when it has one (CRIU writes faster there). */
export async function makeRemoteDumpDir(origin: SftpOrigin): Promise<string> {
  return (
    await runOnOrigin(
      origin,
      "umask 077; mktemp -d -p /dev/shm lazyfs-dump.XXXXXX 2>/dev/null || mktemp -d /tmp/lazyfs-dump.XXXXXX",
      "mktemp",
    )
  ).trim();
}

export async function removeRemoteDir(origin: SftpOrigin, dir: string): Promise<void> {
  await origin.exec(`rm -rf ${shq(dir)}`).catch(() => {});
}

/** CRIU's `Error (file:line): ...` lines of a log on the origin, joined. */
export async function criuErrorsOnOrigin(origin: SftpOrigin, logFile: string): Promise<string> {
  const r = await origin.exec(`grep -E 'Error \\(' ${shq(logFile)} | tail -5`);
  return r.stdout
    .trim()
    .split("\n")
    .map((l) => l.replace(/^\(\s*[\d.]+\)\s*/, ""))
    .filter(Boolean)
    .join(" | ");
}
