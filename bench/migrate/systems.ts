/**
 * The ways `bench:migrate` moves a running workload from host A to host B, all measured the
 * same way: `migrate()` returns when the process runs on B, with the epoch ms of the dump's
 * start and of the restore's end.
 *
 *   lazyfs           `lazyfs migrate` (block-granular copy-on-reference, default settings)
 *   lazyfs-whole     `lazyfs migrate --view whole` (the origin's whole file tree, not only its files' directories)
 *   lazyfs-prefetch  `lazyfs migrate --prefetch immediate` (everything fetched in the background)
 *   lazyfs-detach    as lazyfs-prefetch, then `lazyfs detach` once independent: plain local
 *                    files, no LazyFS left (its own freeze and the rate after it are reported)
 *   whole-file       `lazyfs migrate --whole-file` (a whole file on its first reference, as the
 *                    paper's implementation did with scp)
 *   sshfs            stock CRIU; B mounts A's data directory with sshfs at the same path over
 *                    the link before the migration (stands in for the paper's NFS)
 *   upfront          stock CRIU; after the dump, rsync over SSH of the images and of every
 *                    file the process references, then restore
 *   plain            the baseline of the freeze target: stock CRIU with the files already on
 *                    B (made there before the run); only the images and what the process
 *                    wrote since (the tails of its written files) cross the link in the freeze
 *
 * Stock CRIU images go to a directory on a private tmpfs mounted at the same path in both
 * hosts (`imgDir`), so that `sendFiles` (tar over TCP through the link) or rsync moves them.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { DaemonStatus } from "../../src/daemon/index.js";
import type { DetachResult } from "../../src/detach/index.js";
import {
  DATA_DIR,
  dumpInHost,
  type HostPair,
  restoreInHost,
  type SshdHandle,
  sendFiles,
  waitPidFree,
} from "../../src/hosts/index.js";
import type { WorkloadFiles, WorkloadName } from "./workloads.js";

export const SYSTEMS = [
  "lazyfs",
  "lazyfs-whole",
  "lazyfs-prefetch",
  "lazyfs-detach",
  "whole-file",
  "sshfs",
  "upfront",
  "plain",
] as const;
export type SystemName = (typeof SYSTEMS)[number];

export const SYSTEM_TITLES: Record<SystemName, string> = {
  lazyfs: "LazyFS (block copy-on-reference)",
  "lazyfs-whole": "LazyFS, --view whole (the origin's whole file tree)",
  "lazyfs-prefetch": "LazyFS + prefetch",
  "lazyfs-detach": "LazyFS + prefetch, detached once independent",
  "whole-file": "whole file on first reference (paper)",
  sshfs: "sshfs + stock CRIU (NFS stand-in)",
  upfront: "rsync everything up front + stock CRIU",
  plain: "plain CRIU, files already on target",
};

export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface RunContext {
  pair: HostPair;
  sshd: SshdHandle;
  workload: WorkloadName;
  files: WorkloadFiles;
  size: number;
  /** The workload's pid on A. */
  pid: number;
  /** LAZYFS_STATE_DIR for the lazyfs systems (on the shared root fs, unique per run). */
  stateDir: string;
  /** Private tmpfs at the same path in both hosts, for stock CRIU images. */
  imgDir: string;
}

export interface Migration {
  /** Epoch ms: the dump starts / the process runs on B. */
  tDump: number;
  tRestored: number;
  freezeMs: number;
  /** Parts of the freeze (ms) and sizes (bytes), as the system reports or we time them. */
  breakdown: Record<string, number | null>;
  /** Bytes of CRIU images that crossed the link. */
  imageBytes: number;
  /** The restored process on B. */
  pid: number;
  /** The workload's progress file as the process sees it now (no link traffic needed after). */
  readProgress(): Promise<string>;
  lazyfs?: { id: string; mountpoint: string };
  /** The daemon's last status, when it is gone by the end of the run (detached). */
  status?: DaemonStatus;
  /** lazyfs-detach: the detach, and the epoch ms it ended (the process on plain files). */
  detach?: DetachResult & { tEnd: number };
}

