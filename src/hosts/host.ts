/**
 * One simulated host: a network namespace, a private mount namespace with its own tmpfs on
 * `dataDir`, and a PID namespace whose init (init.ts) reaps the host's orphans. Everything a
 * host runs goes through `commandPrefix()`, i.e. `nsenter --net=/run/netns/<netns>
 * --mount=<pinned mount ns> --pid=<pinned pid ns> -- setpriv --pdeathsig KILL --`, so it sees
 * the host's address, files and processes and nothing of the other hosts'. Entering a PID
 * namespace takes a fork: nsenter stays outside as the parent, and the pdeathsig makes the
 * command die with it, so that killing what `spawn` returned still ends the command.
 */
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { constants } from "node:os";
import { UserError } from "../common/errors.js";
import { type ExitStatus, HostInit } from "./init.js";
import { type RunOptions, type RunResult, runCommand } from "./run.js";
import {
  DATA_DIR,
  type HostRole,
  mntFile,
  netnsFile,
  netnsName,
  PID_BASE,
  PYTHON,
  pidnsFile,
  statFields,
} from "./state.js";

export interface ExecOptions extends Omit<RunOptions, "label"> {
  /** Working directory inside the host (default `/`). */
  cwd?: string;
}

export interface HostSpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Default `["ignore", "pipe", "pipe"]`. */
  stdio?: StdioOptions;
  detached?: boolean;
}

export interface WorkloadOptions {
  /** File (inside the host) that becomes stdout; created or truncated unless `append`. */
  stdout: string;
  /** File (inside the host) that becomes stdin; default /dev/null. */
  stdin?: string;
  /** File that becomes stderr; default the same open file as stdout. */
  stderr?: string;
  /** Open stdout/stderr with O_APPEND instead of truncating. */
  append?: boolean;
  /** Working directory inside the host; default `dataDir`. */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface Workload {
  /** The workload's pid inside the host (what CRIU and /proc in the host know it by). */
  pid: number;
  /** Resolves with the exit code, or null if a signal ended it (e.g. CRIU dump's SIGKILL). */
  exited: Promise<number | null>;
}

/**
 * Runs inside the host and forks the workload: the child starts a new session, closes every
 * descriptor above 2, puts the stdio files on 0-2, restores the signals Python ignores and
 * execs; a close-on-exec pipe reports a failure before exec. The wrapper prints the child's
 * pid and exits, so the workload is reparented to the host's init, which reaps it (and a
 * stopped workload stops nobody else: nsenter, which waits with WUNTRACED, is not its parent).
 */
const WORKLOAD_WRAPPER = `
import os, signal, sys
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(r)
        os.setsid()
        for fd in [int(x) for x in os.listdir("/proc/self/fd")]:
            if fd > 2 and fd != w:
                try: os.close(fd)
                except OSError: pass
        stdin, stdout, stderr, cwd, append = sys.argv[1:6]
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append == "1" else os.O_TRUNC)
        i = os.open(stdin, os.O_RDONLY)
        o = os.open(stdout, flags, 0o644)
        e = o if stderr == "" else os.open(stderr, flags, 0o644)
        os.dup2(i, 0); os.dup2(o, 1); os.dup2(e, 2)
        for fd in {i, o, e}:
            if fd > 2: os.close(fd)
        os.chdir(cwd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(sys.argv[6], sys.argv[6:])
    except BaseException as err:
        os.write(w, ("cannot start %s: %s" % (sys.argv[6:], err)).encode())
    os._exit(127)
os.close(w)
report = b""
while True:
    chunk = os.read(r, 4096)
    if not chunk:
        break
    report += chunk
if report:
    os.waitpid(pid, 0)
    sys.exit(report.decode())
print(pid, flush=True)
`;

export class Host {
  /** `lazyfs-<id>-a`, `-b` or `-c` (also the netns name). */
  readonly name: string;
  readonly role: HostRole;
  readonly netns: string;
  readonly netnsPath: string;
  /** The bind-mounted mount-namespace file that pins this host's mount namespace. */
  readonly mountNsPath: string;
  /** The bind-mounted pid-namespace file that pins this host's PID namespace. */
  readonly pidnsPath: string;
  /** ns_last_pid at start: the host's processes get pids from pidBase + 1 on. */
  readonly pidBase: number;
  /** This host's own IPv4 address (only reachable inside the pair). */
  readonly address: string;
  /** The device that holds `address`: the veth to the other host (a, b) or lo (c). */
  readonly iface: string;
  /** Same path on every host; each sees its own tmpfs there. */
  readonly dataDir = DATA_DIR;
  private readonly children = new Set<ChildProcess>();
  private init: HostInit | undefined;

  constructor(pairName: string, role: HostRole, address: string, iface = "veth0") {
    this.role = role;
    this.name = netnsName(pairName, role);
    this.netns = this.name;
    this.netnsPath = netnsFile(pairName, role);
    this.mountNsPath = mntFile(pairName, role);
    this.pidnsPath = pidnsFile(pairName, role);
    this.pidBase = PID_BASE[role];
    this.address = address;
    this.iface = iface;
  }

  /** Starts the host's PID namespace and its init (the pair does, once both ns pins exist). */
  async startInit(): Promise<void> {
    this.init = await HostInit.start(this);
  }

