/**
 * `lazyfs migrate`, run on the target: over SSH, `criu dump --leave-stopped` on the origin
 * (which needs only sshd), pull the images, restore here lazily. The original tree stays
 * frozen on the origin until the restore here succeeded; then it is ended, and on any failure
 * before that it runs on at the origin exactly where it stopped, and nothing of the attempt
 * is left on either host.
 */
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { checkStateDir } from "../common/private-files.js";
import { shq } from "../common/shell.js";
import {
  type CriuOptions,
  criuDumpArgs,
  loadDump,
  locateCriu,
  warmUpCodec,
} from "../criu/index.js";
import type { SftpOrigin } from "../origin/index.js";
import { openChainOrigin, viewPathOn } from "./chain-origin.js";
import { originProcessView } from "./chain-source.js";
import { openOrigin } from "./connect.js";
import { callControl, stopDaemon } from "./control.js";
import { checkMountpoint } from "./discard.js";
import {
  type DumpSession,
  filesToSnapshot,
  openDumpSession,
  removeSnapshots,
  type SnapshotMode,
} from "./dump-session.js";
import { recordEvent } from "./events.js";
import { writeManifest } from "./manifest.js";
import { ensureOriginCriu, type OriginCriu } from "./origin-criu.js";
import { criuErrorsOnOrigin, makeRemoteDumpDir, removeRemoteDir } from "./origin-dump.js";
import {
  checkOriginPid,
  localPidSpace,
  OriginTree,
  originPidSpace,
  originTreePids,
  samePidSpace,
} from "./origin-tree.js";
import { emptyManifest } from "./plan.js";
import { pullImages } from "./pull.js";
import {
  type DumpedTree,
  dumpedTree,
  type RestoreRequest,
  type RestoreResult,
  restoreLazily,
  startDaemon,
} from "./restore.js";
import { makeStateDir, migrationPaths, newMigrationId } from "./state.js";

const log = logger("migrate");

export interface MigrateRequest extends Omit<RestoreRequest, "imagesDir" | "checkpointStats"> {
  pid: number;
  /** CRIU on the origin; default: $LAZYFS_CRIU there, /opt/lazyfs/criu/bin/criu, criu. */
  originCriu?: string;
  /** Keep the dump directory on the origin after a successful migration. */
  keepOriginImages?: boolean;
  /** How long to wait for the first origin fetch to report it in the timeline (ms). */
  firstFetchWaitMs?: number;
  /**
   * Shell command run here once the process runs here, before its original on the origin is
   * ended (e.g. to move a service address); a non-zero exit fails the migration.
   */
  onRestored?: string;
  /**
   * Clone the files the target reads from the origin at the dump (reflink: btrfs, xfs) and
   * read the clones: `reflink` fails when a file cannot be cloned, `auto` goes on without.
   */
  originSnapshot?: SnapshotMode;
}

export interface CriuUsed {
  path: string;
  version: string;
  /** Where it came from: found on the host, or pushed there by this migration. */
  source: string;
}

export interface Timeline {
  /** Dump start to the restored process running on the target. */
  freezeMs: number;
  dumpMs: number;
  transferMs: number;
  imageBytes: number;
  restoreMs: number;
  /** Parts of restoreMs: plan (stats, manifest), daemon start and mount, rewrite, CRIU. */
  planMs: number;
  mountMs: number;
  rewriteMs: number;
  criuRestoreMs: number;
  /** The `--on-restored` command, if any (inside the freeze of TCP peers, not of the process). */
  onRestoredMs: number;
  /** Finding CRIU on the origin, or pushing this host's there (before the freeze). */
  originCriuMs: number;
  /** Ending the original on the origin once the restore here succeeded. */
  endOriginMs: number;
  /** From the restore to the first byte LazyFS fetched from the origin, if any yet. */
  firstFetchMs: number | null;
  /** `--origin-snapshot`: cloning on the origin (inside transferMs), and files cloned. */
  snapshotMs: number;
  snapshotFiles: number;
}

export interface MigrateResult extends RestoreResult {
  timeline: Timeline;
  originImagesDir: string;
  criu: { origin: OriginCriu; target: CriuUsed };
  /**
   * `stopped`: the original was kept frozen until the restore here succeeded (the normal
   * case). `killed`: origin and target share one kernel and pid namespace, so the dump had
   * to end the original at once (a failed restore is then restored back from the images).
   */
  originKept: "stopped" | "killed";
}