function sshArgs(sshd: SshdHandle): string[] {
  return [
    "-i",
    sshd.identityFile,
    "-o",
    `UserKnownHostsFile=${sshd.knownHostsFile}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
  ];
}

export function lazyfsCli(ctx: RunContext, args: string[], allowFailure = false) {
  return ctx.pair.b.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...process.env, LAZYFS_STATE_DIR: ctx.stateDir },
    timeoutMs: 900_000,
  });
}

async function viaLazyfs(ctx: RunContext, extra: string[]): Promise<Migration> {
  const { a } = ctx.pair;
  const r = await lazyfsCli(ctx, [
    "migrate",
    "--from",
    `ssh://root@${a.address}`,
    "--pid",
    String(ctx.pid),
    "-i",
    ctx.sshd.identityFile,
    "--known-hosts",
    ctx.sshd.knownHostsFile,
    "--json",
    ...extra,
  ]);
  const tDone = Date.now();
  const m = JSON.parse(r.stdout) as {
    id: string;
    pid: number;
    mountpoint: string;
    timeline: Record<string, number | null> & { freezeMs: number; imageBytes: number };
  };
  // restored.json records the instant CRIU restore returned; fall back to the CLI's exit
  // less its wait for a first fetch (at most 1 s).
  let tRestored = tDone;
  try {
    const rec = JSON.parse(await readFile(`${ctx.stateDir}/${m.id}/restored.json`, "utf8")) as {
      restoredMs?: number;
    };
    if (typeof rec.restoredMs === "number") tRestored = rec.restoredMs;
  } catch {
    // older layout: keep tDone
  }
  const t = m.timeline;
  const { imageBytes, ...rest } = t;
  return {
    tDump: tRestored - t.freezeMs,
    tRestored,
    freezeMs: t.freezeMs,
    breakdown: rest,
    imageBytes,
    pid: m.pid,
    lazyfs: { id: m.id, mountpoint: m.mountpoint },
    readProgress: () => ctx.pair.b.readFile(`${m.mountpoint}${ctx.files.progress}`),
  };
}

