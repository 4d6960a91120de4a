/**
 * FUSE throughput on one 1 GiB file on the local disk, side by side: native access, the
 * passthrough example over src/fuse without kernel passthrough (the server serves reads and
 * writes from its fds) and with it (FUSE_PASSTHROUGH: the kernel serves them from the source
 * file), and the same passthrough on @cocalc/fuse-native (libfuse 2). Clients are separate processes (python3), the same scripts and I/O sizes for all three:
 * 1 MiB reads/writes, 4 KiB random preads, cached reads best of 3; a write is timed to close
 * (seq_write) and again to fsync (seq_write_fsync, bounded by the disk). Before every cold
 * run of every system: sync and drop the page cache. The three systems take turns within each round (so load from
 * elsewhere hits them alike); each figure is the median of BENCH_RUNS rounds (default 5).
 * Both FUSE mounts get the kernel readahead of the native disk (8 MiB here; printed).
 * Two more systems serve the same file through LazyFS itself (the file fetched into its store
 * beforehand): `lazyfs_store` without and `lazyfs_store_log` with an access log; their ratio
 * (`access_log_on_vs_off`) is the access log's cost. BENCH_SYSTEMS=a,b,... runs only those.
 * Last line: one JSON object of figures.
 */
import { execFile, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import {
  ensureThreadPool,
  type MountOptions,
  mount,
  PassthroughFileSystem,
} from "../src/fuse/index.js";
import { mountLazyBench } from "./lazy-mount.js";

if (ensureThreadPool(16)) process.exit();

const SIZE = 1 << 30;
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 5));
const READAHEAD_KB = 8192;
const RAND_READS = 20_000;
const ROOT = "/var/tmp/lazyfs-bench-fuse";
const SRC = path.join(ROOT, "src");

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err
        ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`))
        : resolve(stdout),
    ),
  );
}

/** Mount points under ROOT, deepest first (a run that was killed leaves its mounts dead). */
function mountsUnderRoot(): string[] {
  return fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.startsWith(`${ROOT}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * Detaches every mount under ROOT, lazily: a dead one (ENOTCONN to every later mkdir) and a
 * live one whose server is this very process, about to exit.
 */
function detachMounts(): string[] {
  const found = mountsUnderRoot();
  for (const m of found) spawnSync("umount", ["-l", m], { stdio: "ignore" });
  return found;
}

/** A signal ends the run without leaving its mounts behind. */
function detachOnSignals(): void {
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      const gone = detachMounts();
      process.stderr.write(`${sig}: stopped; detached ${gone.length} mount(s) under ${ROOT}\n`);
      process.exit(128 + os.constants.signals[sig]);
    });
  }
}

async function dropCaches(): Promise<void> {
  await sh("sync", []);
  fs.writeFileSync("/proc/sys/vm/drop_caches", "1");
}

/** Sets the kernel readahead of the file system holding `dir` (its bdi). */
async function setReadahead(dir: string, kb: number): Promise<void> {
  fs.writeFileSync(`/sys/class/bdi/${await diskBdi(dir)}/read_ahead_kb`, String(kb));
}

