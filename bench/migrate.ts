/**
 * `npm run bench:migrate [-- options]`: the paper's figures 4-7 (network traffic over time
 * while a migrated process runs, LazyFS against NFS), measured, with LazyFS beside every
 * alternative a user would pick instead, all in one run on the same workloads.
 *
 * Two namespaced hosts (src/hosts) joined by a veth link shaped with tbf. Each run: a fresh
 * host pair and fresh data, the workload started on A, the link sampled every 100 ms, the
 * process migrated to B by one system, left running for a fixed window, then everything torn
 * down (also on failure or Ctrl-C).
 *
 * Systems (bench/migrate/systems.ts): lazyfs (--view dirs), lazyfs-whole, lazyfs-prefetch, lazyfs-detach (prefetch, then
 * `lazyfs detach` once independent), whole-file, sshfs, upfront, plain (the freeze baseline:
 * stock CRIU with the files already on B).
 * Workloads (bench/migrate/workloads.ts): read (the paper's read example), write (the
 * paper's write example), sparse (1% random reader), seq (full sequential reader).
 *
 * Figures per run: freeze (dump start to the process running on B) and its parts, bytes over
 * the link (before/during/after the freeze, last 5 s), time to independence (last byte that
 * had to come from the origin), the workload's progress (bytes processed over time, rate and
 * longest stall on B), the traffic timeline.
 *
 * Options:
 *   --rate R          link rate: 100mbit (default), 1gbit, 50mbit, ... or unlimited
 *   --sizes S,...     data sizes (64M, 256M, 1G; binary units); every workload x system at
 *                     each size. Default: 256M for the full matrix, plus the read example at
 *                     64M and 1G for lazyfs, plain and upfront (freeze against data size)
 *   --systems A,...   subset of lazyfs,lazyfs-whole,lazyfs-prefetch,lazyfs-detach,whole-file,sshfs,
 *                     upfront,plain
 *   --workloads W,... subset of read,write,sparse,seq
 *   --window SEC      how long the process runs on B after the migration (default 12; the
 *                     window starts when all data has moved for systems that move it all)
 *   --quick           smoke run: 32M, read and write, window 3 s (1-2 minutes)
 *   --out DIR         output directory (default bench/results/<YYYY-MM-DD>)
 *
 * Output: <out>/<workload>-<size>.json (figures + timelines per system),
 * traffic-<workload>[-<size>].svg/.png (systems overlaid), summary.json, summary.md (the
 * table). Prints the table; the last line is one JSON object with the summary figures.
 * MB = 10^6 bytes, MiB = 2^20 bytes.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { DaemonStatus } from "../src/daemon/index.js";
import {
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  type HostPair,
  type SshdHandle,
} from "../src/hosts/index.js";
import {
  bytesFrom,
  type LinkFigures,
  lastTraffic,
  linkFigures,
  type ProgressFigures,
  progressFigures,
  rebase,
} from "./migrate/analyze.js";
import { plotTraffic } from "./migrate/plot.js";
import {
  lazyfsCli,
  type Migration,
  migrate,
  mountSshfs,
  type RunContext,
  SYSTEM_TITLES,
  SYSTEMS,
  type SystemName,
  unmountSshfs,
} from "./migrate/systems.js";
import {
  makeData,
  parseProgress,
  SPARSE_PIECE,
  sparsePieces,
  WORKLOAD_TITLES,
  WORKLOADS,
  type WorkloadName,
  workloadArgv,
  workloadFiles,
} from "./migrate/workloads.js";

const MiB = 1024 * 1024;
const WARMUP_MS = 2000;
const PRE_MS = 1000;

interface Options {
  rateBitsPerSec: number | null;
  cases: { workload: WorkloadName; size: number; systems: SystemName[] }[];
  windowMs: number;
  out: string;
  quick: boolean;
  argv: string[];
}

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?(i?b)?$/i.exec(s.trim());
  if (!m) throw new Error(`--sizes: cannot read ${JSON.stringify(s)} (e.g. 64M, 1G)`);
  const unit = { "": 1, k: 1024, m: MiB, g: 1024 * MiB }[(m[2] ?? "").toLowerCase()]!;
  return Math.round(Number(m[1]) * unit);
}

function parseRate(s: string): number | null {
  if (/^(unlimited|none|off)$/i.test(s)) return null;
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?(bit|bps)?$/i.exec(s.trim());
  if (!m) throw new Error(`--rate: cannot read ${JSON.stringify(s)} (e.g. 100mbit, unlimited)`);
  return Math.round(Number(m[1]) * { "": 1, k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? "").toLowerCase()]!);
}

function list<T extends string>(s: string, all: readonly T[], what: string): T[] {
  const out = s.split(",").map((x) => x.trim()) as T[];
  for (const x of out) if (!all.includes(x)) throw new Error(`${what}: unknown ${x}`);
  return out;
}

function sizeName(n: number): string {
  return n % (1024 * MiB) === 0 ? `${n / (1024 * MiB)}GiB` : `${Math.round(n / MiB)}MiB`;
}

function today(): string {
  const d = new Date();
  const p = (x: number) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

function parseOptions(argv: string[]): Options {
  const get = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes("--quick");
  const rate = get("--rate");
  const systems = get("--systems") ? list(get("--systems")!, SYSTEMS, "--systems") : [...SYSTEMS];
  const workloads = get("--workloads")
    ? list(get("--workloads")!, WORKLOADS, "--workloads")
    : quick
      ? (["read", "write"] as WorkloadName[])
      : [...WORKLOADS];
  const sizesArg = get("--sizes");
  const cases: Options["cases"] = [];
  if (sizesArg || quick) {
    const sizes = sizesArg ? sizesArg.split(",").map(parseSize) : [32 * MiB];
    for (const size of sizes) for (const w of workloads) cases.push({ workload: w, size, systems });
  } else {
    for (const w of workloads) cases.push({ workload: w, size: 256 * MiB, systems });
    if (workloads.includes("read")) {
      const some = systems.filter((s) => s === "lazyfs" || s === "plain" || s === "upfront");
      if (some.length) {
        cases.unshift({ workload: "read", size: 64 * MiB, systems: some });
        cases.push({ workload: "read", size: 1024 * MiB, systems: some });
      }
    }
  }
  const defaultOut = fileURLToPath(new URL(`../../bench/results/${today()}`, import.meta.url));
  return {
    rateBitsPerSec: rate === undefined ? 100e6 : parseRate(rate),
    cases,
    windowMs: Number(get("--window") ?? (quick ? 3 : 12)) * 1000,
    out: get("--out") ?? defaultOut,
    quick,
    argv,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Independence {
  /** Whether nothing the process may need was left on A by the end of the run. */
  reached: boolean;
  /** When that happened, ms after the restore (negative: before, e.g. an up-front copy). */
  atAfterRestoreMs: number | null;
  /** Last byte the LazyFS daemon read from A, ms after the restore. */
  lastOriginAccessAfterRestoreMs: number | null;
  /** End of the last 100 ms sample with link traffic, ms after the restore. */
  lastTrafficAfterRestoreMs: number | null;
  /**
   * Link bytes (both directions) from independence to the end of the run. For LazyFS, counted
   * from the moment its connection to A was closed (the close itself is part of letting go).
   */
  bytesAfter: number | null;
  /** LazyFS: when its connection to A was closed, ms after the restore. */
  releasedAfterRestoreMs?: number | null;
}

