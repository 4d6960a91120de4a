/**
 * `lazyfs restore`: plan, start the daemon (mount), rewrite the images to point into the
 * mount, and `criu restore -d`. The daemon keeps serving after this returns.
 */
import { existsSync } from "node:fs";
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { checkStateDir, writeFileAtomic } from "../common/private-files.js";
import {
  type CriuOptions,
  criuRestore,
  criuRestoreArgs,
  type DumpModel,
  loadDump,
  rewriteImages,
} from "../criu/index.js";
import { type DaemonHandle, startDaemon, stopDaemon } from "../daemon/index.js";
import type { PolicyRule } from "../fetch/index.js";
import {
  bindsOfOthers,
  type ChainSource,
  checkDestination,
  checkMountpoint,
  choosePidNamespace,
  discardMigration,
  hostPathsFor,
  type Manifest,
  makeStateDir,
  migrationPaths,
  mountNamespaceOf,
  namespacePrefix,
  newMigrationId,
  openOrigin,
  type PathMap,
  prepareMountPoints,
  recordEvent,
  removeMountPoints,
  rewriteForNamespace,
  type ServeOptions,
  type Snapshot,
  type SshOptions,
  type View,
  writeManifest,
} from "../migration/index.js";
import type { OriginStat, SftpOrigin } from "../origin/index.js";
import { planMigration } from "./plan.js";

const log = logger("restore");

export interface RestoreRequest {
  imagesDir: string;
  origin: string;
  ssh: SshOptions;
  serve: ServeOptions;
  policies: PolicyRule[];
  maps: PathMap[];
  mountpoint?: string;
  /** Local block store; default <state>/<id>/cache. */
  cacheDir?: string;
  id?: string;
  criuPath?: string;
  /** Further origin directories to serve as lazy mirrors (`--lazy-dir`). */
  lazyDirs?: string[];
  /** CRIU's own options; their restore half is used here. */
  criu?: CriuOptions;
  /** How long to wait for the dump's pids to become free here (ms, default 10000). */
  pidWaitMs?: number;
  /** An open connection to the origin to reuse for planning (migrate has one). */
  originConnection?: SftpOrigin;
  /** A daemon already serving an empty plan (migrate mounts before the dump). */
  daemon?: DaemonHandle;
  /** Origin stats taken right after the dump (by migrate); otherwise stat now. */
  checkpointStats?: Record<string, OriginStat>;
  /** Reflink clones taken at the dump (migrate --origin-snapshot), and their directories. */
  snapshots?: ReadonlyMap<string, Snapshot>;
  snapshotDirs?: string[];
  /** The origin runs the process on LazyFS itself: a chained migration (chain/source.ts). */
  chain?: ChainSource;
  /** What the process sees of the origin (default `dirs`; the CLI's default is `whole`). */
  view?: View;
  /** Further target paths the whole view leaves to the target (`--host-path`). */
  hostPaths?: string[];
}

export interface RestoreResult {
  id: string;
  /** The restored root's pid on this host. */
  pid: number;
  /** Restored into a new pid namespace: the root's pid there (its original), and why. */
  pidNamespace?: RestoredPidNamespace;
  manifest: Manifest;
  /** The dumped tree as the images describe it: its processes (root first) and CRIU's run id. */
  dumped: DumpedTree;
  planMs: number;
  mountMs: number;
  rewriteMs: number;
  criuRestoreMs: number;
  /** Paths rewritten into the mount. */
  rewritten: number;
}

export interface RestoredPidNamespace {
  nsPid: number;
  /** The host pid of the namespace's init (LazyFS's reaper, criu/pidns.ts). */
  initPid: number;
  /** Auto: a pid of the tree that was taken here. */
  taken?: number;
}

