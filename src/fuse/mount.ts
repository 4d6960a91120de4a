/**
 * Mounting and unmounting (root only): open /dev/fuse, hand it to mount(8) as fd 3, run a
 * `Session` on it; unmount with umount(8), lazily detaching and aborting the connection when
 * files are still open; recover a stale mount left by a crashed server.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { FileSystem } from "./filesystem.js";
import { Session } from "./session.js";
import type { SessionOptions } from "./session-options.js";

const log = logger("fuse");

export interface MountOptions extends SessionOptions {
  /** File system type suffix: mounted as `fuse.<subtype>`; default "node". */
  subtype?: string;
  /** Source column of the mount table; default the subtype. */
  fsName?: string;
  /** Let users other than the mounter access the mount. */
  allowOther?: boolean;
  /** Let the kernel check permissions from the mode bits. */
  defaultPermissions?: boolean;
  /** Owner of the mount (user_id/group_id); default the current process. */
  uid?: number;
  gid?: number;
  /** Kernel readahead for this mount (KiB), set in /sys/class/bdi after mounting. */
  readaheadKb?: number;
  /** How long to wait for the kernel's INIT, ms; default 10000. */
  initTimeoutMs?: number;
}

interface Run {
  code: number | null;
  out: string;
}

function run(cmd: string, args: string[], extraFd?: number): Promise<Run> {
  return new Promise((resolve) => {
    const stdio: (number | "ignore" | "pipe")[] = ["ignore", "pipe", "pipe"];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(cmd, args, { stdio });
    let out = "";
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      out += d;
    });
    child.on("error", (e) => resolve({ code: -1, out: errorMessage(e) }));
    child.on("close", (code) => resolve({ code, out: out.trim() }));
  });
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * The mount table entry fields (fstype, source, and st_dev from its major:minor) of `path` if
 * it is a mount point.
 */
export function mountInfo(
  path: string,
): { fstype: string; source: string; dev: number } | undefined {
  const table = fs.readFileSync("/proc/self/mountinfo", "utf8");
  let found: { fstype: string; source: string; dev: number } | undefined;
  for (const line of table.split("\n")) {
    const f = line.split(" ");
    if (f.length < 10 || unescapeMountinfo(f[4]) !== path) continue;
    const dash = f.indexOf("-");
    const [major = 0, minor = 0] = f[2].split(":").map(Number);
    const dev = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
    found = { fstype: f[dash + 1], source: unescapeMountinfo(f[dash + 2]), dev };
  }
  return found;
}

/**
 * If `mountpoint` is a FUSE mount whose server died ("Transport endpoint is not connected"),
 * detach it lazily. Returns true if something was recovered.
 */
export async function recoverStaleMount(mountpoint: string): Promise<boolean> {
  try {
    // Listing needs the server (attributes may still be cached by the kernel).
    fs.opendirSync(mountpoint).closeSync();
    return false;
  } catch (e) {
    if (errnoCode(e) !== "ENOTCONN" && errnoCode(e) !== "ECONNABORTED") return false;
  }
  log.warn("detaching stale FUSE mount", { mountpoint });
  let r = await run("umount", ["-l", mountpoint]);
  if (r.code !== 0) r = await run("fusermount3", ["-u", "-z", mountpoint]);
  if (r.code !== 0) throw new UserError(`cannot detach stale mount ${mountpoint}: ${r.out}`);
  return true;
}

const FUSECTL = "/sys/fs/fuse/connections";

/**
 * Aborts kernel FUSE connection `id` (the st_dev of its mount's root): every waiting and
 * future request fails with ENOTCONN. Mounts the fusectl file system first when nothing has
 * (a machine without systemd has no unit doing it). Returns whether the abort was written.
 */
export function abortConnection(id: number): boolean {
  if (!mountInfo(FUSECTL)) {
    spawnSync("mount", ["-t", "fusectl", "fusectl", FUSECTL], { stdio: "ignore" });
  }
  try {
    fs.writeFileSync(`${FUSECTL}/${id}/abort`, "1");
    return true;
  } catch (e) {
    log.debug("abort failed", { connection: id, error: errorMessage(e) });
    return false;
  }
}

export class Mount {
  readonly mountpoint: string;
  readonly session: Session;
  /** Kernel connection number (st_dev of the root), for /sys/fs/fuse/connections. */
  dev: number;
  private unmounting: Promise<void> | undefined;

  constructor(mountpoint: string, session: Session, dev: number) {
    this.mountpoint = mountpoint;
    this.session = session;
    this.dev = dev;
  }

  /** Resolves when the session ended (unmounted by anyone, or aborted). */
  get closed(): Promise<void> {
    return this.session.closed;
  }

  /** Aborts the kernel connection: every waiting and future request fails with ENOTCONN. */
  abort(): void {
    abortConnection(this.dev);
  }

  /**
   * Unmounts. If files are still open (EBUSY) the mount is detached lazily and the connection
   * aborted, so the holders get ENOTCONN instead of hanging. Idempotent.
   */
  unmount(): Promise<void> {
    this.unmounting ??= this.doUnmount();
    return this.unmounting;
  }

