/**
 * Failover for a FUSE mount: the supervisor opens /dev/fuse, mounts it and keeps the descriptor
 * for the mount's whole life, while a child process serves it (handover.ts). When the server
 * dies without unmounting (kill -9, crash), the kernel connection stays up (the supervisor
 * still holds the device), callers merely wait, and a new server is started on the same
 * connection: it skips INIT and gets the requests in flight again (FUSE_NOTIFY_RESEND). A
 * standby server is kept started in advance (Node loaded, waiting in `takeOver()`), so that a
 * failover does not wait for a process to start.
 *
 * A server that keeps dying before it serves, or within `quickMs` of its start (a request that
 * crashes every server it is resent to), is restarted with a doubling delay,
 * and after `maxQuickFailures` such deaths in a row the supervisor gives up with one log line;
 * the mount stays in the mount table (stale once the supervisor is gone, so the usual recovery
 * of a crashed server applies). A first server that dies before answering INIT is not
 * restarted: nothing was served yet, the mount is removed and its failure is the result.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { signalName } from "../common/signals.js";
import {
  handoverEnv,
  type NegotiatedJson,
  negotiatedFromJson,
  negotiatedToJson,
} from "./handover.js";
import { abortConnection, type MountOptions, mountDevice, mountInfo } from "./mount.js";
import type { Negotiated } from "./session-options.js";

const log = logger("supervisor");

export interface SupervisorOptions {
  mountpoint: string;
  mount?: MountOptions;
  /** The server: a program that calls `inheritedDevice()` and `serveInherited()`. */
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /**
   * What each server (first, standby, restarted) gets on its stdin and in its environment
   * besides `env`: e.g. secrets the supervisor holds only in memory. Default: nothing.
   */
  childInput?: () => { env: Record<string, string>; stdin?: string };
  /**
   * A file (in a private directory) where the servers keep the connection's passthrough table
   * for their successors; removed when the supervisor mounts afresh and when it ends.
   */
  stateFile?: string;
  /**
   * Give up after this many servers in a row died before serving or within `quickMs` of
   * starting; default 5.
   */
  maxQuickFailures?: number;
  /** default 2000 */
  quickMs?: number;
  /** First restart delay after a quick death, doubled each time up to 5 s; default 100. */
  backoffMs?: number;
  /**
   * Keep a standby server started in advance (waiting in `takeOver()`), so that a failover
   * does not wait for a process to start; default true.
   */
  standby?: boolean;
}

/** How supervision ended. */
export type SupervisorEnd =
  /** A server unmounted (or the mount went away) and exited. */
  | { kind: "unmounted"; code: number }
  /** The first server died before the kernel's INIT was answered. */
  | { kind: "failed"; reason: string }
  /** Servers kept dying at start; the mount is left for a later recovery. */
  | { kind: "gave-up"; reason: string };

function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

/** How often a server's main thread is checked for having exited alone (see `serve`). */
const ZOMBIE_CHECK_MS = 250;

/**
 * Process `pid`'s main thread, from /proc: its state letter and, once it has exited, how
 * (stat's exit_code field, as waitpid reports it). Undefined when the process is gone.
 */
function mainThread(
  pid: number,
): { state: string; code: number | null; signal: NodeJS.Signals | null } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const status = Number(f[52 - 3] ?? 0);
  const sig = status & 0x7f;
  const signal = sig ? (signalName(sig) ?? null) : null;
  return { state: f[0] ?? "", code: sig ? null : (status >> 8) & 0xff, signal };
}

interface Server {
  proc: ChildProcess;
  /** When it started serving (or was started, if it has not yet). */
  started: number;
  /** Reported serving (INIT answered, or connection taken over). */
  served: boolean;
}

export class Supervisor {
  /** Servers started after the first. */
  restarts = 0;
  /** The current server process (0 while none runs). */
  serverPid = 0;
  /** The current server once it serves (answered INIT or took the connection over), else 0. */
  servingPid = 0;
  readonly mountpoint: string;
  /** Resolves once; the supervisor holds nothing after it. */
  readonly done: Promise<SupervisorEnd>;