/** The one line that tells the user the tree got a pid namespace of its own. */
export function pidNamespaceLine(pid: number, ns: RestoredPidNamespace): string {
  const why = ns.taken !== undefined ? `pid ${ns.taken} in use here` : "--pid-namespace always";
  return `${why}: restored into a new pid namespace; host pid ${pid} (pid ${ns.nsPid} inside)`;
}

export interface DumpedTree {
  processes: number[];
  criuRunId?: string;
}

export function dumpedTree(dump: DumpModel): DumpedTree {
  return {
    processes: dump.tasks.map((t) => t.pid),
    ...(dump.criuRunId ? { criuRunId: dump.criuRunId } : {}),
  };
}

/** Plans the migration and writes its manifest. */
export async function prepare(
  req: RestoreRequest,
): Promise<{ manifest: Manifest; pids: number[]; dumped: DumpedTree; ms: number }> {
  const t0 = Date.now();
  const id = req.id ?? newMigrationId();
  const paths = migrationPaths(id);
  // Everything a user can get wrong is checked before anything is created.
  if (req.cacheDir) await checkStateDir(req.cacheDir, "--cache");
  if (req.mountpoint) await checkMountpoint(req.mountpoint);
  checkDestination(req.origin);
  await makeStateDir(paths);
  const cacheIsNew = req.cacheDir !== undefined && !existsSync(req.cacheDir);
  let origin: SftpOrigin | undefined;
  try {
    const dump = await loadDump(req.imagesDir);
    const conn = req.originConnection ?? openOrigin(req.origin, req.ssh);
    origin = conn;
    const mountpoint = req.mountpoint ?? paths.defaultMountpoint;
    const manifest = await planMigration({
      id,
      dump,
      originUrl: req.origin,
      statOrigin: (p) => conn.stat(p),
      ...(req.checkpointStats ? { checkpointStats: req.checkpointStats } : {}),
      mtimePrecisionMs: conn.mtimePrecisionMs,
      mountpoint,
      cacheDir: req.cacheDir ?? paths.cache,
      imagesDir: req.imagesDir,
      policies: req.policies,
      maps: req.maps,
      ssh: req.ssh,
      serve: req.serve,
      ...(req.lazyDirs ? { lazyDirPaths: req.lazyDirs } : {}),
      ...(req.snapshots ? { snapshots: req.snapshots } : {}),
      ...(req.view === "whole"
        ? {
            view: "whole" as const,
            hostPaths: hostPathsFor({
              mountpoint,
              ...(req.hostPaths ? { extra: req.hostPaths } : {}),
              ...(req.criuPath ? { criuPath: req.criuPath } : {}),
            }),
            listOriginRoot: () => conn.readdir("/"),
          }
        : {}),
    });
    if (req.snapshotDirs?.length) manifest.snapshotDirs = req.snapshotDirs;
    if (req.chain) manifest.chain = req.chain;
    await writeManifest(paths.manifest, manifest);
    const pids = dump.tasks.flatMap((t) => [t.pid, ...t.threads]);
    return { manifest, pids: [...new Set(pids)], dumped: dumpedTree(dump), ms: Date.now() - t0 };
  } catch (err) {
    if (!req.id) await discardMigration(id, cacheIsNew ? req.cacheDir : undefined);
    throw err;
  } finally {
    if (!req.originConnection) await origin?.close();
  }
}

/** Rewrites the images so that every served path points into the mount. */
export async function rewriteForMount(manifest: Manifest, outDir: string): Promise<number> {
  const byOrigin = new Map(manifest.files.map((f) => [f.originPath, f]));
  const changes = await rewriteImages(manifest.imagesDir, outDir, (path) => {
    const f = byOrigin.get(path);
    return f && f.restorePath !== path ? f.restorePath : undefined;
  });
  return changes.length;
}

/**
 * Plans, mounts and restores. When this call chose the migration's id (not `migrate`, which
 * cleans up itself), a failure leaves nothing: the daemon is stopped, the state directory and
 * a new `--cache` removed.
 */
