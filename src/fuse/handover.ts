/**
 * The served side of a supervised mount (the supervisor is supervisor.ts): a server started by
 * a `Supervisor` finds the /dev/fuse descriptor it inherited with `inheritedDevice()` and serves
 * it with `serveInherited()`. The first server answers the kernel's INIT and tells the
 * supervisor what was agreed; every later one takes the connection over without an INIT and
 * asks the kernel to resend what its predecessor left unanswered.
 *
 * A standby server (started in advance, so that a failover need not wait for a process to
 * start) gets `standby: true` and waits in `takeOver()` until the supervisor orders it in.
 *
 * Protocol between the two: the environment variable FUSE_HANDOVER (JSON, below) and a Node
 * IPC channel on which the server sends `{ fuse: "init", negotiated }` once it serves, and the
 * supervisor sends a standby `{ fuse: "takeover", restarts, resume }`.
 *
 * A server whose supervisor dies keeps serving and starts a new supervisor that adopts the
 * connection (FUSE_ADOPT, below): the device is inherited as fd 3, the running server is
 * watched by its pid, and a standby is started again; so neither process alone is a single
 * point of failure. When the supervisor and the server die together, the standby (it holds
 * the device too, and knows what INIT agreed) takes the connection over itself and starts the
 * new supervisor. Exactly one of the two survivors recovers: the first to create the file
 * `supervisor-<pid>-gone` next to the passthrough table (O_EXCL); the standby tries only once
 * the server is dead, and gives way when the server claimed it.
 */
import fs from "node:fs";
import path from "node:path";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { FileSystem } from "./filesystem.js";
import { Mount, type MountOptions, mountInfo, setReadahead } from "./mount.js";
import { mainThread } from "./process-watch.js";
import { Session } from "./session.js";
import type { Negotiated, SessionOptions } from "./session-options.js";

const log = logger("fuse");

export const HANDOVER_ENV = "FUSE_HANDOVER";
export const ADOPT_ENV = "FUSE_ADOPT";

/** What a supervised server is handed. */
export interface Handover {
  /** The /dev/fuse descriptor in this process. */
  fd: number;
  /** The mount point (real path). */
  mountpoint: string;
  /** Present when an earlier server answered INIT: take the connection over. */
  resume?: Negotiated;
  /** Servers started before this one on this mount (0 for the first). */
  restarts: number;
  supervisorPid: number;
  /** A standby: call `takeOver()` before anything else. */
  standby?: boolean;
  /** For a standby: the server serving when it was started (it recovers if both die). */
  serverPid?: number;
  /** A standby that took over after its supervisor and the server died: no supervisor yet. */
  orphaned?: boolean;
  /** Where the servers of this connection keep their passthrough table (session option). */
  stateFile?: string;
}

/** The wire form of a Handover (bigints as hex strings). */
interface HandoverJson extends Omit<Handover, "resume"> {
  resume?: NegotiatedJson;
}

export interface NegotiatedJson {
  minor: number;
  flags: string;
  kernelFlags: string;
  maxWrite: number;
}

export function negotiatedToJson(n: Negotiated): NegotiatedJson {
  return { ...n, flags: n.flags.toString(16), kernelFlags: n.kernelFlags.toString(16) };
}

export function negotiatedFromJson(n: NegotiatedJson): Negotiated {
  return { ...n, flags: BigInt(`0x${n.flags}`), kernelFlags: BigInt(`0x${n.kernelFlags}`) };
}

/** The environment entry that hands `h` to a server. */
export function handoverEnv(h: Handover): Record<string, string> {
  const { resume, ...rest } = h;
  const json: HandoverJson = { ...rest, ...(resume ? { resume: negotiatedToJson(resume) } : {}) };
  return { [HANDOVER_ENV]: JSON.stringify(json) };
}