  private negotiated?: Negotiated;
  private server?: Server;
  /** A server started in advance, waiting to take over (`standby`). */
  private spare?: ChildProcess;
  private quickFailures = 0;
  private stopping = false;
  private finished = false;
  private finish!: (end: SupervisorEnd) => void;
  private dev = 0;
  private retryTimer?: NodeJS.Timeout;
  private readonly opts: Required<
    Omit<SupervisorOptions, "mount" | "env" | "childInput" | "stateFile">
  > &
    Pick<SupervisorOptions, "mount" | "env" | "childInput" | "stateFile">;

  private constructor(
    private readonly fd: number,
    mountpoint: string,
    opts: SupervisorOptions,
  ) {
    this.mountpoint = mountpoint;
    this.opts = { maxQuickFailures: 5, quickMs: 2000, backoffMs: 100, standby: true, ...opts };
    this.done = new Promise((res) => {
      this.finish = (end) => {
        if (this.finished) return;
        this.finished = true;
        clearTimeout(this.retryTimer);
        try {
          fs.closeSync(this.fd);
        } catch {
          /* closed */
        }
        // The table belongs to this connection only.
        if (this.opts.stateFile) fs.rmSync(this.opts.stateFile, { force: true });
        // Nothing of ours outlives `done`: the standby is gone first.
        void this.endSpare().then(() => res(end));
      };
    });
  }

  /** Mounts and starts the first server. Root only. */
  static async start(opts: SupervisorOptions): Promise<Supervisor> {
    // A table left by an earlier connection says nothing about this one.
    if (opts.stateFile) fs.rmSync(opts.stateFile, { force: true });
    const { fd, mountpoint } = await mountDevice(opts.mountpoint, opts.mount);
    const s = new Supervisor(fd, mountpoint, opts);
    // Not stat(2): that would wait for the INIT only the server answers.
    s.dev = mountInfo(mountpoint)?.dev ?? 0;
    s.serve(s.spawnProcess(false));
    return s;
  }

  private spawnProcess(standby: boolean): ChildProcess {
    const input = this.opts.childInput?.() ?? { env: {} };
    const child = spawn(this.opts.command, this.opts.args, {
      // fd 3: the device; fd 4: the IPC channel (INIT reports, take-over orders).
      stdio: [input.stdin === undefined ? "ignore" : "pipe", "inherit", "inherit", this.fd, "ipc"],
      env: {
        ...(this.opts.env ?? process.env),
        ...input.env,
        ...handoverEnv({
          fd: 3,
          mountpoint: this.mountpoint,
          restarts: standby ? this.restarts + 1 : this.restarts,
          supervisorPid: process.pid,
          ...(this.negotiated ? { resume: this.negotiated } : {}),
          ...(standby ? { standby: true } : {}),
          ...(this.opts.stateFile ? { stateFile: this.opts.stateFile } : {}),
        }),
      },
    });
    if (input.stdin !== undefined) {
      child.stdin?.on("error", () => {});
      child.stdin?.end(input.stdin);
    }
    return child;
  }

  /** Makes `proc` the server. */
  private serve(proc: ChildProcess): void {
    const server: Server = { proc, started: Date.now(), served: false };
    this.server = server;
    this.serverPid = proc.pid ?? 0;
    proc.on("message", (m: { fuse?: string; negotiated?: NegotiatedJson }) => {
      if (m?.fuse !== "init" || !m.negotiated) return;
      this.negotiated ??= negotiatedFromJson(m.negotiated);
      server.served = true;
      server.started = Date.now();
      this.servingPid = proc.pid ?? 0;
      this.startSpare();
    });
    proc.on("error", (e) => log.error("cannot start the server", { error: errorMessage(e) }));
    const gone = (code: number | null, signal: NodeJS.Signals | null) => {
      clearInterval(watch);
      if (this.server !== server) return;
      this.server = undefined;
      this.serverPid = 0;
      this.servingPid = 0;
      this.exited(code, signal, server.served ? Date.now() - server.started : 0);
    };
    // A server killed while one of its threads waits for an answer from this very mount
    // (any file operation on it) does not finish exiting: that thread waits for the next
    // server, which is started only after the exit. Its main thread is then a zombie; seen so
    // twice in a row, the server counts as gone (its last thread ends once the next answers).
    let zombieChecks = 0;
    const watch = setInterval(() => {
      const main = proc.pid ? mainThread(proc.pid) : undefined;
      zombieChecks = main?.state === "Z" ? zombieChecks + 1 : 0;
      if (!main || zombieChecks < 2) return;
      log.warn("the server's main thread has exited; a thread of it waits for the mount", {
        pid: proc.pid,
      });
      gone(main.code, main.signal);
    }, ZOMBIE_CHECK_MS);
    watch.unref();
    proc.on("exit", (code, signal) => gone(code, signal));
    log.info("server started", { pid: this.serverPid, restarts: this.restarts });
  }