/**
 * Signals that arrive between the dump and the verdict are held until the verdict: acting on
 * them halfway could leave the process on both hosts, or on neither.
 */
function holdSignals(): { release(): void } {
  const held: NodeJS.Signals[] = [];
  const onSignal = (sig: NodeJS.Signals) => {
    if (!held.includes(sig)) {
      log.warn(`${sig} received: finishing the migration first (a few seconds)`);
      held.push(sig);
    }
  };
  const sigs: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of sigs) process.on(s, onSignal);
  return {
    release() {
      for (const s of sigs) process.off(s, onSignal);
      const first = held[0];
      if (first) process.kill(process.pid, first);
    },
  };
}

/** Runs the `--on-restored` command with the migration's facts in its environment. */
async function runOnRestored(command: string, env: Record<string, string>): Promise<void> {
  const child = spawn("sh", ["-c", command], {
    stdio: ["ignore", "inherit", "pipe"],
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    process.stderr.write(d);
  });
  const code = await new Promise<number | null>((resolve) => {
    child.on("error", () => resolve(127));
    child.on("close", (c) => resolve(c));
  });
  if (code !== 0) {
    const tail = stderr.trim().split("\n").slice(-1)[0];
    throw new UserError(
      `--on-restored command failed (${code === null ? "killed" : `exit ${code}`})${tail ? `: ${tail}` : ""}`,
    );
  }
}

