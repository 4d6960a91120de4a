/**
 * `criu dump` on the origin over SSH: a dump directory there, the dump itself started in a
 * shell that is armed before the freeze, and CRIU's own error lines when it fails.
 */
import { UserError } from "../common/errors.js";
import { shq } from "../common/shell.js";
import type { SftpOrigin } from "../origin/index.js";

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

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

/**
 * Starts `argv` on the origin in a shell that waits for a word on stdin: the SSH session
 * set-up (tens of ms with OpenSSH) happens before the process is frozen.
 */
export async function armOnOrigin(
  origin: SftpOrigin,
  argv: string[],
): Promise<{ go: () => void; done: Promise<ExecResult> }> {
  let resolveReady!: (go: () => void) => void;
  let rejectReady!: (err: unknown) => void;
  const ready = new Promise<() => void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const done = origin.exec(`echo armed; read go && exec ${argv.map(shq).join(" ")}`, {
    onChannel: (ch) => {
      let out = "";
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes("armed\n")) {
          ch.off("data", onData);
          resolveReady(() => ch.write("go\n"));
        }
      };
      ch.on("data", onData);
    },
  });
  done.then(
    () => rejectReady(new UserError(`${origin.name}: the dump shell ended before it was armed`)),
    rejectReady,
  );
  return { go: await ready, done };
}