interface RunResult {
  workload: WorkloadName;
  size: number;
  system: SystemName;
  rateBitsPerSec: number | null;
  error?: string;
  freezeMs?: number;
  breakdown?: Record<string, number | null>;
  imageBytes?: number;
  runAfterRestoreMs?: number;
  link?: LinkFigures;
  /** Bytes of the files the process references (the prefetch target's numerator). */
  bytesNeeded?: number;
  /** Sparse reader: distinct bytes it reads (its whole set, read again and again). */
  bytesRead?: number;
  /** Link bytes A->B less the CRIU images: file data that crossed the link. */
  fileBytesOverLink?: number;
  independence?: Independence;
  progress?: ProgressFigures;
  lazyfs?: Pick<
    DaemonStatus,
    "originState" | "total" | "firstFetchAtMs" | "independentAtMs" | "releasedAtMs"
  >;
  /** [ms since dump, cumulative A->B, cumulative B->A] every 100 ms. */
  timeline?: [number, number, number][];
  /** lazyfs-detach: the detach's freeze and steps (ms), and the workload's rate after it. */
  detach?: {
    freezeMs: number;
    dumpMs: number;
    materializeMs: number;
    criuRestoreMs: number;
    afterRestoreMs: number;
    rateAfterDetachBps: number;
  };
}