export async function migrateProcess(req: MigrateRequest): Promise<MigrateResult> {
  if (!Number.isInteger(req.pid) || req.pid <= 0) {
    throw new UserError(`--pid ${req.pid}: not a process id`);
  }
  const id = req.id ?? newMigrationId();
  const paths = migrationPaths(id);
  const origin = openOrigin(req.origin, req.ssh);
  const criuOpts: CriuOptions = { ...req.criu };
  // CRIU's default lock needs iptables on the origin; its nftables lock is built in.
  if (criuOpts.tcpEstablished && !criuOpts.networkLock) criuOpts.networkLock = "nftables";
  let remoteDir: string | undefined;
  let session: DumpSession | undefined;
  let dumped = false;
  let signals: { release(): void } | undefined;
  let restoredPid: number | undefined;
  let originCriu: OriginCriu | undefined;
  /** The original waits frozen for the verdict (false: one kernel and pid namespace). */
  let keepStopped = true;
  let planOrigin: SftpOrigin | undefined;
  try {
    await origin.connect();
    const [targetCriu, originSpace, targetSpace, view] = await Promise.all([
      checkOriginPid(origin, req.pid).then(() =>
        locateCriu(req.criuPath ? { criuPath: req.criuPath } : {}),
      ),
      originPidSpace(origin),
      localPidSpace(),
      originProcessView(origin, req.pid),
    ]);
    // A process restored by LazyFS there (A -> origin -> here) is seen in its own view.
    const chain = view.chain;
    if (chain) {
      log.info("chained migration: the process runs on LazyFS on the origin", {
        firstOrigin: chain.firstOrigin,
        originMigration: chain.id,
      });
    }
    keepStopped = !samePidSpace(originSpace, targetSpace);
    if (!keepStopped) {
      log.warn(
        "origin and target share one kernel and pid namespace: the original must end at the dump (its pids are needed here); a failed restore is restored back on the origin from the images",
      );
    }
    // Mount an empty tree before the dump; the plan is added to it once the images are here.
    const mountpoint = req.mountpoint ?? paths.defaultMountpoint;
    if (req.mountpoint) await checkMountpoint(req.mountpoint);
    if (req.cacheDir) await checkStateDir(req.cacheDir, "--cache");
    await makeStateDir(paths);
    await writeManifest(paths.manifest, {
      ...emptyManifest({
        id,
        originUrl: req.origin,
        mountpoint,
        cacheDir: req.cacheDir ?? paths.cache,
        imagesDir: paths.images,
        maps: req.maps,
        ssh: req.ssh,
        serve: req.serve,
      }),
      ...(chain ? { chain } : {}),
    });
    const daemonStarting = startDaemon(id).then(async (d) => {
      await d.serve();
      return d;
    });
    daemonStarting.catch(() => {});
    const tCriu = Date.now();
    originCriu = await ensureOriginCriu(origin, {
      ...(req.originCriu ? { explicit: req.originCriu } : {}),
      localCriu: targetCriu.path,
    });
    const originCriuMs = Date.now() - tCriu;
    remoteDir = await makeRemoteDumpDir(origin);
    const dumpArgv = [
      // CRIU inside the process's own mount namespace: the images hold the paths it sees.
      ...(view.ownMountNs ? ["nsenter", `--mount=/proc/${req.pid}/ns/mnt`, "--"] : []),
      originCriu.path,
      "dump",
      "-t",
      String(req.pid),
      "-D",
      remoteDir,
      "-o",
      "dump.log",
      "-v4",
      ...(keepStopped ? ["--leave-stopped"] : []),
      ...criuDumpArgs(criuOpts),
    ];
    warmUpCodec(); // protobufjs compiles codecs lazily: do it before the freeze
    session = await openDumpSession(origin, dumpArgv, remoteDir);
    const daemon = await daemonStarting;
    signals = holdSignals();
    const tDump = Date.now();
    session.go();
    const dump = await session.dumped;
    if (dump.code !== 0) {
      // CRIU itself lets the tree run on when its dump fails.
      const errors = await criuErrorsOnOrigin(origin, `${remoteDir}/dump.log`);
      throw new UserError(
        `${origin.name}: criu dump of pid ${req.pid} failed: ${errors || dump.stderr.trim() || `exit ${dump.code}`}; the process runs on at ${origin.name}`,
      );
    }
    dumped = true;
    const tPull = Date.now();
    recordEvent(paths.dir, "dump", {
      pid: req.pid,
      origin: origin.name,
      durationMs: tPull - tDump,
      kept: keepStopped ? "stopped" : "killed",
    });
    // The files' dump-time stats (and clones) come from the dump's own session, while the
    // process is still frozen.
    const dumpSession = session;
    const { bytes: imageBytes, stats: checkpointStats } = await pullImages(
      origin,
      remoteDir,
      paths.images,
      (p) => dumpSession.stat(p),
      chain ? (p) => viewPathOn(chain, p) : undefined,
    );
    if (chain) planOrigin = openChainOrigin(req.origin, req.ssh, chain);
    const mode = req.originSnapshot ?? "none";
    const tSnap = Date.now();
    const snapshots =
      mode === "none"
        ? undefined
        : await session.snapshot(
            await filesToSnapshot(checkpointStats, req.policies, req.maps),
            checkpointStats,
            mode,
          );
    const snapshotMs = mode === "none" ? 0 : Date.now() - tSnap;
    await session.end();
    const tPulled = Date.now();
    recordEvent(paths.dir, "image-transfer", { bytes: imageBytes, durationMs: tPulled - tPull });
    const restored = await restoreLazily({
      ...req,
      criu: criuOpts,
      criuPath: targetCriu.path,
      id,
      imagesDir: paths.images,
      checkpointStats,
      ...(snapshots ? { snapshots, snapshotDirs: session.snapshotDirs } : {}),
      originConnection: planOrigin ?? origin,
      daemon,
      ...(chain ? { chain } : {}),
    });
    restoredPid = restored.pid;
    const tRestored = Date.now();
    if (req.onRestored) {
      await runOnRestored(req.onRestored, {
        LAZYFS_ID: id,
        LAZYFS_PID: String(restored.pid),
        LAZYFS_ORIGIN: req.origin,
      });
    }
    const tHook = Date.now();
    // The verdict is in: from here on the process lives here, whatever happens on the origin.
    dumped = false;
    restoredPid = undefined;
    if (keepStopped) {
      await originTree(origin, restored.dumped, req.pid, criuOpts, originCriu.nftPath)
        .then((tree) => tree.end())
        .catch((err) =>
          log.warn("could not end the original on the origin; it is still stopped there", {
            origin: origin.name,
            error: errorMessage(err),
          }),
        );
    }
    const tEnded = Date.now();
    recordEvent(paths.dir, "origin-process-ended", {
      pid: req.pid,
      origin: origin.name,
      how: keepStopped ? "killed after the restore" : "ended at the dump",
    });
    signals.release();
    signals = undefined;
    if (!req.keepOriginImages) await removeRemoteDir(origin, remoteDir);
    const firstFetchMs = await waitFirstFetch(paths.socket, tRestored, req.firstFetchWaitMs ?? 0);
    return {
      ...restored,
      originImagesDir: remoteDir,
      criu: {
        origin: originCriu,
        target: { path: targetCriu.path, version: targetCriu.version, source: targetCriu.source },
      },
      originKept: keepStopped ? "stopped" : "killed",
      timeline: {
        freezeMs: tRestored - tDump,
        dumpMs: tPull - tDump,
        transferMs: tPulled - tPull,
        imageBytes,
        restoreMs: tRestored - tPulled,
        planMs: restored.planMs,
        mountMs: restored.mountMs,
        rewriteMs: restored.rewriteMs,
        criuRestoreMs: restored.criuRestoreMs,
        onRestoredMs: tHook - tRestored,
        originCriuMs,
        endOriginMs: tEnded - tHook,
        firstFetchMs,
        snapshotMs,
        snapshotFiles: snapshots?.size ?? 0,
      },
    };
  } catch (err) {
    throw await failed(err);
  } finally {
    signals?.release();
    await planOrigin?.close();
    await origin.close();
  }

  /** Puts everything back as it was: the process on the origin, nothing left here or there. */
  async function failed(err: unknown): Promise<unknown> {
    if (restoredPid !== undefined) {
      try {
        process.kill(restoredPid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await stopDaemon(paths.socket).catch(() => {});
    await session?.end().catch(() => {});
    if (session) await removeSnapshots(origin, session.snapshotDirs);
    let fate = "";
    if (dumped && remoteDir) {
      try {
        fate = await bringBack(remoteDir);
      } catch (e) {
        fate = `; resuming it on ${origin.name} failed too (${errorMessage(e)}): the process is stopped there, \`kill -CONT\` resumes it`;
      }
    }
    if (remoteDir && !fate.includes("images kept")) await removeRemoteDir(origin, remoteDir);
    await rm(paths.dir, { recursive: true, force: true });
    if (!fate) return err;
    return new UserError(`${errorMessage(err)}${fate}`, { cause: err });
  }

  async function bringBack(remoteDir: string): Promise<string> {
    if (keepStopped) {
      // Without the images (their transfer failed) the origin's /proc knows the tree.
      const dumped = await loadDump(paths.images).then(dumpedTree, () => undefined);
      const tree = await originTree(origin, dumped, req.pid, criuOpts, originCriu?.nftPath);
      await tree.resume();
      const running = await tree.alive();
      if (running.length < tree.pids.length) {
        return `; only ${running.length} of its ${tree.pids.length} processes still exist on ${origin.name}`;
      }
      return `; the process runs on at ${origin.name} where it stopped`;
    }
    // The original ended at the dump (its pids were needed here): restore it from the images.
    const wait = `i=0; while [ -e /proc/${req.pid} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; `;
    const criu = originCriu?.path ?? "criu";
    const back = await origin.exec(
      wait +
        [criu, "restore", "-d", "-D", remoteDir, "-o", "restore-back.log", "-v4"]
          .map(shq)
          .join(" "),
    );
    return back.code === 0
      ? `; the process was restored back on ${origin.name}`
      : `; restoring it back on ${origin.name} failed too: its images are kept in ${remoteDir} there`;
  }
}

/** The dumped tree on the origin, as the images describe it, else from the origin's /proc. */
async function originTree(
  origin: SftpOrigin,
  dumped: DumpedTree | undefined,
  rootPid: number,
  criu: CriuOptions,
  nftPath: string | undefined,
): Promise<OriginTree> {
  const pids = dumped?.processes ?? (await originTreePids(origin, rootPid));
  const runId = dumped?.criuRunId;
  const lock = criu.tcpEstablished
    ? {
        method: criu.networkLock ?? "iptables",
        ...(runId ? { runId } : {}),
        ...(nftPath ? { nftPath } : {}),
      }
    : undefined;
  return new OriginTree(origin, pids, lock);
}

/** Polls the daemon until it reports a first origin fetch, or the wait is over. */
async function waitFirstFetch(
  socket: string,
  since: number,
  waitMs: number,
): Promise<number | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const st = (await callControl(socket, { op: "status" }).catch(() => undefined)) as
      | { firstFetchAtMs?: number | null }
      | undefined;
    if (st?.firstFetchAtMs) return Math.max(0, st.firstFetchAtMs - since);
    if (Date.now() >= deadline) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
}
