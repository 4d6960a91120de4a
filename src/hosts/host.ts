/**
 * One simulated host: a network namespace plus a private mount namespace with its own tmpfs
 * on `dataDir`. Everything a host runs goes through `commandPrefix()`, i.e.
 * `nsenter --net=/run/netns/<netns> --mount=<pinned mount ns> --`, so it sees the host's
 * address and the host's files and nothing of the other host's.
 */
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { UserError } from "../common/errors.js";
import { type RunOptions, type RunResult, runCommand } from "./run.js";
import { DATA_DIR, type HostRole, mntFile, netnsFile, netnsName, PYTHON } from "./state.js";

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
  pid: number;
  /** Resolves with the exit code, or null if a signal ended it (e.g. CRIU dump's SIGKILL). */
  exited: Promise<number | null>;
}

/**
 * Runs inside the host (already in a new session: the spawn is detached, i.e. setsid): closes
 * every descriptor above 2, keeps a close-on-exec copy of the stderr pipe to report a failure
 * before exec, puts the stdio files on 0-2, then execs the workload.
 */
const WORKLOAD_WRAPPER = `
import os, sys
for fd in [int(x) for x in os.listdir("/proc/self/fd")]:
    if fd > 2:
        try: os.close(fd)
        except OSError: pass
status = os.dup(2)
try:
    stdin, stdout, stderr, cwd, append = sys.argv[1:6]
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append == "1" else os.O_TRUNC)
    i = os.open(stdin, os.O_RDONLY)
    o = os.open(stdout, flags, 0o644)
    e = o if stderr == "" else os.open(stderr, flags, 0o644)
    os.dup2(i, 0); os.dup2(o, 1); os.dup2(e, 2)
    for fd in {i, o, e}:
        if fd > 2: os.close(fd)
    os.chdir(cwd)
    os.execvp(sys.argv[6], sys.argv[6:])
except BaseException as err:
    os.write(status, ("cannot start %s: %s" % (sys.argv[6:], err)).encode())
    os._exit(127)
`;

export class Host {
  /** `lazyfs-<id>-a` or `-b` (also the netns name). */
  readonly name: string;
  readonly role: HostRole;
  readonly netns: string;
  readonly netnsPath: string;
  /** The bind-mounted mount-namespace file that pins this host's mount namespace. */
  readonly mountNsPath: string;
  /** IPv4 address of this host's end of the link (only reachable inside the pair). */
  readonly address: string;
  /** Name of this host's veth device. */
  readonly iface = "veth0";
  /** Same path on both hosts; each sees its own tmpfs there. */
  readonly dataDir = DATA_DIR;
  private readonly children = new Set<ChildProcess>();

  constructor(pairName: string, role: HostRole, address: string) {
    this.role = role;
    this.name = netnsName(pairName, role);
    this.netns = this.name;
    this.netnsPath = netnsFile(pairName, role);
    this.mountNsPath = mntFile(pairName, role);
    this.address = address;
  }

  /** argv prefix that runs any command inside this host's network and mount namespaces. */
  commandPrefix(opts: { cwd?: string } = {}): string[] {
    return [
      "nsenter",
      `--net=${this.netnsPath}`,
      `--mount=${this.mountNsPath}`,
      ...(opts.cwd ? [`--wd=${opts.cwd}`] : []),
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

  /** Starts a long-running process (a daemon) inside the host. Killed by the pair's destroy(). */
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
   * anywhere. The pid stays the same from nsenter through the wrapper to the workload (all
   * exec, no fork), and this process is its parent, so it is reaped when CRIU dump kills it
   * (CRIU restore needs the pid free again).
   */
  async startWorkload(
    cmd: string,
    args: readonly string[],
    opts: WorkloadOptions,
  ): Promise<Workload> {
    const child = this.spawn(
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
      { stdio: ["ignore", "ignore", "pipe"], detached: true, env: opts.env },
    );
    const exited = new Promise<number | null>((resolve) => {
      child.once("exit", (code) => resolve(code));
      child.once("error", () => resolve(null));
    });
    let report = "";
    child.stderr!.on("data", (c: Buffer) => {
      report += c.toString();
    });
    // The wrapper's only handle on the pipe is close-on-exec: EOF means exec happened or failed.
    await new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.stderr!.once("close", () => resolve());
    });
    if (report || child.pid === undefined) {
      await exited;
      throw new UserError(`host ${this.name}: ${report.trim() || `cannot start ${cmd}`}`);
    }
    return { pid: child.pid, exited };
  }

  /** SIGKILLs the processes this object spawned (the pair also kills by namespace). */
  killChildren(): void {
    for (const child of this.children) child.kill("SIGKILL");
    this.children.clear();
  }
}