  /** Starts a standby server (Node and the server's code loaded) unless one waits already. */
  private startSpare(): void {
    if (!this.opts.standby || this.spare || this.stopping || this.finished) return;
    const started = Date.now();
    const proc = this.spawnProcess(true);
    this.spare = proc;
    proc.on("error", () => {});
    proc.on("exit", (code, signal) => {
      if (this.spare !== proc) return;
      this.spare = undefined;
      // One that dies at once is not started again: failover then starts a server cold.
      const lived = Date.now() - started;
      if (lived >= this.opts.quickMs && this.server?.served) this.startSpare();
      else log.warn("standby server died", { how: exitText(code, signal), livedMs: lived });
    });
  }

  private async endSpare(): Promise<void> {
    const spare = this.spare;
    this.spare = undefined;
    if (!spare || spare.exitCode !== null || spare.signalCode !== null) return;
    const gone = new Promise((r) => spare.once("exit", r));
    spare.kill("SIGTERM");
    const timer = setTimeout(() => spare.kill("SIGKILL"), 2000);
    await gone;
    clearTimeout(timer);
  }

  /** The next server: the standby if one waits, else a new process. */
  private next(): void {
    this.restarts++;
    const spare = this.spare;
    this.spare = undefined;
    if (spare && spare.exitCode === null && spare.signalCode === null && this.negotiated) {
      spare.send({
        fuse: "takeover",
        restarts: this.restarts,
        resume: negotiatedToJson(this.negotiated),
      });
      this.serve(spare);
      return;
    }
    spare?.kill("SIGTERM");
    this.serve(this.spawnProcess(false));
  }

  /** `livedMs`: 0 for a server that never reported serving. */
  private exited(code: number | null, signal: NodeJS.Signals | null, livedMs: number): void {
    const how = exitText(code, signal);
    if (!mountInfo(this.mountpoint)) {
      log.info("server ended and the mount is gone", { how });
      this.finish({ kind: "unmounted", code: code ?? 1 });
      return;
    }
    // A server that ends by itself, or is stopped, or never served: the mount goes with it.
    if (code === 0 || this.stopping) {
      this.detach({ kind: "unmounted", code: code ?? 1 });
      return;
    }
    if (!this.negotiated) {
      this.detach({ kind: "failed", reason: how });
      return;
    }
    this.quickFailures = livedMs < this.opts.quickMs ? this.quickFailures + 1 : 0;
    if (this.quickFailures >= this.opts.maxQuickFailures) {
      const reason = `the server of ${this.mountpoint} died ${this.quickFailures} times within ${this.opts.quickMs} ms of starting (last: ${how})`;
      log.error(`${reason}; giving up, the mount is left for a later recovery`);
      this.finish({ kind: "gave-up", reason });
      return;
    }
    const delay =
      this.quickFailures <= 1
        ? 0
        : Math.min(this.opts.backoffMs * 2 ** (this.quickFailures - 2), 5000);
    log.warn("server died; starting a new one on the same connection", {
      how,
      livedMs,
      delayMs: delay,
    });
    this.retryTimer = setTimeout(() => this.next(), delay);
  }

  /**
   * Stops: the server is asked to unmount and exit (`signal`, default SIGTERM); with no server
   * running the mount is detached here.
   */
  stop(signal: NodeJS.Signals = "SIGTERM"): Promise<SupervisorEnd> {
    this.stopping = true;
    if (this.server) this.server.proc.kill(signal);
    else this.detach({ kind: "unmounted", code: 1 });
    return this.done;
  }

  /** No server runs: abort the connection, detach the mount, end with `end`. */
  private detach(end: SupervisorEnd): void {
    abortConnection(this.dev);
    spawn("umount", ["-l", this.mountpoint], { stdio: "ignore" }).on("exit", () =>
      this.finish(end),
    );
  }
}