/** Reads the JSON in `env[name]` that names an open descriptor and a mount point. */
function handedJson<T extends { fd: number; mountpoint: string }>(
  env: NodeJS.ProcessEnv,
  name: string,
): T | undefined {
  const raw = env[name];
  if (!raw) return undefined;
  let j: T;
  try {
    j = JSON.parse(raw) as T;
  } catch {
    throw new UserError(`${name} is not valid JSON`);
  }
  if (!Number.isInteger(j.fd) || j.fd < 0 || typeof j.mountpoint !== "string")
    throw new UserError(`${name} names no descriptor and mount point`);
  try {
    fs.fstatSync(j.fd);
  } catch (e) {
    throw new UserError(`${name}: fd ${j.fd} is not open (${errorMessage(e)})`);
  }
  return j;
}

/** The descriptor this process was handed by a supervisor, if it was started by one. */
export function inheritedDevice(env: NodeJS.ProcessEnv = process.env): Handover | undefined {
  const j = handedJson<HandoverJson>(env, HANDOVER_ENV);
  if (!j) return undefined;
  const { resume, ...rest } = j;
  return { ...rest, ...(resume ? { resume: negotiatedFromJson(resume) } : {}) };
}

/** What a new supervisor is handed by the server that outlived the old one. */
export interface Adoption {
  /** The /dev/fuse descriptor in the new supervisor. */
  fd: number;
  mountpoint: string;
  /** The server that serves the connection now (not a child of the new supervisor). */
  serverPid: number;
  restarts: number;
  resume: Negotiated;
}

interface AdoptionJson extends Omit<Adoption, "resume"> {
  resume: NegotiatedJson;
}

/** The environment (without the server's own FUSE_HANDOVER) for a supervisor that adopts. */
export function adoptionEnv(a: Adoption, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { [HANDOVER_ENV]: _, ...rest } = env;
  const json: AdoptionJson = { ...a, resume: negotiatedToJson(a.resume) };
  return { ...rest, [ADOPT_ENV]: JSON.stringify(json) };
}

/** The connection this process is to adopt as a supervisor, if it was started for that. */
export function adoptedDevice(env: NodeJS.ProcessEnv = process.env): Adoption | undefined {
  const j = handedJson<AdoptionJson>(env, ADOPT_ENV);
  if (!j) return undefined;
  if (!Number.isInteger(j.serverPid) || !j.resume)
    throw new UserError(`${ADOPT_ENV} names no server and no agreed parameters`);
  return { ...j, resume: negotiatedFromJson(j.resume) };
}

/** The marker whose creator recovers from the death of supervisor `h.supervisorPid`. */
function recoveryMarker(h: Handover): string | undefined {
  return h.stateFile ? markerPath(h.stateFile, h.supervisorPid) : undefined;
}

function markerPath(stateFile: string, supervisorPid: number): string {
  return path.join(path.dirname(stateFile), `supervisor-${supervisorPid}-gone`);
}

/**
 * For a server whose supervisor (not its parent: one it started to adopt the connection) died:
 * claims the recovery (false: that supervisor's standby found this server dead and took over).
 */
export function claimSupervisorRecovery(stateFile: string, supervisorPid: number): boolean {
  return claimRecovery(markerPath(stateFile, supervisorPid));
}

/** Claims the recovery from a supervisor's death; false if another process did. */
function claimRecovery(marker: string): boolean {
  try {
    fs.closeSync(fs.openSync(marker, "wx", 0o600));
    return true;
  } catch {
    return false;
  }
}

/**
 * For a standby whose supervisor died: true once the server is dead too and this standby
 * claimed the recovery; false as soon as the server (alive) claimed it, or nothing is known.
 */