/** As lazyfs-prefetch; once independent, `lazyfs detach` (the daemon's last status kept). */
async function viaLazyfsDetach(ctx: RunContext): Promise<Migration> {
  const mig = await viaLazyfs(ctx, ["--prefetch", "immediate"]);
  const id = mig.lazyfs!.id;
  let status: DaemonStatus;
  for (;;) {
    const r = await lazyfsCli(ctx, ["status", id, "--json"]);
    status = (JSON.parse(r.stdout) as DaemonStatus[])[0]!;
    if (status.independentAtMs !== null) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  const r = await lazyfsCli(ctx, ["detach", id, "--json"]);
  const d = JSON.parse(r.stdout) as DetachResult;
  const rec = JSON.parse(await readFile(`${ctx.stateDir}/${id}/detached.json`, "utf8")) as {
    detachedMs: number;
  };
  const { lazyfs: _, ...rest } = mig;
  return {
    ...rest,
    pid: d.pid,
    status,
    detach: { ...d, tEnd: rec.detachedMs },
    readProgress: () => ctx.pair.b.readFile(`${d.root}${ctx.files.progress}`),
  };
}

/** criu dump inside A into imgDir/dump; resolves once the pid is free again. */
async function stockDump(ctx: RunContext): Promise<{ dir: string; dumpMs: number; t0: number }> {
  const dir = `${ctx.imgDir}/dump`;
  const t0 = Date.now();
  await dumpInHost(ctx.pair.a, ctx.pid, dir);
  await waitPidFree(ctx.pair.a, ctx.pid, 10_000);
  return { dir, dumpMs: Date.now() - t0, t0 };
}

/** criu restore inside B from the dump; the freeze ends when the process runs there. */
async function finishStock(
  ctx: RunContext,
  d: { dir: string; dumpMs: number; t0: number },
  parts: Record<string, number | null>,
  readProgress: () => Promise<string>,
): Promise<Migration> {
  const t2 = Date.now();
  const restored = await restoreInHost(ctx.pair.b, d.dir);
  const t3 = Date.now();
  return {
    tDump: d.t0,
    tRestored: t3,
    freezeMs: t3 - d.t0,
    breakdown: { dumpMs: d.dumpMs, ...parts, restoreMs: t3 - t2 },
    imageBytes: await duBytes(ctx, d.dir),
    pid: restored.pid,
    readProgress,
  };
}

async function duBytes(ctx: RunContext, path: string): Promise<number> {
  const r = await ctx.pair.a.exec("du", ["-sb", path]);
  return Number(r.stdout.split(/\s/)[0]);
}

/** Copies bytes [from, end) of each file into imgDir/tails/<i> on A. */
const TAILS_OUT = `
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
args = sys.argv[2:]
for i in range(0, len(args), 2):
    path, start = args[i], int(args[i + 1])
    with open(path, "rb") as f, open("%s/%d" % (d, i // 2), "wb") as o:
        f.seek(start)
        while True:
            b = f.read(1 << 20)
            if not b: break
            o.write(b)
`;
/** Appends imgDir/tails/<i> to each file on B (creating it), keeping its mode. */
const TAILS_IN = `
import os, sys
d = sys.argv[1]
args = sys.argv[2:]
for i in range(0, len(args), 2):
    path = args[i]
    with open("%s/%d" % (d, i // 2), "rb") as t, open(path, "ab") as o:
        o.write(t.read())
`;

async function viaPlain(ctx: RunContext, staged: Map<string, number>): Promise<Migration> {
  const { a, b } = ctx.pair;
  const d = await stockDump(ctx);
  const t1 = Date.now();
  const tails = `${ctx.imgDir}/tails`;
  const args = ctx.files.written.flatMap((p) => [p, String(staged.get(p) ?? 0)]);
  await a.exec("python3", ["-c", TAILS_OUT, tails, ...args]);
  const sent = await sendFiles(a, b, [ctx.imgDir]);
  await b.exec("python3", ["-c", TAILS_IN, tails, ...args]);
  return finishStock(ctx, d, { transferMs: Date.now() - t1, transferBytes: sent.bytes }, () =>
    b.readFile(ctx.files.progress),
  );
}

async function viaUpfront(ctx: RunContext): Promise<Migration> {
  const { a, b } = ctx.pair;
  const d = await stockDump(ctx);
  const t1 = Date.now();
  const ssh = ["ssh", ...sshArgs(ctx.sshd)].join(" ");
  const r = await b.exec(
    "rsync",
    [
      "-aR",
      "--stats",
      "-e",
      ssh,
      `root@${a.address}:${d.dir}`,
      `root@${a.address}:${ctx.files.dir}`,
      "/",
    ],
    { timeoutMs: 0 },
  );
  const received = /Total bytes received: ([\d,]+)/.exec(r.stdout);
  return finishStock(
    ctx,
    d,
    {
      copyMs: Date.now() - t1,
      rsyncBytesReceived: received ? Number(received[1]!.replace(/,/g, "")) : null,
    },
    () => b.readFile(ctx.files.progress),
  );
}

/** Mounts A's DATA_DIR on B's DATA_DIR with sshfs over the link (before the run). */
export async function mountSshfs(ctx: Pick<RunContext, "pair" | "sshd">): Promise<void> {
  const opts = [
    `IdentityFile=${ctx.sshd.identityFile}`,
    `UserKnownHostsFile=${ctx.sshd.knownHostsFile}`,
    "StrictHostKeyChecking=yes",
    "BatchMode=yes",
    "IdentitiesOnly=yes",
  ].join(",");
  await ctx.pair.b.exec("sshfs", [`root@${ctx.pair.a.address}:${DATA_DIR}`, DATA_DIR, "-o", opts]);
}

export async function unmountSshfs(pair: HostPair): Promise<void> {
  await pair.b.exec("fusermount3", ["-u", "-z", DATA_DIR], { allowFailure: true });
}

async function viaSshfs(ctx: RunContext): Promise<Migration> {
  const { a, b } = ctx.pair;
  const d = await stockDump(ctx);
  const t1 = Date.now();
  const sent = await sendFiles(a, b, [d.dir]);
  // The process writes through sshfs into A's file: read it there (no link traffic).
  return finishStock(ctx, d, { transferMs: Date.now() - t1, transferBytes: sent.bytes }, () =>
    a.readFile(ctx.files.progress),
  );
}

export function migrate(
  system: SystemName,
  ctx: RunContext,
  staged: Map<string, number>,
): Promise<Migration> {
  switch (system) {
    case "lazyfs":
      return viaLazyfs(ctx, []);
    case "lazyfs-whole":
      return viaLazyfs(ctx, ["--view", "whole"]);
    case "lazyfs-prefetch":
      return viaLazyfs(ctx, ["--prefetch", "immediate"]);
    case "lazyfs-detach":
      return viaLazyfsDetach(ctx);
    case "whole-file":
      return viaLazyfs(ctx, ["--whole-file"]);
    case "sshfs":
      return viaSshfs(ctx);
    case "upfront":
      return viaUpfront(ctx);
    case "plain":
      return viaPlain(ctx, staged);
  }
}