let current: { pair: HostPair; cleanup: () => Promise<void> } | undefined;
let runCounter = 0;

async function runOne(
  opts: Options,
  workload: WorkloadName,
  size: number,
  system: SystemName,
): Promise<RunResult> {
  const base = { workload, size, system, rateBitsPerSec: opts.rateBitsPerSec };
  const name = `bm${process.pid}-${runCounter++}`;
  const pair = await createHostPair({ name, rateBitsPerSec: opts.rateBitsPerSec });
  const stateDir = `/var/lib/lazyfs-bench-migrate/${pair.name}`;
  const imgDir = `/run/lazyfs-bench-migrate/${pair.name}`;
  let mig: Migration | undefined;
  let sshfsMounted = false;
  let ctx: RunContext | undefined;
  const cleanup = async () => {
    if (mig) {
      await pair.b.kill(mig.pid, "SIGKILL");
      if (mig.lazyfs && ctx) await lazyfsCli(ctx, ["unmount", mig.lazyfs.id, "--force"], true);
    }
    if (sshfsMounted) await unmountSshfs(pair);
    await pair.destroy();
    await rm(stateDir, { recursive: true, force: true });
    await rm(imgDir, { recursive: true, force: true });
  };
  current = { pair, cleanup };
  try {
    const sshd: SshdHandle = await pair.startOriginSshd();
    await mkdir(imgDir, { recursive: true });
    for (const h of [pair.a, pair.b]) {
      await h.exec("mount", ["-t", "tmpfs", "-o", "size=4g,mode=0700", "lazyfs-bench", imgDir]);
    }
    const files = workloadFiles(DATA_DIR, workload);
    await makeData(pair.a, files.data, size);
    const staged = new Map<string, number>();
    if (system === "plain") {
      // "Files already on the target": the same bytes made on B, nothing over the link.
      await makeData(pair.b, files.data, size);
      staged.set(files.data, size);
    }
    if (system === "sshfs") {
      await mountSshfs({ pair, sshd });
      sshfsMounted = true;
    }
    const wl = await pair.a.startWorkload("python3", workloadArgv(workload, files, size), {
      stdout: files.progress,
      cwd: files.dir,
    });
    await sleep(WARMUP_MS);
    const pre = parseProgress(await pair.a.readFile(files.progress));
    if (pre.length < 3) throw new Error(`the ${workload} workload shows no progress on A`);
    const sampler = pair.link.sample(100);
    await sampler.start();
    const samplerStart = Date.now();
    await sleep(PRE_MS);
    ctx = { pair, sshd, workload, files, size, pid: wl.pid, stateDir, imgDir };
    const progressAtDump = (await pair.a.exec("stat", ["-c", "%s", files.progress])).stdout;
    mig = await migrate(system, ctx, staged);
    // The window: W after the restore, or W after all the data moved for the systems that
    // move all of it after the restore (counted on the link, A->B).
    const moveAll =
      system === "lazyfs-prefetch" ||
      system === "lazyfs-detach" ||
      system === "whole-file" ||
      (workload === "seq" && (system === "lazyfs" || system === "sshfs"));
    let windowStart = mig.tRestored;
    if (moveAll) {
      const expect = opts.rateBitsPerSec === null ? size / 100e6 : (size * 8) / opts.rateBitsPerSec;
      const deadline = Date.now() + expect * 3000 + 20_000;
      for (;;) {
        const last = sampler.timeline[sampler.timeline.length - 1];
        if ((last?.aToB ?? 0) >= 0.98 * size || Date.now() > deadline) break;
        await sleep(200);
      }
      windowStart = Math.max(windowStart, Date.now());
    }
    const windowMs = system === "plain" ? Math.min(opts.windowMs, 4000) : opts.windowMs;
    const endAt = windowStart + windowMs;
    if (endAt > Date.now()) await sleep(endAt - Date.now());
    const timeline = await sampler.stop();
    const tEnd = Date.now();
    const tl = rebase(timeline, samplerStart, mig.tDump);
    const freezeMs = mig.freezeMs;
    const link = linkFigures(tl, freezeMs);
    const endMs = tEnd - mig.tDump;
    let status: DaemonStatus | undefined = mig.status;
    if (mig.lazyfs) {
      const r = await lazyfsCli(ctx, ["status", mig.lazyfs.id, "--json"]);
      status = (JSON.parse(r.stdout) as DaemonStatus[])[0];
    }
    const points = parseProgress(await mig.readProgress());
    const progress = progressFigures(points, mig.tDump, freezeMs, endMs);
    let detach: RunResult["detach"];
    const detached = mig.detach;
    if (detached) {
      const t = detached.timeline;
      detach = {
        freezeMs: t.freezeMs,
        dumpMs: t.dumpMs,
        materializeMs: t.materializeMs,
        criuRestoreMs: t.criuRestoreMs,
        afterRestoreMs: detached.tEnd - mig.tRestored,
        rateAfterDetachBps: steadyRate(progress.points, detached.tEnd - mig.tDump),
      };
    }
    const rel = (epoch: number | null | undefined) =>
      epoch === null || epoch === undefined ? null : epoch - mig!.tRestored;
    const lt = lastTraffic(tl);
    let independence: Independence;
    if (status) {
      const at = rel(status.independentAtMs);
      const released = rel(status.releasedAtMs);
      const from = released === null ? null : bytesFrom(tl, released + freezeMs);
      independence = {
        reached: status.independentAtMs !== null,
        atAfterRestoreMs: at,
        releasedAfterRestoreMs: released,
        lastOriginAccessAfterRestoreMs: rel(status.total.lastOriginAccessMs),
        lastTrafficAfterRestoreMs: lt === null ? null : lt - freezeMs,
        bytesAfter: from === null ? (released === null ? null : 0) : link.total - from,
      };
    } else if (system === "sshfs") {
      independence = {
        reached: false,
        atAfterRestoreMs: null,
        lastOriginAccessAfterRestoreMs: null,
        lastTrafficAfterRestoreMs: lt === null ? null : lt - freezeMs,
        bytesAfter: null,
      };
    } else {
      // upfront / plain: every byte was on B when the copy (in the freeze) ended.
      const copyEnd = freezeMs - (mig.breakdown.restoreMs ?? 0);
      const from = bytesFrom(tl, copyEnd);
      independence = {
        reached: true,
        atAfterRestoreMs: copyEnd - freezeMs,
        lastOriginAccessAfterRestoreMs: null,
        lastTrafficAfterRestoreMs: lt === null ? null : lt - freezeMs,
        bytesAfter: from === null ? 0 : link.total - from,
      };
    }
    const bytesNeeded = status ? status.total.size : size + Number(progressAtDump.trim());
    return {
      ...base,
      freezeMs,
      breakdown: mig.breakdown,
      imageBytes: mig.imageBytes,
      runAfterRestoreMs: endMs - freezeMs,
      link,
      bytesNeeded,
      ...(workload === "sparse" ? { bytesRead: sparsePieces(size) * SPARSE_PIECE } : {}),
      fileBytesOverLink: link.aToB - link.beforeDump - mig.imageBytes,
      independence,
      progress,
      ...(detach ? { detach } : {}),
      ...(status
        ? {
            lazyfs: {
              originState: status.originState,
              total: status.total,
              firstFetchAtMs: status.firstFetchAtMs,
              independentAtMs: status.independentAtMs,
              releasedAtMs: status.releasedAtMs,
            },
          }
        : {}),
      timeline: tl.map((s) => [s.tMs, s.aToB, s.bToA]),
    };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`bench:migrate: ${workload} ${sizeName(size)} ${system} failed: ${msg}\n`);
    return { ...base, error: msg };
  } finally {
    await cleanup().catch((e) =>
      process.stderr.write(`bench:migrate: teardown of ${pair.name}: ${String(e)}\n`),
    );
    current = undefined;
  }
}

