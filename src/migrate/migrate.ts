/**
 * `lazyfs migrate`, run on the target: over SSH, `criu dump --leave-stopped` on the origin
 * (which needs only sshd), pull the images, restore here lazily. The original tree stays
 * frozen on the origin until the restore here succeeded; then it is ended, and on any failure
 * before that it runs on at the origin exactly where it stopped, and nothing of the attempt
 * is left on either host.
 */
import { existsSync } from "node:fs";
import { openChainOrigin, originProcessView, viewPathOn } from "../chain/index.js";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { checkStateDir } from "../common/private-files.js";
import { type CriuOptions, criuDumpArgs, locateCriu, warmUpCodec } from "../criu/index.js";
import { callControl, type DaemonHandle, startDaemon, stopDaemon } from "../daemon/index.js";
import {
  checkMountpoint,
  discardMigration,
  makeStateDir,
  migrationPaths,
  newMigrationId,
  openOrigin,
  recordEvent,
  writeManifest,
} from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import {
  checkOriginPid,
  checkSysvShm,
  criuErrorsOnOrigin,
  type DumpSession,
  ensureOriginCriu,
  filesToSnapshot,
  localPidSpace,
  makeRemoteDumpDir,
  type OriginCriu,
  openDumpSession,
  originPidSpace,
  removeRemoteDir,
  removeSnapshots,
  samePidSpace,
} from "../origin-host/index.js";
import { Interruption } from "./interrupt.js";
import { emptyManifest } from "./plan.js";
import { pullImages } from "./pull.js";
import type { MigrateRequest, MigrateResult } from "./request.js";
import { restoreLazily } from "./restore.js";
import { bringBack, originTree, runOnRestored } from "./verdict.js";

const log = logger("migrate");

export async function migrateProcess(req: MigrateRequest): Promise<MigrateResult> {
  if (!Number.isInteger(req.pid) || req.pid <= 0) {
    throw new UserError(`--pid ${req.pid}: not a process id`);
  }
  const id = req.id ?? newMigrationId();
  const paths = migrationPaths(id);
  const origin = openOrigin(req.origin, req.ssh);
  // A `--cache` this migration creates is removed again if it fails.
  const cacheIsNew = req.cacheDir !== undefined && !existsSync(req.cacheDir);
  const criuOpts: CriuOptions = { ...req.criu };
  // CRIU's default lock needs iptables on the origin; its nftables lock is built in.
  if (criuOpts.tcpEstablished && !criuOpts.networkLock) criuOpts.networkLock = "nftables";
  let remoteDir: string | undefined;
  let session: DumpSession | undefined;
  let dumped = false;
  // Signals are the caller's business when it passes its Interruption (the CLI: it prints).
  const interruption = req.interruption ?? Interruption.listen();
  const checkpoint = () => interruption.check(origin.name);
  let daemonStarting: Promise<DaemonHandle> | undefined;
  let restoredPid: number | undefined;
  let originCriu: OriginCriu | undefined;
  /** The original waits frozen for the verdict (false: one kernel and pid namespace). */
  let keepStopped = true;
  /** The process lives in a pid namespace below the origin's: the images hold its pids there. */
  let inOriginPidNs = false;
  let planOrigin: SftpOrigin | undefined;
  try {
    await interruption.race(origin.connect(), origin.name);
    const [targetCriu, originSpace, targetSpace, view] = await Promise.all([
      checkOriginPid(origin, req.pid).then(async () => {
        await checkSysvShm(origin, req.pid);
        return locateCriu(req.criuPath ? { criuPath: req.criuPath } : {});
      }),
      originPidSpace(origin),
      localPidSpace(),
      originProcessView(origin, req.pid),
    ]);
    checkpoint();
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
    checkpoint();
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
    daemonStarting = startDaemon(id).then(async (d) => {
      await d.serve();
      return d;
    });
    daemonStarting.catch(() => {});
    const tCriu = Date.now();
    checkpoint();
    originCriu = await ensureOriginCriu(origin, {
      ...(req.originCriu ? { explicit: req.originCriu } : {}),
      localCriu: targetCriu.path,
    });
    const originCriuMs = Date.now() - tCriu;
    checkpoint();
    remoteDir = await makeRemoteDumpDir(origin);
    const inPidNs = view.pidNamespace;
    inOriginPidNs = inPidNs !== undefined;
    const dumpArgv = [
      // CRIU inside the process's own mount namespace: the images hold the paths it sees.
      // In a pid namespace of its own there, CRIU dumps it from inside, by its pid there.
      ...(inPidNs
        ? ["nsenter", "-t", String(inPidNs.initPid), "-p", "-m", "--"]
        : view.ownMountNs
          ? ["nsenter", `--mount=/proc/${req.pid}/ns/mnt`, "--"]
          : []),
      originCriu.path,
      "dump",
      "-t",
      String(inPidNs ? inPidNs.nsPid : req.pid),
      "-D",
      remoteDir,
      "-o",
      "dump.log",
      "-v4",
      ...(keepStopped ? ["--leave-stopped"] : []),
      ...criuDumpArgs(criuOpts),
    ];
    warmUpCodec(); // protobufjs compiles codecs lazily: do it before the freeze
    checkpoint();
    session = await openDumpSession(origin, dumpArgv, remoteDir);
    const daemon = await daemonStarting;
    // The last moment a signal stops the migration: from the dump on, it is finished first.
    checkpoint();
    interruption.commit();
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
    // A tree in a pid namespace of its own ends with its init.
    restoredPid = restored.pidNamespace?.initPid ?? restored.pid;
    const tRestored = Date.now();
    if (req.onRestored) {
      await runOnRestored(req.onRestored, {
        LAZYFS_ID: id,
        LAZYFS_PID: String(restored.pid),
        ...(restored.pidNamespace ? { LAZYFS_NS_PID: String(restored.pidNamespace.nsPid) } : {}),
        LAZYFS_ORIGIN: req.origin,
      });
    }
    const tHook = Date.now();
    // The verdict is in: from here on the process lives here, whatever happens on the origin.
    dumped = false;
    restoredPid = undefined;
    if (keepStopped) {
      // The images name the tree by its pids in its namespace there: walk it by ours.
      await originTree(
        origin,
        inPidNs ? undefined : restored.dumped,
        req.pid,
        criuOpts,
        originCriu.nftPath,
      )
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
    if (!req.interruption) interruption.close();
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
    // A daemon still starting is stopped once it listens (or has given up).
    await daemonStarting?.catch(() => {});
    await stopDaemon(paths.socket).catch(() => {});
    await session?.end().catch(() => {});
    if (session) await removeSnapshots(origin, session.snapshotDirs);
    const back =
      dumped && remoteDir
        ? await bringBack({
            origin,
            remoteDir,
            keepStopped,
            imagesDir: paths.images,
            pid: req.pid,
            inPidNamespace: inOriginPidNs,
            criu: criuOpts,
            originCriu,
          })
        : undefined;
    if (remoteDir && !back?.keepImages) await removeRemoteDir(origin, remoteDir);
    await discardMigration(id, cacheIsNew ? req.cacheDir : undefined);
    // A step that failed after a signal (a child of ours got it too) failed because of it.
    if (!back) return interruption.stopped(origin.name) ?? err;
    return new UserError(`${errorMessage(err)}${back.fate}`, { cause: err });
  }
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