/** "major:minor" of the device holding `dir` (async: `dir` may be served by this thread). */
async function diskBdi(dir: string): Promise<string> {
  const dev = Number((await fs.promises.stat(dir)).dev);
  return `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs a python timing script that prints seconds; returns them. */
async function timed(script: string, ...args: string[]): Promise<number> {
  return Number((await sh("python3", ["-c", script, ...args])).trim());
}

const SEQ_READ = `
import os,sys,time
fd=os.open(sys.argv[1],os.O_RDONLY); b=bytearray(1<<20); t=time.monotonic(); n=0
while True:
    k=os.readv(fd,[b])
    if k==0: break
    n+=k
print(time.monotonic()-t)`;

const SEQ_WRITE = `
import os,sys,time
fd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644); b=os.urandom(1<<20); t=time.monotonic()
for i in range(int(sys.argv[2])): os.write(fd,b)
if sys.argv[3]=="fsync": os.fsync(fd)
os.close(fd)
print(time.monotonic()-t)`;

const RAND_READ = `
import os,sys,time,random
fd=os.open(sys.argv[1],os.O_RDONLY); size=os.fstat(fd).st_size; r=random.Random(42); n=int(sys.argv[2])
offs=[r.randrange(0,size//4096)*4096 for _ in range(n)]; t=time.monotonic()
for o in offs: os.pread(fd,4096,o)
print(time.monotonic()-t)`;

interface Figures {
  seq_read_MBps: number;
  seq_write_MBps: number;
  seq_write_fsync_MBps: number;
  rand_read_iops: number;
  warm_read_MBps: number;
}

/** One round on the file system mounted (or not) at `dir`. */
async function measure(dir: string): Promise<Figures> {
  const file = path.join(dir, "big.bin");
  const wfile = path.join(dir, "write.bin");
  await dropCaches();
  const seqRead = await timed(SEQ_READ, file);
  await timed(SEQ_READ, file); // make sure it is all cached
  // Cached reads take a few ms per 100 MB: best of 3, so a scheduling hiccup is not the figure.
  const warm = Math.min(
    await timed(SEQ_READ, file),
    await timed(SEQ_READ, file),
    await timed(SEQ_READ, file),
  );
  await dropCaches();
  const rand = await timed(RAND_READ, file, String(RAND_READS));
  await dropCaches();
  // Written and closed (handed to the file system, as dd does), then again ending in fsync
  // (on disk: bounded by the disk, whatever the file system).
  const write = await timed(SEQ_WRITE, wfile, String(SIZE >> 20), "close");
  await fs.promises.rm(wfile, { force: true });
  await dropCaches();
  const writeSync = await timed(SEQ_WRITE, wfile, String(SIZE >> 20), "fsync");
  // Through the mount (so no stale entry stays cached), async: the servers need this thread.
  await fs.promises.rm(wfile, { force: true });
  const mb = SIZE / 1e6;
  return {
    seq_read_MBps: Math.round(mb / seqRead),
    seq_write_MBps: Math.round(mb / write),
    seq_write_fsync_MBps: Math.round(mb / writeSync),
    rand_read_iops: Math.round(RAND_READS / rand),
    warm_read_MBps: Math.round(mb / warm),
  };
}

// ---- the peer: the same passthrough on fuse-native (libfuse 2, callback API) ----

interface FuseNative {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
type Cb = (err: number, ...rest: unknown[]) => void;

function errno(e: NodeJS.ErrnoException | null): number {
  return e ? -(e.errno !== undefined ? Math.abs(e.errno) : 5) : 0;
}

type IoFn = (
  fd: number,
  buf: Buffer,
  off: number,
  len: number,
  pos: number,
  cb: (e: NodeJS.ErrnoException | null, n: number) => void,
) => void;

/** fuse-native's read/write callback wants bytes or a negative errno. */
function io(
  fn: IoFn,
  fd: number,
  buf: Buffer,
  len: number,
  pos: number,
  cb: (n: number) => void,
): void {
  fn(fd, buf, 0, len, pos, (e, n) => cb(e ? errno(e) : n));
}

function fuseNativePassthrough(mnt: string): FuseNative {
  const require = createRequire(import.meta.url);
  const Fuse = require("@cocalc/fuse-native") as new (
    m: string,
    ops: object,
    o: object,
  ) => FuseNative;
  const p = (x: string) => path.join(SRC, x);
  const ops = {
    getattr: (f: string, cb: Cb) => fs.lstat(p(f), (e, st) => cb(errno(e), st)),
    fgetattr: (_f: string, fd: number, cb: Cb) => fs.fstat(fd, (e, st) => cb(errno(e), st)),
    readdir: (f: string, cb: Cb) => fs.readdir(p(f), (e, names) => cb(errno(e), names)),
    open: (f: string, flags: number, cb: Cb) => fs.open(p(f), flags, (e, fd) => cb(errno(e), fd)),
    create: (f: string, mode: number, cb: Cb) =>
      fs.open(p(f), "w+", mode, (e, fd) => cb(errno(e), fd)),
    read: (
      _f: string,
      fd: number,
      buf: Buffer,
      len: number,
      pos: number,
      cb: (n: number) => void,
    ) => io(fs.read, fd, buf, len, pos, cb),
    write: (
      _f: string,
      fd: number,
      buf: Buffer,
      len: number,
      pos: number,
      cb: (n: number) => void,
    ) => io(fs.write, fd, buf, len, pos, cb),
    release: (_f: string, fd: number, cb: Cb) => fs.close(fd, (e) => cb(errno(e))),
    fsync: (_f: string, _d: boolean, fd: number, cb: Cb) => fs.fsync(fd, (e) => cb(errno(e))),
    flush: (_f: string, _fd: number, cb: Cb) => cb(0),
    truncate: (f: string, size: number, cb: Cb) => fs.truncate(p(f), size, (e) => cb(errno(e))),
    ftruncate: (_f: string, fd: number, size: number, cb: Cb) =>
      fs.ftruncate(fd, size, (e) => cb(errno(e))),
    unlink: (f: string, cb: Cb) => fs.unlink(p(f), (e) => cb(errno(e))),
    utimens: (f: string, a: number, m: number, cb: Cb) =>
      fs.utimes(p(f), a / 1000, m / 1000, (e) => cb(errno(e))),
    chmod: (f: string, mode: number, cb: Cb) => fs.chmod(p(f), mode, (e) => cb(errno(e))),
  };
  return new Fuse(mnt, ops, { force: true, mkdir: true, kernelCache: true, maxRead: 1 << 20 });
}

const call = (fn: (cb: (e: Error | null) => void) => void) =>
  new Promise<void>((res, rej) => fn((e) => (e ? rej(e) : res())));

async function main(): Promise<void> {
  const stale = detachMounts();
  if (stale.length > 0) {
    process.stderr.write(
      `detached ${stale.length} mount(s) an earlier run left: ${stale.join(" ")}\n`,
    );
  }
  detachOnSignals();
  fs.mkdirSync(SRC, { recursive: true });
  const big = path.join(SRC, "big.bin");
  if (!fs.existsSync(big) || fs.statSync(big).size !== SIZE) {
    process.stderr.write("creating the 1 GiB test file...\n");
    await sh("dd", [
      "if=/dev/urandom",
      `of=${big}`,
      "bs=1M",
      `count=${SIZE >> 20}`,
      "conv=fsync",
      "status=none",
    ]);
  }
  const load = () =>
    os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ");
  const loadBefore = load();

  const mountExample = (name: string, extra: MountOptions) => {
    const dir = path.join(ROOT, name);
    fs.mkdirSync(dir, { recursive: true });
    return mount(dir, new PassthroughFileSystem(SRC), {
      subtype: "bench",
      readaheadKb: READAHEAD_KB,
      attrTimeoutMs: 60_000,
      entryTimeoutMs: 60_000,
      ...extra,
    });
  };
  const m = await mountExample("lazyfs-fuse", {
    writebackCache: true,
    writeBehindBytes: 32 << 20,
    readers: 4, // more device reads in flight: a cold read waits on the disk
  });
  const ours = m.mountpoint;
  // The same example with kernel passthrough (no writeback cache: the kernel allows only one).
  const k = await mountExample("lazyfs-passthrough", { passthrough: true });
  const kernel = k.mountpoint;
  const pt = k.session.passthrough;
  let ptEnd = pt;
  if (!pt.enabled) process.stderr.write(`kernel passthrough is off: ${pt.reason}\n`);
  const peerDir = path.join(ROOT, "fuse-native");
  const peer = fuseNativePassthrough(peerDir);
  const accessLog = path.join(ROOT, "access.jsonl");
  fs.rmSync(accessLog, { force: true });
  const lazyOff = await mountLazyBench(ROOT, "lazyfs-store", big);
  const lazyOn = await mountLazyBench(ROOT, "lazyfs-store-log", big, accessLog);
  const want = process.env.BENCH_SYSTEMS?.split(",");
  const systems = (
    [
      ["native", SRC],
      ["lazyfs_fuse", ours],
      ["lazyfs_passthrough", kernel],
      ["fuse_native", peerDir],
      ["lazyfs_store", lazyOff.dir],
      ["lazyfs_store_log", lazyOn.dir],
    ] as [string, string][]
  ).filter(([name]) => !want || want.includes(name));
  const rounds: Record<string, Figures[]> = Object.fromEntries(systems.map(([n]) => [n, []]));
  let logFigures: Awaited<ReturnType<typeof lazyOn.unmount>> = null;
  try {
    await call((cb) => peer.mount(cb));
    await setReadahead(peerDir, READAHEAD_KB);
    for (let r = 0; r < RUNS; r++) {
      for (const [name, dir] of systems) {
        const f = await measure(dir);
        rounds[name]!.push(f);
        process.stderr.write(`round ${r + 1}/${RUNS} ${name} ${JSON.stringify(f)}\n`);
      }
    }
  } finally {
    ptEnd = k.session.passthrough;
    await k.unmount();
    await m.unmount();
    await call((cb) => peer.unmount(cb)).catch(() => {});
    await lazyOff.unmount();
    logFigures = await lazyOn.unmount();
  }
  const results: Record<string, Figures> = {};
  for (const [name] of systems) {
    const of = (k: keyof Figures) => Math.round(median(rounds[name]!.map((f) => f[k])));
    results[name] = {
      seq_read_MBps: of("seq_read_MBps"),
      seq_write_MBps: of("seq_write_MBps"),
      seq_write_fsync_MBps: of("seq_write_fsync_MBps"),
      rand_read_iops: of("rand_read_iops"),
      warm_read_MBps: of("warm_read_MBps"),
    };
  }
  const nativeRa = fs
    .readFileSync(`/sys/class/bdi/${await diskBdi(SRC)}/read_ahead_kb`, "utf8")
    .trim();
  console.log(
    `median of ${RUNS} rounds; load average before ${loadBefore}, after ${load()}; ` +
      `readahead: FUSE mounts ${READAHEAD_KB} KiB, native disk ${nativeRa} KiB`,
  );

  const keys: (keyof Figures)[] = [
    "seq_read_MBps",
    "seq_write_MBps",
    "seq_write_fsync_MBps",
    "rand_read_iops",
    "warm_read_MBps",
  ];
  const cols = systems.map(([name]) => name);
  const ratioCol = results.lazyfs_store && results.lazyfs_store_log;
  const logRatio = (k: keyof Figures) =>
    Math.round((results.lazyfs_store_log![k] / results.lazyfs_store![k]) * 100) / 100;
  const head = [...cols, ...(ratioCol ? ["log on/off"] : [])];
  console.log(`${"metric".padEnd(22)}${head.map((c) => c.padStart(20)).join("")}`);
  for (const k of keys) {
    const cells = [
      ...cols.map((c) => String(results[c]![k])),
      ...(ratioCol ? [`${logRatio(k)}x`] : []),
    ];
    console.log(`${k.padEnd(22)}${cells.map((c) => c.padStart(20)).join("")}`);
  }
  if (logFigures) {
    console.log(
      `access log: ${logFigures.records} records for ${logFigures.requests} requests, ${logFigures.dropped} dropped`,
    );
  }
  const json: Record<string, unknown> = {};
  for (const k of keys) json[k] = Object.fromEntries(cols.map((c) => [c, results[c]![k]]));
  const ratio = (c: string, key: keyof Figures) =>
    Math.round((results[c]![key] / results.native![key]) * 100) / 100;
  const targets: [keyof Figures, number][] = [
    ["rand_read_iops", 0.5],
    ["warm_read_MBps", 0.9],
  ];
  if (results.native && results.lazyfs_fuse && results.lazyfs_passthrough) {
    for (const [key, min] of targets) {
      const [a, b] = [ratio("lazyfs_fuse", key), ratio("lazyfs_passthrough", key)];
      console.log(
        `${key} / native: without passthrough ${a}x, with passthrough ${b}x ` +
          `(target >= ${min}x with passthrough: ${b >= min ? "met" : "MISSED"})`,
      );
    }
    json.vs_native = Object.fromEntries(
      targets.map(([key]) => [
        key,
        {
          lazyfs_fuse: ratio("lazyfs_fuse", key),
          lazyfs_passthrough: ratio("lazyfs_passthrough", key),
        },
      ]),
    );
  }
  json.passthrough = ptEnd;
  if (ratioCol) {
    json.access_log_on_vs_off = Object.fromEntries(keys.map((k) => [k, logRatio(k)]));
    json.access_log = logFigures;
  }
  console.log(JSON.stringify(json));
}

await main();
