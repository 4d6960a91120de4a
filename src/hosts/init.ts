/**
 * The init (pid 1) of a simulated host's PID namespace.
 *
 * Started as `unshare --pid=<pin> --fork --kill-child -- nsenter --net --mount -- python3
 * INIT base`: unshare pins the new PID namespace on the host's `.pidns` file (in the root
 * mount namespace, where every `nsenter --pid=` opens it) and forks the init into it; nsenter
 * puts the init into the host's network and mount namespaces without forking again. The init
 * then, before any other process exists in the namespace:
 * - mounts a /proc for its PID namespace over /proc of the host's mount namespace (procfs
 *   shows the pids of the namespace of the process that mounts it), so that CRIU, ps and
 *   /proc/PID reads inside the host see the host's own pids;
 * - writes `base` to /proc/sys/kernel/ns_last_pid, so the host's pids start at base + 1;
 * - prints `ready <its pid in the root namespace>`.
 * Then it reaps every orphan of the host (workloads started by Host.startWorkload, trees
 * restored with `criu restore -d`, daemons) and prints `exit <pid> <code>` for each, code
 * being Python's waitstatus_to_exitcode (negative: killed by that signal). It ignores the
 * signals sent from inside the host (the kernel's rule for a namespace's init) and lives as
 * long as the host: SIGKILL from outside ends it, and the kernel then kills every process of
 * the namespace; whoever still waits for a process of the host then learns it was killed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { signalName } from "../common/signals.js";
import { PYTHON } from "./state.js";

const INIT = `
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
with open("/proc/self/status") as f:
    root_pid = next(l.split()[1] for l in f if l.startswith("NSpid:"))
libc.umount2(b"/proc", 2)  # MNT_DETACH: the root namespace's /proc copy goes
if libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None) != 0:  # nosuid, nodev, noexec
    sys.exit("init: cannot mount /proc: %s" % os.strerror(ctypes.get_errno()))
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(sys.argv[1])
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
def say(line):
    try:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()
    except OSError:
        pass  # the owner is gone; keep reaping until the host is torn down
say("ready " + root_pid)
while True:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        say("exit %d %d" % (pid, os.waitstatus_to_exitcode(status)))
    signal.sigwait([signal.SIGCHLD])
`;

/** How a reaped process ended: exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const KILLED: ExitStatus = { code: null, signal: "SIGKILL" };

/** Exits reported before anyone asked for them, kept at most this many. */
const MAX_UNCLAIMED = 4096;

export interface InitPaths {
  /** Shown in errors. */
  name: string;
  netnsPath: string;
  mountNsPath: string;
  pidnsPath: string;
  /** Written to ns_last_pid: the first process after the init gets base + 1. */
  pidBase: number;
}

export class HostInit {
  /** The init's pid in the root PID namespace (its pid inside the host is 1). */
  readonly rootPid: number;
  private readonly unclaimed = new Map<number, ExitStatus>();
  private readonly waiters = new Map<number, ((s: ExitStatus) => void)[]>();
  private dead = false;

  private constructor(
    private readonly child: ChildProcess,
    rootPid: number,
  ) {
    this.rootPid = rootPid;
  }

  /** Starts the init; resolves once /proc is mounted and ns_last_pid written. */
  static async start(p: InitPaths): Promise<HostInit> {
    const child = spawn(
      "unshare",
      [
        `--pid=${p.pidnsPath}`,
        "--fork",
        "--kill-child",
        "--",
        "nsenter",
        `--net=${p.netnsPath}`,
        `--mount=${p.mountNsPath}`,
        "--",
        PYTHON,
        "-c",
        INIT,
        String(p.pidBase),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    child.stderr!.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const lines = createInterface({ input: child.stdout! });
    const rootPid = await new Promise<number>((resolve, reject) => {
      const fail = (why: string) =>
        reject(new Error(`host ${p.name}: init ${why}: ${stderr.trim() || "no output"}`));
      child.once("error", (err) => fail(err.message));
      child.once("exit", (code) => fail(`exited with code ${code} before ready`));
      lines.once("line", (line) => {
        const m = /^ready (\d+)$/.exec(line);
        if (m) resolve(Number(m[1]));
        else fail(`said "${line}"`);
      });
    });
    child.removeAllListeners("exit");
    const init = new HostInit(child, rootPid);
    lines.on("line", (line) => init.onLine(line));
    lines.once("close", () => init.onDeath()); // after the last line: the init is gone
    return init;
  }

  /** Resolves when the init reaps `pid` (an orphan of the host, e.g. a started workload). */
  reaped(pid: number): Promise<ExitStatus> {
    if (this.dead) return Promise.resolve(KILLED);
    const done = this.unclaimed.get(pid);
    if (done) {
      this.unclaimed.delete(pid);
      return Promise.resolve(done);
    }
    return new Promise((resolve) => {
      const list = this.waiters.get(pid) ?? [];
      list.push(resolve);
      this.waiters.set(pid, list);
    });
  }

  /** SIGKILLs the init (and with it every process of the host's PID namespace). */
  kill(): void {
    this.child.kill("SIGKILL");
  }

  /** The host is gone, and every process of it that was still waited for. */
  private onDeath(): void {
    this.dead = true;
    for (const list of this.waiters.values()) for (const resolve of list) resolve(KILLED);
    this.waiters.clear();
  }

  private onLine(line: string): void {
    const m = /^exit (\d+) (-?\d+)$/.exec(line);
    if (!m) return;
    const pid = Number(m[1]);
    const n = Number(m[2]);
    const status: ExitStatus =
      n < 0 ? { code: null, signal: signalName(-n) ?? "SIGKILL" } : { code: n, signal: null };
    const list = this.waiters.get(pid);
    if (list) {
      this.waiters.delete(pid);
      for (const resolve of list) resolve(status);
      return;
    }
    this.unclaimed.set(pid, status);
    if (this.unclaimed.size > MAX_UNCLAIMED) {
      this.unclaimed.delete(this.unclaimed.keys().next().value!);
    }
  }
}
