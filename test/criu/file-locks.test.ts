/**
 * POSIX locks across a real `criu dump --file-locks` / `criuRestore`: a process that holds a
 * lock on a file it also maps MAP_SHARED (as SQLite does on its `-shm` file) loses that lock
 * in CRIU's own restore; criuRestore takes it back before the process runs. The locks are
 * compared as /proc/locks shows them (kind, type, range), and another process must still be
 * refused a conflicting lock.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  criuDump,
  criuRestore,
  encodeMessage,
  IMG_COMMON_MAGIC,
  imageLocks,
  kindByName,
  parseLockLines,
} from "../../src/criu/index.js";
import { alive, killPid, startWorkload, waitForFile } from "../support/workload.js";

/** Locks bytes of two files the way SQLite in WAL mode does, maps one shared, and counts. */
const SCRIPT = `
import fcntl, mmap, os, sys, time
d = sys.argv[1]
shm = os.open(os.path.join(d, "db-shm"), os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(shm, 32768)
m = mmap.mmap(shm, 32768, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
fcntl.lockf(shm, fcntl.LOCK_SH, 1, 128)
db = os.open(os.path.join(d, "db"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(db, fcntl.LOCK_SH, 510, 1073741826)
fcntl.lockf(db, fcntl.LOCK_EX, 4096, 0)
fcntl.lockf(db, fcntl.LOCK_EX, 0, 1 << 31)
open(os.path.join(d, "ready"), "w").close()
i = 0
while True:
    i += 1
    m[0:8] = i.to_bytes(8, "little")
    with open(os.path.join(d, "count.tmp"), "w") as f:
        f.write(str(i))
    os.rename(os.path.join(d, "count.tmp"), os.path.join(d, "count"))
    time.sleep(0.01)
`;

/** The locks of `pid` in /proc/locks, as "KIND TYPE start-end", sorted. */
function locksOf(pid: number): string[] {
  return parseLockLines(readFileSync("/proc/locks", "utf8"))
    .filter((l) => l.pid === pid)
    .map((l) => `${l.kind} ${l.type} ${l.start}-${l.end}`)
    .sort();
}

/** Whether another process is refused a write lock on byte `start` of `file`. */
function refused(file: string, start: number): boolean {
  const out = execFileSync("python3", [
    "-c",
    "import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n  fcntl.lockf(fd,fcntl.LOCK_EX|fcntl.LOCK_NB,1,int(sys.argv[2]))\n  print('got')\nexcept OSError:\n  print('refused')",
    file,
    String(start),
  ]);
  return out.toString().trim() === "refused";
}

const counter = (dir: string) => Number(readFileSync(join(dir, "count"), "utf8"));