  private async doUnmount(): Promise<void> {
    if (mountInfo(this.mountpoint)) {
      let r = await run("umount", [this.mountpoint]);
      if (r.code !== 0) {
        log.info("umount failed, detaching lazily", { mountpoint: this.mountpoint, error: r.out });
        r = await run("umount", ["-l", this.mountpoint]);
        if (r.code !== 0) r = await run("fusermount3", ["-u", "-z", this.mountpoint]);
        this.abort();
        if (r.code !== 0 && mountInfo(this.mountpoint))
          throw new UserError(`cannot unmount ${this.mountpoint}: ${r.out}`);
      }
    }
    const timer = setTimeout(() => this.abort(), 5000);
    await this.session.closed;
    clearTimeout(timer);
  }
}

/**
 * The first half of `mount`: opens /dev/fuse and mounts it at `mountpoint` (recovering a stale
 * mount there first), without serving it. Returns the device fd (the caller owns it: hand it to
 * a `Session`, or to a served child, see supervisor.ts) and the real mount point. Root only.
 */
export async function mountDevice(
  mountpoint: string,
  options: MountOptions = {},
): Promise<{ fd: number; mountpoint: string }> {
  if (process.getuid?.() !== 0)
    throw new UserError(`mounting ${mountpoint} needs root (FUSE via mount(8))`);
  await recoverStaleMount(mountpoint);
  let real: string;
  try {
    real = fs.realpathSync(mountpoint);
    if (!fs.statSync(real).isDirectory())
      throw new UserError(`mount point ${mountpoint} is not a directory`);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`mount point ${mountpoint}: ${errorMessage(e)}`);
  }
  if (mountInfo(real)) throw new UserError(`${mountpoint} is already a mount point`);
  const args = deviceMountArgs(real, options);
  let fd: number;
  try {
    fd = fs.openSync("/dev/fuse", fs.constants.O_RDWR);
  } catch (e) {
    throw new UserError(`cannot open /dev/fuse: ${errorMessage(e)}`);
  }
  const r = await run("mount", args, fd);
  if (r.code !== 0) {
    fs.closeSync(fd);
    throw new UserError(`mount of ${real} failed: ${r.out || `exit ${r.code}`}`);
  }
  return { fd, mountpoint: real };
}

/**
 * mount(8)'s arguments that mount the /dev/fuse descriptor at fd 3 on `target`. Given a
 * descriptor whose connection is mounted already, the kernel mounts that same connection once
 * more (e.g. in another mount namespace).
 */
export function deviceMountArgs(target: string, options: MountOptions = {}): string[] {
  const subtype = options.subtype ?? "node";
  if (!/^[A-Za-z0-9_-]+$/.test(subtype)) throw new UserError(`bad FUSE subtype "${subtype}"`);
  const fsName = options.fsName ?? subtype;
  if (/[,\s]/.test(fsName))
    throw new UserError(`bad FUSE fsName "${fsName}" (no commas or spaces)`);
  const opts = [
    "fd=3",
    "rootmode=40000",
    `user_id=${options.uid ?? process.getuid?.() ?? 0}`,
    `group_id=${options.gid ?? process.getgid?.() ?? 0}`,
    "nosuid",
    "nodev",
  ];
  if (options.allowOther) opts.push("allow_other");
  if (options.defaultPermissions) opts.push("default_permissions");
  return ["-i", "-c", "-t", `fuse.${subtype}`, "-o", opts.join(","), fsName, target];
}

/** Mounts `fileSystem` at `mountpoint` and serves it until unmounted. Root only. */
export async function mount(
  mountpoint: string,
  fileSystem: FileSystem,
  options: MountOptions = {},
): Promise<Mount> {
  const { fd, mountpoint: real } = await mountDevice(mountpoint, options);
  const session = new Session(fd, fileSystem, options);
  const m = new Mount(real, session, 0);
  const timeout = options.initTimeoutMs ?? 10000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      session.ready,
      new Promise((_res, rej) => {
        timer = setTimeout(
          () => rej(new UserError(`FUSE INIT on ${real} timed out after ${timeout} ms`)),
          timeout,
        );
      }),
    ]);
  } catch (e) {
    clearTimeout(timer);
    await run("umount", ["-l", real]);
    throw e;
  }
  clearTimeout(timer);
  const dev = Number((await fs.promises.stat(real)).dev);
  m.dev = dev;
  if (options.readaheadKb !== undefined) setReadahead(dev, options.readaheadKb);
  log.info("mounted", { mountpoint: real, dev });
  return m;
}

/** Sets the kernel readahead (KiB) of the mount whose st_dev is `dev`. */
export function setReadahead(dev: number, kb: number): void {
  const bdi = `/sys/class/bdi/${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}/read_ahead_kb`;
  try {
    fs.writeFileSync(bdi, String(kb));
  } catch (e) {
    log.warn("cannot set readahead", { bdi, error: errorMessage(e) });
  }
}

/**
 * Opt-in: unmount on SIGINT/SIGTERM, then exit (130/143). Returns a function that removes
 * the handlers. A library never installs these by itself.
 */
export function unmountOnSignals(
  m: Mount,
  signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM"],
): () => void {
  const handler = (sig: NodeJS.Signals) => {
    log.info("signal, unmounting", { signal: sig, mountpoint: m.mountpoint });
    m.unmount()
      .catch((e) => log.error("unmount failed", { error: errorMessage(e) }))
      .finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
  };
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}