// ---- summary --------------------------------------------------------------------------------

const mb = (b: number | null | undefined) =>
  b === null || b === undefined ? "-" : (b / 1e6).toFixed(b < 1e6 ? 3 : 1);
const sec = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "-" : (ms / 1000).toFixed(2);
const round2 = (x: number) => Math.round(x * 100) / 100;

/** Bytes/s from the first progress point at or after `fromMs` (since the dump) to the last. */
function steadyRate(points: [number, number][], fromMs: number): number {
  const after = points.filter(([t]) => t >= fromMs);
  const first = after[0];
  const last = after[after.length - 1];
  return first && last && last[0] > first[0]
    ? Math.round(((last[1] - first[1]) * 1000) / (last[0] - first[0]))
    : 0;
}

function independenceText(r: RunResult): string {
  const i = r.independence;
  if (!i) return "-";
  if (i.reached) return `${sec(i.atAfterRestoreMs)} s`;
  if (r.system === "sshfs")
    return `never (traffic at +${sec(i.lastTrafficAfterRestoreMs)} s, end of run)`;
  const left = r.lazyfs ? r.lazyfs.total.bytesOnOrigin : null;
  return `not yet (${mb(left)} MB left on A; last fetch +${sec(i.lastOriginAccessAfterRestoreMs)} s)`;
}

