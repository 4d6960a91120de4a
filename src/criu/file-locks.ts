/**
 * POSIX locks that `criu restore --file-locks` loses, and taking them back.
 *
 * CRIU (4.2, and its master as of 2026) restores a task's file locks right after its fds
 * (prepare_file_locks), and only then opens the files of its shared mappings a second time
 * (open_vmas); the restorer maps them and closes those second descriptors. Closing any
 * descriptor of a file drops every POSIX lock the process holds on it, so a process restored
 * with a POSIX lock on a file it also maps MAP_SHARED runs on without that lock. SQLite in WAL
 * mode is one: its shared lock on byte 128 of the `-shm` file (the "dead man switch") tells a
 * new connection that others use the index; without it the next connection truncates `-shm`
 * under the writer's mapping and the writer dies of SIGBUS.
 *
 * So a restore with `--file-locks` leaves the tree stopped; this module compares what the
 * image says each process held with what it holds (its fdinfo), takes each missing POSIX lock
 * again from inside the process (inject.ts) and only then lets the tree run.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { decodeEntries, decodeEntry, expectKind, readImage } from "./image.js";
import { injectSyscall } from "./inject.js";

const log = logger("criu");

const FL_POSIX = 1;
const FL_FLOCK = 2;
const FL_OFD = 4;
const F_RDLCK = 0;
const F_WRLCK = 1;
const SYS_FCNTL = 72;
const F_SETLK = 6;
/** core_entry.tc.task_state of a task that was running (not stopped, not a zombie). */
const TASK_ALIVE = 1;

/** One lock of filelocks.img. */
export interface ImageLock {
  pid: number;
  fd: number;
  kind: "posix" | "flock" | "ofd" | "other";
  type: "read" | "write" | "other";
  start: number;
  /** 0: to the end of the file. */
  len: number;
}

/** A lock as /proc shows it: kind, type and byte range (`end` "EOF" for len 0). */
export interface HeldLock {
  kind: string;
  type: string;
  pid: number;
  start: number;
  end: number | "EOF";
}

/** The locks of the dump in `dir` (none when it was made without --file-locks). */
export async function imageLocks(dir: string): Promise<ImageLock[]> {
  const path = join(dir, "filelocks.img");
  if (!existsSync(path)) return [];
  const image = await readImage(path);
  expectKind(image, "FILE_LOCKS");
  return decodeEntries(image).map((e) => {
    const flag = Number(e.flag);
    const type = Number(e.type);
    return {
      pid: Number(e.pid),
      fd: Number(e.fd),
      kind: flag & FL_POSIX ? "posix" : flag & FL_FLOCK ? "flock" : flag & FL_OFD ? "ofd" : "other",
      type: type === F_RDLCK ? "read" : type === F_WRLCK ? "write" : "other",
      start: Number(e.start),
      len: Number(e.len),
    };
  });
}

/** The `lock:` lines of a /proc fdinfo file (or the lines of /proc/locks). */
export function parseLockLines(text: string): HeldLock[] {
  const out: HeldLock[] = [];
  for (const line of text.split("\n")) {
    // "lock:\t1: POSIX  ADVISORY  READ 7051 fe:00:2173266 128 128"; "->" marks a waiter.
    const m = /^(?:lock:\s*)?\d+: (\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$/.exec(
      line,
    );
    if (!m) continue;
    out.push({
      kind: m[1]!,
      type: m[2]!,
      pid: Number(m[3]),
      start: Number(m[4]),
      end: m[5] === "EOF" ? "EOF" : Number(m[5]),
    });
  }
  return out;
}

/** Whether `held` is the POSIX lock `want` of its process. */
function holds(held: HeldLock[], want: ImageLock): boolean {
  const end = want.len === 0 ? "EOF" : want.start + want.len - 1;
  return held.some(
    (h) =>
      h.kind === "POSIX" &&
      h.pid === want.pid &&
      h.type === (want.type === "read" ? "READ" : "WRITE") &&
      h.start === want.start &&
      h.end === end,
  );
}

/** The POSIX locks of the image that their process does not hold now. */
export async function lostPosixLocks(locks: readonly ImageLock[]): Promise<ImageLock[]> {
  const lost: ImageLock[] = [];
  for (const l of locks) {
    if (l.kind !== "posix" || l.type === "other") continue;
    const text = await readFile(`/proc/${l.pid}/fdinfo/${l.fd}`, "utf8").catch(() => "");
    if (!holds(parseLockLines(text), l)) lost.push(l);
  }
  return lost;
}

/** struct flock of x86_64: l_type, l_whence (SEEK_SET), l_start, l_len, l_pid. */
function flock(l: ImageLock): Buffer {
  const b = Buffer.alloc(32);
  b.writeInt16LE(l.type === "read" ? F_RDLCK : F_WRLCK, 0);
  b.writeInt16LE(0, 2);
  b.writeBigInt64LE(BigInt(l.start), 8);
  b.writeBigInt64LE(BigInt(l.len), 16);
  return b;
}

/**
 * Takes every lost POSIX lock of the image again inside its (stopped) process; throws a
 * UserError naming the first one that cannot be had. Returns how many were taken.
 */
export async function retakeLostLocks(locks: readonly ImageLock[]): Promise<number> {
  const lost = await lostPosixLocks(locks);
  for (const l of lost) {
    const what = `${l.type} lock on bytes ${l.start}+${l.len || "EOF"} of fd ${l.fd} of process ${l.pid}`;
    let r: number;
    try {
      r = injectSyscall(l.pid, { nr: SYS_FCNTL, args: [l.fd, F_SETLK, "data"], data: flock(l) });
    } catch (err) {
      throw new UserError(
        `cannot take back the ${what} that criu restore lost: ${errorMessage(err)}`,
      );
    }
    if (r < 0) {
      throw new UserError(`cannot take back the ${what} that criu restore lost: errno ${-r}`);
    }
  }
  const still = await lostPosixLocks(locks);
  if (still.length > 0) {
    const l = still[0]!;
    throw new UserError(
      `process ${l.pid} does not hold its ${l.type} lock on fd ${l.fd} after the restore`,
    );
  }
  if (lost.length > 0) log.info("took back POSIX locks criu restore lost", { count: lost.length });
  return lost.length;
}

/** The processes of the dump in `dir` and whether each was running (not stopped) at the dump. */
export async function dumpedProcesses(dir: string): Promise<{ pid: number; running: boolean }[]> {
  const pstree = await readImage(join(dir, "pstree.img"));
  expectKind(pstree, "PSTREE");
  const out: { pid: number; running: boolean }[] = [];
  for (const t of decodeEntries(pstree)) {
    const pid = Number(t.pid);
    const core = await readImage(join(dir, `core-${pid}.img`));
    expectKind(core, "CORE");
    const tc = decodeEntry(core, 0).tc as { task_state?: number } | undefined;
    out.push({ pid, running: tc?.task_state === TASK_ALIVE });
  }
  return out;
}
