/**
 * The baseline migration LazyFS is compared against: plain CRIU with the files already on the
 * target. CRIU dumps the process inside the origin's namespaces, the images (plus any file
 * the process was writing) go over the link, and CRIU restores inside the target's.
 *
 * CRIU facts this relies on (CRIU 4.1, found with the tests in test/hosts):
 * - A workload started by Host.startWorkload (own session, stdio on files, nothing else open)
 *   dumps with just `dump -t PID -D DIR`: no --shell-job (it has no controlling terminal and
 *   is its own session leader), no --ext-unix-sk, no --tcp-established. The process is in the
 *   same mount, net and PID namespaces as the criu that dumps it, so CRIU dumps no namespace
 *   and the restore happens in whatever namespaces criu runs in (the target's).
 * - Restore gives every task its old pid back, in the target's PID namespace: each host has
 *   its own, and the hosts' pids start at different bases (state.ts), so the pids are free
 *   there even while the original is kept stopped on the origin (`leaveStopped`: criu dump
 *   --leave-stopped). Without it the dump SIGKILLs the original, and the origin's init reaps
 *   it at once (waitPidFree checks that, inside the origin).
 * - `restore -d` returns once the restored tree runs, detached: its root is reparented to the
 *   target's init, which reaps it, so Host.reaped gives its exit. `--pidfile` gives its pid.
 * - Regular files must exist on the target at the same paths with the same size as at dump
 *   time (CRIU checks the size), so a file being appended to is copied after the dump.
 */
import { constants } from "node:os";
import { performance } from "node:perf_hooks";
import type { Host } from "./host.js";
import { CommandError } from "./run.js";
import { CRIU_BIN, sleep } from "./state.js";
import { sendFiles } from "./transfer.js";

const CRIU_TIMEOUT_MS = 600_000;

export interface RestoredProcess {
  pid: number;
  /** Resolves with the restored process's exit code (128+signal if a signal ended it). */
  exited: Promise<number>;
}

async function logTail(host: Host, file: string): Promise<string> {
  const res = await host.exec("tail", ["-n", "8", file], { allowFailure: true });
  return res.code === 0 ? res.stdout.trim().split("\n").join(" | ") : "(no log)";
}

/** Runs `criu <args>` inside `host`; a failure becomes one line with the tail of its log. */
async function criuIn(host: Host, criu: string, args: string[], what: string, log: string) {
  try {
    await host.exec(criu, [...args, "-o", log.slice(log.lastIndexOf("/") + 1), "-v4"], {
      timeoutMs: CRIU_TIMEOUT_MS,
    });
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    throw new Error(`criu ${what} on ${host.name} failed: ${await logTail(host, log)}`);
  }
}

export interface DumpOptions {
  criu?: string;
  /** `--leave-stopped`: the original stays, stopped, instead of being killed. */
  leaveStopped?: boolean;
}

/** `criu dump -t pid -D dir` inside `host`; the process is killed once dumped (or stopped). */
export async function dumpInHost(host: Host, pid: number, dir: string, opts: DumpOptions = {}) {
  await host.exec("mkdir", ["-p", dir]);
  const args = ["dump", "-t", String(pid), "-D", dir];
  if (opts.leaveStopped) args.push("--leave-stopped");
  await criuIn(host, opts.criu ?? CRIU_BIN, args, `dump of ${pid}`, `${dir}/dump.log`);
}

/** Waits until the host's `pid` is reaped, so that CRIU restore could give it out again. */
export async function waitPidFree(host: Host, pid: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let state = await host.processState(pid);
  while (state !== undefined) {
    if (Date.now() > deadline) {
      throw new Error(
        `pid ${pid} on ${host.name} is still ${state === "Z" ? "a zombie nobody reaps" : "running"}; CRIU restore needs it free`,
      );
    }
    await sleep(2);
    state = await host.processState(pid);
  }
}

/** `criu restore -d -D dir` inside `host`; resolves once the process runs again. */
export async function restoreInHost(
  host: Host,
  dir: string,
  criu = CRIU_BIN,
): Promise<RestoredProcess> {
  const pidfile = `${dir}/restored.pid`;
  const args = ["restore", "-d", "-D", dir, "--pidfile", pidfile];
  await criuIn(host, criu, args, "restore", `${dir}/restore.log`);
  const pid = Number((await host.exec("cat", [pidfile])).stdout.trim());
  const exited = host.reaped(pid).then((s) => s.code ?? 128 + signalNumber(s.signal));
  return { pid, exited };
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
  /**
   * Keep the original stopped on the origin (criu dump --leave-stopped) until the restore on
   * the target succeeded, then kill it; on a failed transfer or restore it runs on.
   */
  leaveStopped?: boolean;
}

export interface PlainMigrationResult {
  restored: RestoredProcess;
  imagesDir: string;
  /** Bytes sent over the link during the freeze (images plus copyAfterDump). */
  transferBytes: number;
  /** criu dump, until the original pid is released (or the original stopped). */
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
  const leaveStopped = opts.leaveStopped ?? false;
  await dumpInHost(from, pid, imagesDir, { criu: opts.criu, leaveStopped });
  if (!leaveStopped) await waitPidFree(from, pid);
  const t1 = performance.now();
  let restored: RestoredProcess;
  let t2: number;
  let sent: { bytes: number };
  try {
    sent = await sendFiles(from, to, [imagesDir, ...(opts.copyAfterDump ?? [])]);
    t2 = performance.now();
    restored = await restoreInHost(to, imagesDir, opts.criu);
  } catch (err) {
    if (leaveStopped) await signalTree(from, pid, "SIGCONT");
    throw err;
  }
  const t3 = performance.now();
  if (leaveStopped) await signalTree(from, pid, "SIGKILL");
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

/** Signals the process group `pid` leads (a workload's tree), or just `pid` if it leads none. */
async function signalTree(host: Host, pid: number, signal: NodeJS.Signals): Promise<void> {
  if (!(await host.kill(-pid, signal))) await host.kill(pid, signal);
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? constants.signals[signal] : 0;
}
