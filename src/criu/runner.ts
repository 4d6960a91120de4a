/**
 * Running `criu dump` / `criu restore` with a log file. A failed run becomes a CriuError (a
 * UserError) whose message carries CRIU's own `Error (file:line): ...` lines from the log.
 * An optional command prefix runs CRIU inside other namespaces, e.g.
 * `["nsenter", "--net=/run/netns/b", "--mount=/proc/123/ns/mnt"]`.
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { readTail } from "../common/bounded-read.js";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { dumpedProcesses, imageLocks, retakeLostLocks } from "./file-locks.js";
import { LOG_TAIL_BYTES } from "./limits.js";
import { locateCriu } from "./locate.js";
import { hostPidsIn, initPidFrom, pidNamespaceEnv, pidNamespacePrefix } from "./pidns.js";

const log = logger("criu");

export class CriuError extends UserError {
  constructor(
    message: string,
    readonly criuErrors: string[],
    readonly logFile: string,
  ) {
    super(message);
  }
}

export interface RunCriuOptions {
  /** CRIU binary; located with locateCriu() when absent. */
  criuPath?: string;
  imagesDir: string;
  /** Defaults to `<imagesDir>/<action>.log`. Relative paths are resolved against the cwd. */
  logFile?: string;
  /** Further CRIU arguments. */
  args?: string[];
  /** Command (and arguments) to run CRIU under, e.g. nsenter. */
  prefix?: string[];
  /** Kill CRIU after this long; default 120000 ms. */
  timeoutMs?: number;
  /**
   * Run CRIU in a session of its own: Ctrl-C at the terminal (SIGINT to its foreground
   * process group) then does not kill it halfway. Not with --shell-job, which needs the
   * terminal.
   */
  ownSession?: boolean;
  /** Further environment for the command. */
  env?: Record<string, string>;
}

export interface CriuRun {
  logFile: string;
  stdout: string;
  stderr: string;
}

