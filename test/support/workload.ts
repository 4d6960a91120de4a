/**
 * Test workloads that CRIU can dump: a command started detached in its own session, with
 * stdin/stdout/stderr chosen by the test and NO other descriptors (a tiny launcher closes
 * everything above 2 before exec, since the test runner itself may hold inherited fds that
 * CRIU would refuse to dump). `ready` waits for a marker file the workload creates.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

const LAUNCHER = "import os, sys\nos.closerange(3, 1 << 20)\nos.execvp(sys.argv[1], sys.argv[1:])";

export interface WorkloadOptions {
  /** argv of the workload, e.g. ["python3", "-c", script, arg]. */
  argv: string[];
  cwd?: string;
  /** Paths for the standard streams; default /dev/null for all three. */
  stdin?: string;
  stdout?: string;
  stderr?: string;
}

export interface Workload {
  pid: number;
  /** Kill the whole process group (if still alive) and wait for the root to be gone. */
  stop(): Promise<void>;
}

/** Start `argv` detached (new session and process group) with only fds 0, 1, 2. */
export function startWorkload(options: WorkloadOptions): Workload {
  const fds = [
    openSync(options.stdin ?? "/dev/null", "r"),
    openSync(options.stdout ?? "/dev/null", "a"),
    openSync(options.stderr ?? "/dev/null", "a"),
  ];
  try {
    const child = spawn("python3", ["-c", LAUNCHER, ...options.argv], {
      cwd: options.cwd,
      detached: true,
      stdio: fds,
    });
    if (child.pid === undefined) throw new Error(`cannot start ${options.argv[0]}`);
    const pid = child.pid;
    let exited = false;
    child.on("exit", () => {
      exited = true;
    });
    child.unref();
    return {
      pid,
      stop: async () => {
        if (!exited) {
          try {
            process.kill(-pid, "SIGKILL");
          } catch {
            // already gone
          }
          await waitGone(pid);
        }
      },
    };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/s.test(stat);
  } catch {
    return false;
  }
}

/** Kill a process that is not our child (e.g. one CRIU restored) and wait until it is gone. */
export async function killPid(pid: number): Promise<void> {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  await waitGone(pid);
}

/** Wait until `pid` has left the process table (reaped, not merely a zombie), so that the
 * pid is free again (CRIU restores tasks with their original pids). */
async function waitGone(pid: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (existsSync(`/proc/${pid}`) && Date.now() < until) await sleep(10);
}

/** Wait until `path` exists (the workload's ready marker); throws after `timeoutMs`. */
export async function waitForFile(path: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`workload not ready: ${path} never appeared`);
    await sleep(10);
  }
}

/** Wait until `predicate()` holds; throws with `what` after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
