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
 * crashes every server it is resent to, a full disk), is restarted with a doubling delay up to
 * `maxBackoffMs`, for as long as it takes: giving up would leave every process on the mount
 * with ENOTCONN for good, while waiting keeps them waiting until a server starts again (each
 * try is logged and reported through `onState`). A first server that dies before answering
 * INIT is not restarted: nothing was served yet, the mount is removed and its failure is the
 * result.
 *
 * A supervisor that dies is replaced by the server (handover.ts): the new one `adopt`s the
 * connection and watches the running server by its pid, as it is not its child.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import {
  ADOPT_ENV,
  type Adoption,
  HANDOVER_ENV,
  handoverEnv,
  type NegotiatedJson,
  negotiatedFromJson,
  negotiatedToJson,
} from "./handover.js";
import { abortConnection, type MountOptions, mountDevice, mountInfo } from "./mount.js";
import { exitText, mainThread, ZOMBIE_CHECK_MS } from "./process-watch.js";
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
  /** A server that dies within this many ms of serving counts as dying at start; default 2000. */
  quickMs?: number;
  /** First restart delay after a quick death, doubled each time; default 100. */
  backoffMs?: number;
  /** The longest delay between two restarts of servers that die at start; default 10000. */
  maxBackoffMs?: number;
  /** Told whenever a server starts serving or dies (e.g. to show it in a status). */
  onState?: (state: SupervisorState) => void;
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
  | { kind: "failed"; reason: string };

/** What a supervisor is doing, for a status. */
export interface SupervisorState {
  /** The server serving now; 0 while none does. */
  servingPid: number;
  restarts: number;
  /** Servers in a row that died at start (0: the current one is fine). */
  quickFailures: number;
  /** How the last server died, if one did. */
  lastExit?: string;
  /** When the next server is started, while one is awaited after a death (epoch ms). */
  retryAtMs?: number;
}

interface Server {
  pid: number;
  kill(signal: NodeJS.Signals): void;
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
  private lastExit?: string;
  private retryAtMs?: number;
  private stopping = false;
  private finished = false;
  private finish!: (end: SupervisorEnd) => void;
  private dev = 0;
  private retryTimer?: NodeJS.Timeout;
  private readonly opts: Required<
    Omit<SupervisorOptions, "mount" | "env" | "childInput" | "stateFile" | "onState">
  > &
    Pick<SupervisorOptions, "mount" | "env" | "childInput" | "stateFile" | "onState">;