  /** argv prefix that runs a command inside this host's network, mount and PID namespaces. */
  commandPrefix(opts: { cwd?: string } = {}): string[] {
    return [
      "nsenter",
      `--net=${this.netnsPath}`,
      `--mount=${this.mountNsPath}`,
      `--pid=${this.pidnsPath}`,
      ...(opts.cwd ? [`--wd=${opts.cwd}`] : []),
      "--",
      "setpriv",
      "--pdeathsig",
      "KILL",
      "--",
    ];
  }

  /** Runs a command to completion inside the host; throws CommandError on non-zero exit. */
  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<RunResult> {
    return runCommand([...this.commandPrefix({ cwd: opts.cwd }), cmd, ...args], {
      ...opts,
      label: `host ${this.name}`,
      display: [cmd, ...args],
    });
  }

  /** Writes `data` to `path` inside the host (created or truncated). */
  async writeFile(path: string, data: string | Buffer): Promise<void> {
    await this.exec("sh", ["-c", 'cat > "$1"', "sh", path], { input: data, timeoutMs: 0 });
  }

  /** Reads a text file inside the host. */
  async readFile(path: string): Promise<string> {
    return (await this.exec("cat", [path], { timeoutMs: 0 })).stdout;
  }

  /**
   * Starts a long-running process (a daemon) inside the host. Killed by the pair's destroy().
   * The ChildProcess is nsenter, outside the host (its pid is not the command's); killing it
   * kills the command (pdeathsig), and its exit is the command's.
   */
  spawn(cmd: string, args: readonly string[] = [], opts: HostSpawnOptions = {}): ChildProcess {
    const argv = [...this.commandPrefix({ cwd: opts.cwd }), cmd, ...args];
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: opts.stdio ?? ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      detached: opts.detached ?? false,
    });
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    child.once("error", () => this.children.delete(child));
    return child;
  }

  /**
   * Starts a workload inside the host in a new session, stdio redirected to files inside the
   * host and no other descriptor open: what CRIU can dump without --shell-job and restore
   * anywhere. Its parent is the host's init, which reaps it at once when it ends (CRIU dump's
   * SIGKILL included), so `exited` resolves then. `pid` is the pid inside the host.
   */
  async startWorkload(
    cmd: string,
    args: readonly string[],
    opts: WorkloadOptions,
  ): Promise<Workload> {
    const res = await this.exec(
      PYTHON,
      [
        "-c",
        WORKLOAD_WRAPPER,
        opts.stdin ?? "/dev/null",
        opts.stdout,
        opts.stderr ?? "",
        opts.cwd ?? this.dataDir,
        opts.append ? "1" : "0",
        cmd,
        ...args,
      ],
      { allowFailure: true, env: opts.env },
    );
    const pid = Number(res.stdout.trim());
    if (res.code !== 0 || !Number.isInteger(pid) || pid <= 0) {
      throw new UserError(`host ${this.name}: ${res.stderr.trim() || `cannot start ${cmd}`}`);
    }
    return { pid, exited: this.reaped(pid).then((s) => s.code) };
  }

  /**
   * Resolves when the host's init reaps `pid`, i.e. when an orphan of the host ends: a
   * workload, a tree restored with `criu restore -d`, a daemon. (Never for a process whose
   * parent is still alive.) After the host is torn down: `{ code: null, signal: "SIGKILL" }`.
   */
  reaped(pid: number): Promise<ExitStatus> {
    if (!this.init) throw new Error(`host ${this.name}: not started`);
    return this.init.reaped(pid);
  }

  /**
   * Sends `signal` to the host's process `pid` (a negative pid: its process group), from
   * inside the host; false if there is no such process.
   */
  async kill(pid: number, signal: NodeJS.Signals = "SIGKILL"): Promise<boolean> {
    const n = constants.signals[signal];
    const res = await this.exec("kill", [`-${n}`, "--", String(pid)], { allowFailure: true });
    return res.code === 0;
  }

  /**
   * The state letter of the host's process `pid` (R, S, T for stopped, Z for a zombie, ...)
   * from the host's own /proc, or undefined if there is no such process.
   */
  async processState(pid: number): Promise<string | undefined> {
    return (await statFields(this.procPath(pid, "stat")))?.[0];
  }

  /** Whether the host has a running (or stopped) process `pid`; a zombie does not count. */
  async pidAlive(pid: number): Promise<boolean> {
    const state = await this.processState(pid);
    return state !== undefined && state !== "Z";
  }

  /**
   * `/proc/<pid>/<file>` of the host's process `pid`, as a path this (root-namespace) process
   * can read: through the init's root, which resolves in the host's mount namespace and so
   * reaches the host's own /proc. Fine for stat, status, cmdline; for the magic links under
   * fd/, cwd, exe use readProcLink (it resolves them as the host sees them).
   */
  procPath(pid: number, file: string): string {
    if (!this.init) throw new Error(`host ${this.name}: not started`);
    return `/proc/${this.init.rootPid}/root/proc/${pid}/${file}`;
  }

  /** `readlink /proc/<pid>/<link>` inside the host (e.g. `fd/3`, `cwd`, `exe`, `ns/mnt`). */
  async readProcLink(pid: number, link: string): Promise<string> {
    return (await this.exec("readlink", [`/proc/${pid}/${link}`])).stdout.trim();
  }

  /** SIGKILLs the processes this object spawned and the init (the pair also kills by namespace). */
  killChildren(): void {
    for (const child of this.children) child.kill("SIGKILL");
    this.children.clear();
    this.init?.kill();
  }
}