function table(results: RunResult[]): string {
  const head =
    "| workload | size | system | freeze s | link MB (during freeze / after restore / last 5 s) | independence after restore | bytes after independence | progress on B | longest stall s |";
  const rows = results.map((r) => {
    if (r.error)
      return `| ${r.workload} | ${sizeName(r.size)} | ${r.system} | FAILED: ${r.error.replace(/\|/g, "/").slice(0, 120)} | | | | | |`;
    const l = r.link!;
    const p = r.progress!;
    const d = r.detach;
    const freeze = d
      ? `${sec(r.freezeMs)}; detach ${sec(d.freezeMs)} at +${sec(d.afterRestoreMs)}`
      : sec(r.freezeMs);
    const rate = d ? `; after detach ${mb(d.rateAfterDetachBps)} MB/s` : "";
    return `| ${r.workload} | ${sizeName(r.size)} | ${r.system} | ${freeze} | ${mb(l.total)} (${mb(l.duringFreeze)} / ${mb(l.afterRestore)} / ${mb(l.last5s)}) | ${independenceText(r)} | ${r.independence?.bytesAfter ?? "-"} | ${mb(p.afterRestore)} MB at ${mb(p.rateAfterRestoreBps)} MB/s${rate} | ${sec(p.maxStallAfterRestoreMs)} |`;
  });
  return [head, `|${"---|".repeat(9)}`, ...rows].join("\n");
}