describe("criu restore --file-locks keeps every POSIX lock", () => {
  let dir: string;
  let pid = 0;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "lazyfs-criu-locks-"));
  });
  after(async () => {
    if (pid) await killPid(pid);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a lock on a file mapped shared is held again after the restore, before it runs", async () => {
    const w = startWorkload({ argv: ["python3", "-c", SCRIPT, dir] });
    pid = w.pid;
    await waitForFile(join(dir, "ready"));
    const before = locksOf(pid);
    assert.deepEqual(before, [
      "POSIX READ 1073741826-1073742335",
      "POSIX READ 128-128",
      "POSIX WRITE 0-4095",
      "POSIX WRITE 2147483648-EOF",
    ]);
    const images = join(dir, "images");
    mkdirSync(images);
    await criuDump({ pid, imagesDir: images, extraArgs: ["--file-locks"] });
    await w.stop();
    const { pid: restored } = await criuRestore({ imagesDir: images, extraArgs: ["--file-locks"] });
    assert.equal(restored, pid);
    assert.deepEqual(locksOf(pid), before, "the same locks, by kind, type and range");
    assert.ok(refused(join(dir, "db-shm"), 128), "another process sees the lock on db-shm");
    assert.ok(refused(join(dir, "db"), 100), "and the one on db");
    // It runs on (its mapping and its files work).
    const n = counter(dir);
    while (counter(dir) < n + 5) await sleep(10);
    assert.ok(alive(pid));
  });

  test("a process stopped at the dump is restored with its locks and stays stopped", async () => {
    await killPid(pid);
    rmSync(join(dir, "ready"), { force: true });
    const w = startWorkload({ argv: ["python3", "-c", SCRIPT, dir] });
    pid = w.pid;
    await waitForFile(join(dir, "ready"));
    const before = locksOf(pid);
    process.kill(pid, "SIGSTOP");
    while (!/^\d+ \(.*\) T/s.test(readFileSync(`/proc/${pid}/stat`, "utf8"))) await sleep(10);
    const images = join(dir, "images-stopped");
    mkdirSync(images);
    await criuDump({ pid, imagesDir: images, extraArgs: ["--file-locks"] });
    await w.stop();
    await criuRestore({ imagesDir: images, extraArgs: ["--file-locks"] });
    assert.deepEqual(locksOf(pid), before);
    const n = counter(dir);
    await sleep(200);
    assert.match(readFileSync(`/proc/${pid}/stat`, "utf8"), /^\d+ \(.*\) T/s, "still stopped");
    assert.equal(counter(dir), n);
    process.kill(pid, "SIGCONT");
    while (counter(dir) < n + 3) await sleep(10);
  });

  test("restored into a new pid namespace: the locks are taken back by host pid", async () => {
    await killPid(pid);
    rmSync(join(dir, "ready"), { force: true });
    const w = startWorkload({ argv: ["python3", "-c", SCRIPT, dir] });
    const original = w.pid;
    await waitForFile(join(dir, "ready"));
    const before = locksOf(original);
    const images = join(dir, "images-pidns");
    mkdirSync(images);
    await criuDump({ pid: original, imagesDir: images, extraArgs: ["--file-locks"] });
    await w.stop();
    const root = await criuRestore({
      imagesDir: images,
      extraArgs: ["--file-locks"],
      newPidNamespace: true,
      ownSession: true,
    });
    pid = root.initPid ?? root.pid; // killing the init ends the whole namespace
    assert.equal(root.nsPid, original, "its own pid inside the namespace");
    assert.notEqual(root.pid, original);
    assert.deepEqual(locksOf(root.pid), before, "the same locks, held by the host pid");
    assert.ok(refused(join(dir, "db-shm"), 128), "another process sees the lock on db-shm");
    const n = counter(dir);
    while (counter(dir) < n + 5) await sleep(10);
    assert.ok(alive(root.pid));
  });

  test("filelocks.img entries and /proc lock lines decode to kind, type and range", async () => {
    const sub = join(dir, "decode");
    mkdirSync(sub);
    const entry = (flag: number, type: number, start: number, len: number) =>
      encodeMessage("file_lock_entry", { flag, type, pid: 42, fd: 5, start, len });
    const header = Buffer.alloc(8);
    header.writeUInt32LE(IMG_COMMON_MAGIC, 0);
    header.writeUInt32LE(kindByName("FILE_LOCKS").magic, 4);
    const parts = [header];
    for (const e of [entry(1, 0, 128, 1), entry(2, 1, 0, 0), entry(4, 1, 5, 9)]) {
      const size = Buffer.alloc(4);
      size.writeUInt32LE(e.length);
      parts.push(size, Buffer.from(e));
    }
    writeFileSync(join(sub, "filelocks.img"), Buffer.concat(parts));
    assert.deepEqual(await imageLocks(sub), [
      { pid: 42, fd: 5, kind: "posix", type: "read", start: 128, len: 1 },
      { pid: 42, fd: 5, kind: "flock", type: "write", start: 0, len: 0 },
      { pid: 42, fd: 5, kind: "ofd", type: "write", start: 5, len: 9 },
    ]);
    assert.deepEqual(await imageLocks(join(dir, "none")), []);
    const proc = [
      "1: POSIX  ADVISORY  READ 7051 fe:00:2173266 128 128",
      "1: -> POSIX  ADVISORY  WRITE 7060 fe:00:2173266 128 128",
      "2: OFDLCK ADVISORY  WRITE -1 00:3a:12 0 EOF",
      "lock:\t3: FLOCK  ADVISORY  WRITE 9 00:3a:13 0 EOF",
    ].join("\n");
    assert.deepEqual(parseLockLines(proc), [
      { kind: "POSIX", type: "READ", pid: 7051, start: 128, end: 128 },
      { kind: "OFDLCK", type: "WRITE", pid: -1, start: 0, end: "EOF" },
      { kind: "FLOCK", type: "WRITE", pid: 9, start: 0, end: "EOF" },
    ]);
  });
});