  private constructor(
    private readonly fd: number,
    mountpoint: string,
    opts: SupervisorOptions,
  ) {
    this.mountpoint = mountpoint;
    this.opts = { quickMs: 2000, backoffMs: 100, maxBackoffMs: 10_000, standby: true, ...opts };
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

  /**
   * Supervises a connection whose supervisor died, handed over by the server that serves it
   * (`a.serverPid`, watched by its pid): from now on as if this one had mounted it.
   */
  static adopt(opts: SupervisorOptions, a: Adoption): Supervisor {
    const s = new Supervisor(a.fd, a.mountpoint, opts);
    s.dev = mountInfo(a.mountpoint)?.dev ?? 0;
    s.negotiated = a.resume;
    s.restarts = a.restarts;
    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(a.serverPid, signal);
      } catch {
        /* gone already */
      }
    };
    s.track(a.serverPid, kill, true);
    s.startSpare();
    log.info("adopted the connection of a supervisor that died", {
      mountpoint: a.mountpoint,
      serverPid: a.serverPid,
    });
    return s;
  }

  /** The /dev/fuse descriptor of the connection (e.g. to mount it once more elsewhere). */
  get device(): number {
    return this.fd;
  }

  private report(): void {
    this.opts.onState?.({
      servingPid: this.servingPid,
      restarts: this.restarts,
      quickFailures: this.quickFailures,
      ...(this.lastExit ? { lastExit: this.lastExit } : {}),
      ...(this.retryAtMs ? { retryAtMs: this.retryAtMs } : {}),
    });
  }

  private spawnProcess(standby: boolean): ChildProcess {
    const input = this.opts.childInput?.() ?? { env: {} };
    // What this supervisor was handed is not for its servers: a server handed FUSE_ADOPT
    // would take itself for a supervisor.
    const { [ADOPT_ENV]: _a, [HANDOVER_ENV]: _h, ...base } = this.opts.env ?? process.env;
    const child = spawn(this.opts.command, this.opts.args, {
      // fd 3: the device; fd 4: the IPC channel (INIT reports, take-over orders).
      stdio: [input.stdin === undefined ? "ignore" : "pipe", "inherit", "inherit", this.fd, "ipc"],
      env: {
        ...base,
        ...input.env,
        ...handoverEnv({
          fd: 3,
          mountpoint: this.mountpoint,
          restarts: standby ? this.restarts + 1 : this.restarts,
          supervisorPid: process.pid,
          ...(this.negotiated ? { resume: this.negotiated } : {}),
          ...(standby ? { standby: true, serverPid: this.servingPid } : {}),
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
    const server = this.track(proc.pid ?? 0, (signal) => proc.kill(signal), false);
    proc.on("message", (m: { fuse?: string; negotiated?: NegotiatedJson }) => {
      if (m?.fuse !== "init" || !m.negotiated || this.server !== server) return;
      this.negotiated ??= negotiatedFromJson(m.negotiated);
      server.served = true;
      server.started = Date.now();
      this.servingPid = server.pid;
      this.retryAtMs = undefined;
      this.report();
      this.startSpare();
    });
    proc.on("error", (e) => log.error("cannot start the server", { error: errorMessage(e) }));
    proc.on("exit", (code, signal) => this.gone(server, code, signal));
    log.info("server started", { pid: this.serverPid, restarts: this.restarts });
  }

  /**
   * Makes process `pid` the server (`served`: it serves already) and watches its main thread:
   * a server killed while one of its threads waits for an answer from this very mount (any
   * file operation on it) does not finish exiting: that thread waits for the next server,
   * which is started only after the exit. Its main thread is then a zombie; seen so twice in a
   * row (or gone from /proc: a server that is not our child), the server counts as gone (its
   * last thread ends once the next answers).
   */
  private track(pid: number, kill: (signal: NodeJS.Signals) => void, served: boolean): Server {
    const server: Server = { pid, kill, started: Date.now(), served };
    this.server = server;
    this.serverPid = pid;
    if (served) {
      this.servingPid = pid;
      this.report();
    }
    let zombieChecks = 0;
    const watch = setInterval(() => {
      if (this.server !== server) {
        clearInterval(watch);
        return;
      }
      const main = mainThread(pid);
      zombieChecks = main?.state === "Z" ? zombieChecks + 1 : 0;
      if (main && zombieChecks < 2) return;
      if (main) {
        log.warn("the server's main thread has exited; a thread of it waits for the mount", {
          pid,
        });
      }
      this.gone(server, main?.code ?? null, main?.signal ?? null);
    }, ZOMBIE_CHECK_MS);
    watch.unref();
    return server;
  }

  private gone(server: Server, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.server !== server) return;
    this.server = undefined;
    this.serverPid = 0;
    this.servingPid = 0;
    this.exited(code, signal, server.served ? Date.now() - server.started : 0);
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
      // A server not our child (adopted) ended: its unmount is how it ended well.
      this.finish({ kind: "unmounted", code: code ?? (signal ? 1 : 0) });
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
    const delay =
      this.quickFailures <= 1
        ? 0
        : Math.min(this.opts.backoffMs * 2 ** (this.quickFailures - 2), this.opts.maxBackoffMs);
    this.lastExit = how;
    this.retryAtMs = Date.now() + delay;
    const fields = { how, livedMs, delayMs: delay, diedAtStart: this.quickFailures };
    if (this.quickFailures > 1) log.error("server died at start again; retrying", fields);
    else log.warn("server died; starting a new one on the same connection", fields);
    this.report();
    this.retryTimer = setTimeout(() => this.next(), delay);
  }

  /**
   * Stops: the server is asked to unmount and exit (`signal`, default SIGTERM); with no server
   * running the mount is detached here.
   */
  stop(signal: NodeJS.Signals = "SIGTERM"): Promise<SupervisorEnd> {
    this.stopping = true;
    if (this.server) this.server.kill(signal);
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