function breakdownTable(results: RunResult[]): string {
  const rows = results
    .filter((r) => !r.error && (r.system === "lazyfs" || r.system === "plain"))
    .map((r) => {
      const b = r.breakdown!;
      const parts = Object.entries(b)
        .filter(([, v]) => v !== null)
        .map(([k, v]) => `${k} ${k.endsWith("Bytes") ? `${mb(v)} MB` : v}`)
        .join(", ");
      return `| ${r.workload} | ${sizeName(r.size)} | ${r.system} | ${r.freezeMs} | ${parts} |`;
    });
  return [
    "| workload | size | system | freeze ms | parts (ms unless bytes) |",
    "|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

interface Summary {
  rateBitsPerSec: number | null;
  freezeRatio: Record<string, number | null>;
  freezeMs: Record<string, Record<string, number>>;
  sparseBytesRatio: number | null;
  sparseDaemonFetchedRatio: number | null;
  independenceRatio: Record<string, number | null>;
  postIndependenceBytes: Record<string, number | null>;
  sshfsPostMigrationBytes: Record<string, number>;
  sshfsLast5sBytes: Record<string, number>;
  /** lazyfs-detach: the detach's freeze (ms), and the rate after it over plain CRIU's. */
  detachFreezeMs: Record<string, number>;
  detachRateRatio: Record<string, number | null>;
  targets: Record<string, boolean | null>;
  failures: number;
}

function summarize(opts: Options, results: RunResult[]): Summary {
  const ok = results.filter((r) => !r.error);
  const find = (w: string, size: number, s: string) =>
    ok.find((r) => r.workload === w && r.size === size && r.system === s);
  const freezeRatio: Summary["freezeRatio"] = {};
  const freezeMs: Summary["freezeMs"] = {};
  for (const r of ok) {
    const key = `${r.workload}-${sizeName(r.size)}`;
    freezeMs[r.system] = { ...freezeMs[r.system], [key]: r.freezeMs! };
    if (r.system === "lazyfs") {
      const p = find(r.workload, r.size, "plain");
      freezeRatio[key] = p ? round2(r.freezeMs! / p.freezeMs!) : null;
    }
  }
  const sparse = ok.find((r) => r.workload === "sparse" && r.system === "lazyfs");
  const sparseBytesRatio = sparse ? round2(sparse.fileBytesOverLink! / sparse.bytesRead!) : null;
  const sparseDaemonFetchedRatio = sparse?.lazyfs
    ? round2(sparse.lazyfs.total.bytesFetched / sparse.bytesRead!)
    : null;
  const independenceRatio: Summary["independenceRatio"] = {};
  const postIndependenceBytes: Summary["postIndependenceBytes"] = {};
  const sshfsPost: Record<string, number> = {};
  const sshfsLast: Record<string, number> = {};
  for (const r of ok) {
    const key = `${r.workload}-${sizeName(r.size)}`;
    if (r.system === "lazyfs-prefetch") {
      const i = r.independence!;
      independenceRatio[key] =
        i.reached && opts.rateBitsPerSec !== null
          ? round2(i.atAfterRestoreMs! / ((r.bytesNeeded! * 8 * 1000) / opts.rateBitsPerSec))
          : null;
    }
    if (r.system.startsWith("lazyfs") || r.system === "whole-file") {
      postIndependenceBytes[`${r.system}/${key}`] = r.independence!.reached
        ? r.independence!.bytesAfter
        : null;
    }
    if (r.system === "sshfs") {
      sshfsPost[key] = r.link!.afterRestore;
      sshfsLast[key] = r.link!.last5s;
    }
  }
  const ratios = Object.values(freezeRatio).filter((x): x is number => x !== null);
  const lazyFreeze = Object.entries(freezeMs.lazyfs ?? {})
    .filter(([k]) => k.startsWith("read-"))
    .map(([, v]) => v);
  const indep = Object.values(independenceRatio).filter((x): x is number => x !== null);
  const post = Object.entries(postIndependenceBytes).filter(([, v]) => v !== null) as [
    string,
    number,
  ][];
  const sshfsIo = Object.entries(sshfsLast).filter(([k]) => !k.startsWith("sparse"));
  const detachFreezeMs: Record<string, number> = {};
  const detachRateRatio: Record<string, number | null> = {};
  for (const r of ok) {
    if (r.system !== "lazyfs-detach" || !r.detach) continue;
    const key = `${r.workload}-${sizeName(r.size)}`;
    detachFreezeMs[key] = r.detach.freezeMs;
    // Plain CRIU's rate the same way: first progress point after its restore to the last.
    const p = find(r.workload, r.size, "plain");
    const plainRate = p ? steadyRate(p.progress!.points, p.freezeMs!) : 0;
    detachRateRatio[key] = plainRate ? round2(r.detach.rateAfterDetachBps / plainRate) : null;
  }
  const seqRatio =
    detachRateRatio[Object.keys(detachRateRatio).find((k) => k.startsWith("seq-")) ?? ""];
  return {
    rateBitsPerSec: opts.rateBitsPerSec,
    freezeRatio,
    freezeMs,
    sparseBytesRatio,
    sparseDaemonFetchedRatio,
    independenceRatio,
    postIndependenceBytes,
    sshfsPostMigrationBytes: sshfsPost,
    sshfsLast5sBytes: sshfsLast,
    detachFreezeMs,
    detachRateRatio,
    targets: {
      detachFreezeWithin300ms: Object.keys(detachFreezeMs).length
        ? Object.values(detachFreezeMs).every((ms) => ms <= 300)
        : null,
      seqRateAfterDetachWithin0_95xPlain:
        seqRatio === undefined || seqRatio === null ? null : seqRatio >= 0.95,
      freezeWithin1_2xPlain: ratios.length ? ratios.every((x) => x <= 1.2) : null,
      freezeFlatAcrossSizes:
        lazyFreeze.length >= 2 ? Math.max(...lazyFreeze) <= 1.2 * Math.min(...lazyFreeze) : null,
      sparseBytesWithin1_1xRead: sparseBytesRatio === null ? null : sparseBytesRatio <= 1.1,
      prefetchIndependenceWithin1_15x: indep.length ? indep.every((x) => x <= 1.15) : null,
      zeroBytesAfterIndependence: post.length ? post.every(([, v]) => v === 0) : null,
      sshfsKeepsSending: sshfsIo.length ? sshfsIo.every(([, v]) => v > 0) : null,
    },
    failures: results.length - ok.length,
  };
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const onSignal = (sig: string) => {
    process.stderr.write(`bench:migrate: ${sig}, tearing down\n`);
    void (current?.cleanup() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once("SIGINT", () => onSignal("SIGINT"));
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  await cleanupStaleHosts();
  await mkdir(opts.out, { recursive: true });
  const t0 = Date.now();
  const results: RunResult[] = [];
  const rateText =
    opts.rateBitsPerSec === null ? "unlimited" : `${opts.rateBitsPerSec / 1e6} Mbit/s`;
  process.stderr.write(
    `bench:migrate: link ${rateText}; ${opts.cases.reduce((n, c) => n + c.systems.length, 0)} runs -> ${opts.out}\n`,
  );
  for (const c of opts.cases) {
    const caseResults: RunResult[] = [];
    for (const system of c.systems) {
      const t = Date.now();
      process.stderr.write(`bench:migrate: ${c.workload} ${sizeName(c.size)} ${system} ... `);
      const r = await runOne(opts, c.workload, c.size, system);
      process.stderr.write(
        r.error
          ? "failed\n"
          : `freeze ${r.freezeMs} ms, link ${mb(r.link!.total)} MB (${Math.round((Date.now() - t) / 1000)} s)\n`,
      );
      caseResults.push(r);
      results.push(r);
    }
    const tag = `${c.workload}-${sizeName(c.size)}`;
    await writeFile(
      `${opts.out}/${tag}.json`,
      `${JSON.stringify({ workload: c.workload, title: WORKLOAD_TITLES[c.workload], size: c.size, rateBitsPerSec: opts.rateBitsPerSec, runs: caseResults }, null, 1)}\n`,
    );
    const series = caseResults
      .filter((r) => !r.error)
      .map((r) => ({
        system: r.system,
        points: r.timeline!.map(([tMs, ab, ba]) => ({ tMs, bytes: ab + ba })),
        restoredAtMs: r.freezeMs!,
      }));
    if (series.length) {
      const main = c.size === 256 * MiB || opts.quick || opts.cases.length === WORKLOADS.length;
      await plotTraffic(
        `${WORKLOAD_TITLES[c.workload]}, ${sizeName(c.size)}, link ${rateText} (dashed: process runs on B)`,
        series,
        `${opts.out}/traffic-${c.workload}${main ? "" : `-${sizeName(c.size)}`}`,
      ).catch((e) => process.stderr.write(`bench:migrate: plot ${tag}: ${String(e)}\n`));
    }
  }
  const summary = summarize(opts, results);
  const command = `npm run bench:migrate${opts.argv.length ? ` -- ${opts.argv.join(" ")}` : ""}`;
  const systemsText = SYSTEMS.map((s) => `\`${s}\`: ${SYSTEM_TITLES[s]}`).join("; ");
  const md = [
    `## bench:migrate (${today()}, link ${rateText}, ${Math.round((Date.now() - t0) / 60000)} min)`,
    "",
    `Reproduce: \`${command}\``,
    "",
    `Systems: ${systemsText}. Workloads: ${WORKLOADS.map((w) => `\`${w}\`: ${WORKLOAD_TITLES[w]}`).join("; ")}.`,
    "Freeze: dump start to the process running on B. Link MB: both directions, whole run (1 s before the dump to the end). Independence: when nothing the process may need was left on A (LazyFS daemon; up-front/plain: end of the copy). Progress: bytes the workload processed on B, and its rate.",
    "",
    table(results),
    "",
    "Freeze breakdown (LazyFS `timeline` fields vs plain CRIU):",
    "",
    breakdownTable(results),
    "",
    "Summary figures:",
    "",
    "```json",
    JSON.stringify(summary, null, 1),
    "```",
    "",
  ].join("\n");
  await writeFile(`${opts.out}/summary.md`, md);
  await writeFile(
    `${opts.out}/summary.json`,
    `${JSON.stringify({ command, ...summary }, null, 1)}\n`,
  );
  process.stdout.write(`${table(results)}\n\n${breakdownTable(results)}\n\n`);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (summary.failures) process.exitCode = 1;
}

main().catch(async (err) => {
  process.stderr.write(`bench:migrate: ${err instanceof Error ? err.stack : String(err)}\n`);
  await current?.cleanup().catch(() => {});
  process.exit(1);
});