async function orphanedRecovery(h: Handover): Promise<boolean> {
  const marker = recoveryMarker(h);
  if (!marker || !h.resume || !h.serverPid) return false;
  for (;;) {
    if (fs.existsSync(marker)) return false;
    const main = mainThread(h.serverPid);
    if (!main || main.state === "Z") return claimRecovery(marker);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * For a standby server: resolves when the supervisor orders it to take the connection over
 * (with the parameters in effect then); at once for any other. A standby whose supervisor goes
 * away exits, unless the server died too: then it takes over itself (`orphaned`).
 */
export function takeOver(h: Handover): Promise<Handover> {
  if (!h.standby) return Promise.resolve(h);
  return new Promise((resolve) => {
    const onMessage = (m: { fuse?: string; restarts?: number; resume?: NegotiatedJson }) => {
      if (m?.fuse !== "takeover" || !m.resume) return;
      process.off("message", onMessage);
      process.off("disconnect", onGone);
      const { standby: _, ...rest } = h;
      resolve({
        ...rest,
        restarts: m.restarts ?? h.restarts,
        resume: negotiatedFromJson(m.resume),
      });
    };
    const onGone = () => {
      process.off("message", onMessage);
      void orphanedRecovery(h).then((recover) => {
        if (!recover) process.exit(0);
        log.warn("the supervisor and the server are gone: this standby takes over", {
          mountpoint: h.mountpoint,
          supervisorPid: h.supervisorPid,
          serverPid: h.serverPid,
        });
        const { standby: _, ...rest } = h;
        resolve({ ...rest, orphaned: true });
      });
    };
    process.on("message", onMessage);
    process.once("disconnect", onGone);
  });
}

/**
 * Serves `fileSystem` on the handed-over connection. The first server waits for INIT (up to
 * `initTimeoutMs`) and reports what was agreed to the supervisor; a later one resumes at once.
 * The returned `Mount` unmounts as usual (the supervisor then sees a clean exit).
 */
export async function serveInherited(
  h: Handover,
  fileSystem: FileSystem,
  options: MountOptions & SessionOptions = {},
  onSupervisorGone?: (adopt: Omit<Adoption, "fd">) => void,
): Promise<Mount> {
  if (h.standby) throw new Error("serveInherited: a standby must takeOver() first");
  const session = new Session(h.fd, fileSystem, {
    ...options,
    ...(h.resume ? { resume: h.resume } : {}),
    ...(h.stateFile ? { passthroughStateFile: h.stateFile } : {}),
  });
  const timeout = options.initTimeoutMs ?? 10000;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    session.ready,
    new Promise((_res, rej) => {
      timer = setTimeout(
        () => rej(new UserError(`FUSE INIT on ${h.mountpoint} timed out after ${timeout} ms`)),
        timeout,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  // The supervisor learns what INIT agreed (a resumed server repeats it: harmless).
  const supervisorGone = () =>
    onSupervisorGone?.({
      mountpoint: h.mountpoint,
      serverPid: process.pid,
      restarts: h.restarts,
      resume: session.negotiated,
    });
  if (h.orphaned) supervisorGone();
  else if (process.send) {
    process.send({ fuse: "init", negotiated: negotiatedToJson(session.negotiated) });
    process.channel?.unref();
    process.once("disconnect", () => {
      const marker = recoveryMarker(h);
      if (marker && !claimRecovery(marker)) {
        // The standby found this server dead (its main thread had exited) and took over.
        log.warn("the supervisor is gone and a standby took the connection over: exiting", {
          mountpoint: h.mountpoint,
        });
        process.exit(0);
      }
      log.warn("the supervisor is gone", { mountpoint: h.mountpoint });
      supervisorGone();
    });
  }
  // From the mount table, not stat(2): a stat of the mount is a request to this server, and a
  // thread of a server killed while it waits for that answer keeps the dying process from
  // exiting until another server answers (the supervisor waits for the exit to start one).
  const dev = mountInfo(h.mountpoint)?.dev ?? Number((await fs.promises.stat(h.mountpoint)).dev);
  if (!h.resume && options.readaheadKb !== undefined) setReadahead(dev, options.readaheadKb);
  log.info(h.resume ? "took the connection over" : "serving", {
    mountpoint: h.mountpoint,
    dev,
    restarts: h.restarts,
  });
  return new Mount(h.mountpoint, session, dev);
}