/** CRIU's own error lines from a log, without the timestamp. */
export async function criuErrorLines(logFile: string): Promise<string[]> {
  let text: string;
  try {
    text = (await readTail(logFile, LOG_TAIL_BYTES, "CRIU log")).toString("utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l) => /\bError \(/.test(l))
    .map((l) => l.replace(/^\(\s*[\d.]+\)\s*/, "").trim());
}

/** Run `criu <action> -D imagesDir -o logFile -v4 ...args`; throws CriuError on failure. */
export async function runCriu(action: string, opts: RunCriuOptions): Promise<CriuRun> {
  const criu = opts.criuPath ?? (await locateCriu()).path;
  const imagesDir = resolve(opts.imagesDir);
  const logFile = opts.logFile ? resolve(opts.logFile) : join(imagesDir, `${action}.log`);
  const argv = [criu, action, "-D", imagesDir, "-o", logFile, "-v4", ...(opts.args ?? [])];
  const command = [...(opts.prefix ?? []), ...argv];
  log.debug("run", { command });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const result = await new Promise<{ code: number | null; signal: string | null } & CriuRun>(
    (done, fail) => {
      const child = spawn(command[0]!, command.slice(1), {
        stdio: ["ignore", "pipe", "pipe"],
        detached: opts.ownSession ?? false,
        ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.on("error", (err) => {
        clearTimeout(timer);
        fail(new UserError(`cannot run ${command[0]}: ${errorMessage(err)}`));
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        done({ code, signal, stdout, stderr, logFile });
      });
    },
  );
  if (result.code === 0) return { logFile, stdout: result.stdout, stderr: result.stderr };
  const errors = await criuErrorLines(logFile);
  const how = result.signal ? `killed by ${result.signal}` : `exit code ${result.code}`;
  const detail =
    errors.length > 0
      ? errors.join(" | ")
      : result.stderr.trim().split("\n").slice(-3).join(" | ") || "no error lines in the log";
  throw new CriuError(
    `criu ${action} failed (${how}): ${detail} (log: ${logFile})`,
    errors,
    logFile,
  );
}

export interface DumpOptions extends Omit<RunCriuOptions, "args"> {
  pid: number;
  /** Keep the process running after the dump (--leave-running). */
  leaveRunning?: boolean;
  /** Needed only when the tree uses a controlling terminal. */
  shellJob?: boolean;
  extraArgs?: string[];
}

export async function criuDump(opts: DumpOptions): Promise<CriuRun> {
  const args = ["-t", String(opts.pid)];
  if (opts.leaveRunning) args.push("--leave-running");
  if (opts.shellJob) args.push("--shell-job");
  return runCriu("dump", { ...opts, args: [...args, ...(opts.extraArgs ?? [])] });
}

export interface RestoreOptions extends Omit<RunCriuOptions, "args"> {
  shellJob?: boolean;
  /** Where CRIU writes the restored root pid; default `<imagesDir>/restore.pid`. */
  pidFile?: string;
  extraArgs?: string[];
  /** Restore into a new pid namespace of its own (pidns.ts). */
  newPidNamespace?: boolean;
}

export interface RestoredRoot {
  /** The root's pid on this host. */
  pid: number;
  /** With a new pid namespace: the root's pid inside it (its original pid) and its init's host pid. */
  nsPid?: number;
  initPid?: number;
}

/**
 * `criu restore -d --pidfile`: returns once the tree runs detached, with its root pid. With
 * `--file-locks` and POSIX locks in the images, the tree is restored stopped, the locks CRIU
 * lost are taken back (file-locks.ts), and only then does it run.
 */
export async function criuRestore(opts: RestoreOptions): Promise<CriuRun & RestoredRoot> {
  const pidFile = resolve(opts.pidFile ?? join(opts.imagesDir, "restore.pid"));
  const args = ["-d", "--pidfile", pidFile];
  if (opts.shellJob) args.push("--shell-job");
  const locks = opts.extraArgs?.includes("--file-locks") ? await imageLocks(opts.imagesDir) : [];
  const relock = locks.some((l) => l.kind === "posix");
  if (relock) args.push("--leave-stopped");
  const inNs = opts.newPidNamespace ?? false;
  const run = await runCriu("restore", {
    ...opts,
    args: [...args, ...(opts.extraArgs ?? [])],
    ...(inNs
      ? {
          prefix: [...(opts.prefix ?? []), ...pidNamespacePrefix()],
          env: { ...opts.env, ...pidNamespaceEnv(opts.ownSession ?? false) },
        }
      : {}),
  });
  const text = await readFile(isAbsolute(pidFile) ? pidFile : resolve(pidFile), "utf8");
  const rootPid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(rootPid) || rootPid <= 0) {
    throw new CriuError(`criu restore wrote no pid to ${pidFile}`, [], run.logFile);
  }
  const tree = relock || inNs ? await dumpedProcesses(opts.imagesDir) : [];
  // The pids CRIU and the images speak of are the namespace's; ptrace and signals need ours.
  let hostPid = (p: number) => p;
  let root: RestoredRoot = { pid: rootPid };
  if (inNs) {
    const initPid = initPidFrom(run.stdout);
    if (!initPid) throw new CriuError("criu restore: no pid namespace init", [], run.logFile);
    const map = await hostPidsIn(initPid, [rootPid, ...tree.map((t) => t.pid)]);
    const pid = map.get(rootPid);
    if (!pid) {
      throw new CriuError(
        `the restored process ${rootPid} ended right after its restore`,
        [],
        run.logFile,
      );
    }
    hostPid = (p) => map.get(p) ?? -1;
    root = { pid, nsPid: rootPid, initPid };
  }
  if (relock) {
    try {
      await retakeLostLocks(locks.map((l) => ({ ...l, pid: hostPid(l.pid) })));
    } catch (err) {
      // Never let the process run without a lock it held: the restore failed.
      for (const t of tree) signal(hostPid(t.pid), "SIGKILL");
      throw err;
    }
    for (const t of tree) if (t.running) signal(hostPid(t.pid), "SIGCONT");
  }
  return { ...run, ...root };
}

function signal(pid: number, sig: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone: nothing to stop or continue.
  }
}
