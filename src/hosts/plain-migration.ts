/**
 * The baseline migration LazyFS is compared against: plain CRIU with the files already on the
 * target. CRIU dumps the process inside the origin's namespaces, the images (plus any file
 * the process was writing) go over the link, and CRIU restores inside the target's.
 *
 * CRIU facts this relies on (CRIU 4.1, found with the tests in test/hosts):
 * - A workload started by Host.startWorkload (own session, stdio on files, nothing else open)
 *   dumps with just `dump -t PID -D DIR`: no --shell-job (it has no controlling terminal and
 *   is its own session leader), no --ext-unix-sk, no --tcp-established. The process is in the
 *   same mount and net namespaces as the criu that dumps it, so CRIU dumps no namespace and
 *   the restore happens in whatever namespaces criu runs in (the target's).
 * - The dump SIGKILLs the original, and restore gives the task its old pid back; that pid must
 *   be reaped first (waitPidFree). startWorkload makes the original a child of this Node
 *   process, which reaps it at once; this machine's pid 1 reaps orphans only lazily (about
 *   1-2 s later), so an orphan's pid stays taken for a while.
 * - `-d` (restore detached) cannot be combined with `--exec-cmd` ("--restore-detached and
 *   --exec-cmd cannot be used together"), and with `-d` the restored task becomes an orphan
 *   nobody here waits for. So restore runs without -d, with `--exec-cmd -- <reaper>`: once
 *   the tree is restored criu execs the reaper in its own process, which thus stays the
 *   restored task's parent, prints "restored" (the end of the restore, for restoreMs), reaps
 *   it and exits with its exit code. `--pidfile` gives the restored pid.
 * - Regular files must exist on the target at the same paths with the same size as at dump
 *   time (CRIU checks the size), so a file being appended to is copied after the dump.
 */
import { performance } from "node:perf_hooks";
import type { Host } from "./host.js";
import { CommandError, waitForMarker, watch } from "./run.js";
import { CRIU_BIN, PYTHON, processGoneOrZombie, sleep } from "./state.js";
import { sendFiles } from "./transfer.js";

const DUMP_TIMEOUT_MS = 600_000;
const RESTORE_TIMEOUT_MS = 600_000;

const REAPER = `
import os, sys
print("restored", flush=True)
code = 0
while True:
    try:
        _, status = os.wait()
    except ChildProcessError:
        break
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
sys.exit(code)
`;

export interface RestoredProcess {
  pid: number;
  /** Resolves with the restored process's exit code (128+signal if a signal ended it). */
  exited: Promise<number>;
}

async function logTail(host: Host, file: string): Promise<string> {
  const res = await host.exec("tail", ["-n", "8", file], { allowFailure: true });
  return res.code === 0 ? res.stdout.trim().split("\n").join(" | ") : "(no log)";
}

/** `criu dump -t pid -D dir` inside `host`; the process is killed once dumped. */
export async function dumpInHost(host: Host, pid: number, dir: string, criu = CRIU_BIN) {
  await host.exec("mkdir", ["-p", dir]);
  try {
    await host.exec(criu, ["dump", "-t", String(pid), "-D", dir, "-o", "dump.log", "-v4"], {
      timeoutMs: DUMP_TIMEOUT_MS,
    });
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    throw new Error(
      `criu dump of ${pid} on ${host.name} failed: ${await logTail(host, `${dir}/dump.log`)}`,
    );
  }
}

/** Waits until `pid` is reaped, so that CRIU restore can give it out again. */
export async function waitPidFree(pid: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let state = await processGoneOrZombie(pid);
  while (state !== "gone") {
    if (Date.now() > deadline) {
      throw new Error(
        `pid ${pid} is still ${state === "zombie" ? "a zombie nobody reaps" : "running"}; CRIU restore needs it free`,
      );
    }
    await sleep(2);
    state = await processGoneOrZombie(pid);
  }
}

/** `criu restore -D dir` inside `host`; resolves once the process runs again. */
export async function restoreInHost(
  host: Host,
  dir: string,
  criu = CRIU_BIN,
): Promise<RestoredProcess> {
  const pidfile = `${dir}/restored.pid`;
  const w = watch(
    host.spawn(criu, [
      "restore",
      "-D",
      dir,
      "-o",
      "restore.log",
      "-v4",
      "--pidfile",
      pidfile,
      "--exec-cmd",
      "--",
      PYTHON,
      "-c",
      REAPER,
    ]),
  );
  try {
    await waitForMarker(w, "restored", `criu restore on ${host.name}`, RESTORE_TIMEOUT_MS);
  } catch (err) {
    throw new Error(`${(err as Error).message}; log: ${await logTail(host, `${dir}/restore.log`)}`);
  }
  const pid = Number((await host.exec("cat", [pidfile])).stdout.trim());
  return { pid, exited: w.exit };
}

export interface PlainMigrationOptions {
  from: Host;
  to: Host;
  /** The process (tree root) to migrate, running on `from`. */
  pid: number;
  /** Image directory, the same path on both hosts; default under `from.dataDir`/.criu. */
  imagesDir?: string;
  /** Files or directories (absolute) copied during the freeze, e.g. files the process writes. */
  copyAfterDump?: readonly string[];
  criu?: string;
}

export interface PlainMigrationResult {
  restored: RestoredProcess;
  imagesDir: string;
  /** Bytes sent over the link during the freeze (images plus copyAfterDump). */
  transferBytes: number;
  /** criu dump, until the original pid is released. */
  dumpMs: number;
  /** Copying images and copyAfterDump to the target over the link. */
  transferMs: number;
  /** criu restore, until the process runs again. */
  restoreMs: number;
  /** From the start of the dump until the process runs again on the target. */
  freezeMs: number;
}

export async function plainCriuMigration(
  opts: PlainMigrationOptions,
): Promise<PlainMigrationResult> {
  const { from, to, pid } = opts;
  const imagesDir = opts.imagesDir ?? `${from.dataDir}/.criu/${pid}-${Date.now()}`;
  const t0 = performance.now();
  await dumpInHost(from, pid, imagesDir, opts.criu);
  await waitPidFree(pid);
  const t1 = performance.now();
  const sent = await sendFiles(from, to, [imagesDir, ...(opts.copyAfterDump ?? [])]);
  const t2 = performance.now();
  const restored = await restoreInHost(to, imagesDir, opts.criu);
  const t3 = performance.now();
  return {
    restored,
    imagesDir,
    transferBytes: sent.bytes,
    dumpMs: t1 - t0,
    transferMs: t2 - t1,
    restoreMs: t3 - t2,
    freezeMs: t3 - t0,
  };
}
