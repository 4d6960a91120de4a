/**
 * Where simulated hosts are recorded and how their namespaces are found and emptied.
 *
 * Every pair is recorded in `/run/lazyfs/hosts/lazyfs-<id>/pair.json` before anything is
 * created, so that a crashed run can be cleaned up later. The mount and PID namespaces of host
 * `a` are pinned by bind mounts of their nsfs files on `/run/lazyfs/hosts/lazyfs-<id>/a.mnt`
 * and `a.pidns` (that directory tree is a private bind mount, as ip-netns does for
 * /run/netns); the network namespaces are ordinary `ip netns` entries
 * `/run/netns/lazyfs-<id>-a`, `-b` (and `-c` for the client host).
 */
import { existsSync } from "node:fs";
import { readdir, readFile, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import { errnoCode } from "../common/errors.js";
import { abortConnection } from "../fuse/index.js";

export const STATE_ROOT = "/run/lazyfs/hosts";
export const NETNS_DIR = "/run/netns";
/** The path that holds each host's data; every host mounts its own tmpfs here. */
export const DATA_DIR = "/srv/lazyfs-data";
export const CRIU_BIN = process.env.LAZYFS_CRIU ?? "/opt/lazyfs/criu/bin/criu";
/** A Python that starts fast (the system one, not a version-manager shim). */
export const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
export const PREFIX = "lazyfs-";

export type HostRole = "a" | "b" | "c";
export const ROLES: readonly HostRole[] = ["a", "b", "c"];

/**
 * The last pid handed out in each host's PID namespace when it starts (written to its
 * /proc/sys/kernel/ns_last_pid; pid_max is 32768): a process started on a (1001 and up) is
 * free on b and c, whose own processes take higher numbers, so a tree restores with its pids.
 * a gets the widest range: a long test file forks thousands of processes there, and a pid of
 * a that reached b's range could be taken on b by chance.
 */
export const PID_BASE: Readonly<Record<HostRole, number>> = { a: 1000, b: 14000, c: 23500 };

export interface PairRecord {
  /** `lazyfs-<id>`, also the directory name under STATE_ROOT. */
  name: string;
  /** Third octet of 10.213.N.0/24. */
  subnet: number;
  ownerPid: number;
  /** Field 22 of /proc/<ownerPid>/stat, to tell a live owner from a reused pid. */
  ownerStart: string;
  createdAt: number;
}

export function pairDir(pairName: string): string {
  return join(STATE_ROOT, pairName);
}
export function mntFile(pairName: string, role: HostRole): string {
  return join(pairDir(pairName), `${role}.mnt`);
}
export function pidnsFile(pairName: string, role: HostRole): string {
  return join(pairDir(pairName), `${role}.pidns`);
}
export function netnsName(pairName: string, role: HostRole): string {
  return `${pairName}-${role}`;
}
export function netnsFile(pairName: string, role: HostRole): string {
  return join(NETNS_DIR, netnsName(pairName, role));
}

/** The fields of a /proc/PID/stat file after `comm` (field 3 first), or undefined if gone. */
export async function statFields(statFile: string): Promise<string[] | undefined> {
  try {
    const stat = await readFile(statFile, "utf8");
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** Start time of a process (clock ticks since boot), or undefined if it does not exist. */
export async function processStart(pid: number): Promise<string | undefined> {
  return (await statFields(`/proc/${pid}/stat`))?.[19]; // field 22 overall
}

export async function ownerAlive(rec: PairRecord): Promise<boolean> {
  return (await processStart(rec.ownerPid)) === rec.ownerStart;
}

/** Inode of a namespace file (nsfs), or undefined if no namespace is bind-mounted there. */
export async function nsInode(file: string): Promise<number | undefined> {
  // An unmounted placeholder is a plain empty file on the root fs, not a namespace.
  if (!(await isMountPoint(file))) return undefined;
  try {
    return (await stat(file)).ino;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

export async function isMountPoint(path: string): Promise<boolean> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").some((l) => l.split(" ")[4] === path);
}

/** Pids (ours) of processes whose network, mount or PID namespace inode is in `inodes`. */
export async function processesIn(inodes: ReadonlySet<number>): Promise<number[]> {
  if (inodes.size === 0) return [];
  const found: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    for (const kind of ["net", "mnt", "pid"]) {
      try {
        const link = await readlink(`/proc/${pid}/ns/${kind}`);
        const m = /\[(\d+)\]/.exec(link);
        if (m && inodes.has(Number(m[1]))) {
          found.push(pid);
          break;
        }
      } catch {
        // gone, a zombie, or not ours to look at
      }
    }
  }
  return found;
}

/** SIGKILL every process in these namespaces until none is left (or `timeoutMs` passes). */
export async function killProcessesIn(
  inodes: ReadonlySet<number>,
  timeoutMs = 5000,
): Promise<number[]> {
  const killed = new Set<number>();
  const start = Date.now();
  let aborted = false;
  for (;;) {
    const pids = await processesIn(inodes);
    if (pids.length === 0) return [...killed];
    if (!aborted && Date.now() - start > 500) {
      // Stuck in a FUSE request whose daemon lives outside the host: abort the connection.
      aborted = true;
      await abortHostFuseConnections(pids);
    }
    if (Date.now() - start > timeoutMs) {
      throw new Error(`hosts: processes ${pids.join(", ")} survive SIGKILL in a host namespace`);
    }
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
        killed.add(pid);
      } catch {
        // already gone
      }
    }
    await sleep(20);
  }
}

/**
 * Aborts the FUSE connections mounted in the mount namespaces of `pids` but not in ours (so
 * only mounts made inside a host), which frees tasks blocked in a request that no daemon will
 * answer. Mounts the fusectl file system if needed.
 */
export async function abortHostFuseConnections(pids: readonly number[]): Promise<void> {
  const fuseDevs = (mountinfo: string) =>
    mountinfo
      .split("\n")
      .map((line) => line.split(" "))
      .filter((f) => {
        const type = f[f.indexOf("-") + 1] ?? "";
        return type === "fuse" || type.startsWith("fuse.");
      })
      .map((f) => f[2]!);
  const ours = new Set(fuseDevs(await readFile("/proc/self/mountinfo", "utf8")));
  const devs = new Set<string>();
  for (const pid of pids) {
    const info = await readFile(`/proc/${pid}/mountinfo`, "utf8").catch(() => "");
    for (const dev of fuseDevs(info)) if (!ours.has(dev)) devs.add(dev);
  }
  for (const dev of devs) {
    const [major, minor] = dev.split(":").map(Number);
    // The connection is named after the kernel dev_t: major << 20 | minor.
    abortConnection((major! << 20) | minor!);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