export async function restoreLazily(req: RestoreRequest): Promise<RestoreResult> {
  if (req.id) return restoreWithId(req);
  const id = newMigrationId();
  const cacheIsNew = req.cacheDir !== undefined && !existsSync(req.cacheDir);
  try {
    return await restoreWithId({ ...req, id });
  } catch (err) {
    await stopDaemon(migrationPaths(id).socket).catch(() => {});
    await discardMigration(id, cacheIsNew ? req.cacheDir : undefined);
    throw err;
  }
}

async function restoreWithId(req: RestoreRequest): Promise<RestoreResult> {
  const { manifest, pids, dumped, ms: planMs } = await prepare(req);
  const paths = migrationPaths(manifest.id);
  const pidChoice = await choosePidNamespace(
    req.criu?.pidNamespace ?? "auto",
    pids,
    req.pidWaitMs ?? 10_000,
  );
  // The daemon loads the plan while the images are rewritten: both only need the manifest.
  let t = Date.now();
  let mountMs = 0;
  const mounting = (req.daemon ? req.daemon.serve() : startDaemon(manifest.id).then(() => {})).then(
    () => {
      mountMs = Date.now() - t;
    },
  );
  mounting.catch(() => {}); // awaited below; a rewrite error must not leave it unhandled
  let pid: number;
  let pidNamespace: RestoredPidNamespace | undefined;
  let rewritten = 0;
  let rewriteMs = 0;
  try {
    rewritten = await rewriteForNamespace(manifest, paths.lazyImages);
    manifest.createdDirs = await prepareMountPoints(manifest.binds);
    if (manifest.createdDirs.length > 0) await writeManifest(paths.manifest, manifest);
    rewriteMs = Date.now() - t;
    await mounting;
    t = Date.now();
    const restoreArgs = criuRestoreArgs(req.criu ?? {});
    const root = await criuRestore({
      imagesDir: paths.lazyImages,
      logFile: `${paths.dir}/restore.log`,
      ...(req.criuPath ? { criuPath: req.criuPath } : {}),
      extraArgs: restoreArgs,
      prefix: namespacePrefix(manifest),
      ownSession: !restoreArgs.some((a) => a === "--shell-job" || a === "-j"),
      newPidNamespace: pidChoice.newNamespace,
    });
    pid = root.pid;
    if (root.nsPid !== undefined && root.initPid !== undefined) {
      pidNamespace = {
        nsPid: root.nsPid,
        initPid: root.initPid,
        ...(pidChoice.taken !== undefined ? { taken: pidChoice.taken } : {}),
      };
    }
    if (!(await mountNamespaceOf(pid))) {
      throw new UserError(`the restored process ${pid} ended right after its restore`);
    }
  } catch (err) {
    log.warn("restore failed; stopping the daemon", { id: manifest.id });
    await stopDaemon(paths.socket).catch(() => {});
    await removeMountPoints(manifest.createdDirs, await bindsOfOthers(manifest.id));
    throw err;
  }
  const criuRestoreMs = Date.now() - t;
  recordEvent(paths.dir, "restore", {
    pid,
    durationMs: criuRestoreMs,
    rewritten,
    ...(pidNamespace ? { nsPid: pidNamespace.nsPid } : {}),
  });
  if (pidNamespace) log.info(pidNamespaceLine(pid, pidNamespace));
  const mountNs = await mountNamespaceOf(pid);
  await writeFileAtomic(
    paths.restored,
    `${JSON.stringify({
      pid,
      ...(pidNamespace ? { nsPid: pidNamespace.nsPid, initPid: pidNamespace.initPid } : {}),
      mountNs,
      restoredMs: Date.now(),
    })}\n`,
  );
  return {
    id: manifest.id,
    pid,
    ...(pidNamespace ? { pidNamespace } : {}),
    manifest,
    dumped,
    planMs,
    mountMs,
    rewriteMs,
    criuRestoreMs,
    rewritten,
  };
}
