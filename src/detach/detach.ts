/**
 * `lazyfs detach ID`: ends a migration's last dependency, LazyFS itself. Once nothing the
 * process may need is left on the origin, its files become plain files on the target and a
 * local CRIU dump and restore moves its descriptors, mappings, cwd and exe onto them; then the
 * daemon stops and the mount goes.
 *
 * Where the plain files live: `<state>/<id>/root` (or `--dir`), a directory on the target's
 * own file system next to the cache, holding the whole tree the process saw below the mount.
 * The restored process gets a NEW private mount namespace in which each directory LazyFS
 * served (the manifest's bind roots) is a bind mount of `<root><dir>`: the same paths as
 * before, now plain local files; the target's own directories of those names stay untouched
 * for every other process. Regular files are the block store's data files hard-linked into
 * place (materialize.ts), so detaching moves no file data.
 *
 * The process is never lost: CRIU dumps it inside its own mount namespace (`nsenter -m`, so
 * that the images hold its paths), with the daemon still serving; if anything fails after the
 * dump, the plain tree is removed and the process is restored from the same images onto
 * LazyFS, as it was. Only after the restore succeeded is the daemon stopped.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { isUnder } from "../common/paths.js";
import {
  type CriuOptions,
  criuDump,
  criuDumpArgs,
  criuRestore,
  criuRestoreArgs,
  encodeImage,
  loadDump,
  locateCriu,
  type RewritePath,
  readImage,
  rewriteImage,
} from "../criu/index.js";
import { callControl, type DaemonStatus, stopDaemon } from "../daemon/index.js";
import { snapshotTree } from "../lazy/index.js";
import {
  choosePidNamespace,
  migrationPaths,
  mountNamespaceOf,
  namespacePrefix,
  prepareMountPoints,
  readManifest,
  readRestored,
  writeManifest,
} from "../migration/index.js";
import { DEFAULT_BLOCK_SIZE } from "../store/index.js";
import {
  type DetachedRecord,
  type DetachTimeline,
  detachedPath,
  readDetached,
} from "./detached.js";
import { type MaterializeResult, materializeTree, onlyOnOrigin } from "./materialize.js";
import { detachedNamespacePrefix } from "./namespace.js";

const log = logger("detach");

/** What to do with files whose content follows the origin (policy `remote`). */
export type RemoteChoice = "refuse" | "copy";

export interface DetachRequest {
  id: string;
  /** `copy`: take their current content from the origin and keep it here (default: refuse). */
  remote?: RemoteChoice;
  /** Wait for independence instead of refusing (ms; 0 = refuse at once). */
  waitMs?: number;
  /** Where the plain files go (default `<state>/<id>/root`). */
  root?: string;
  criuPath?: string;
  /** CRIU's own options, as for migrate (`--file-locks`, `--tcp-established`, ...). */
  criu?: CriuOptions;
  /**
   * Ends the wait for independence (DetachWaitStopped); once the wait is over the detach is
   * finished whatever happens to it, as stopping between dump and restore could lose the process.
   */
  signal?: AbortSignal;
}

/** The wait for independence was stopped (`signal`): nothing was done, LazyFS serves on. */
export class DetachWaitStopped extends UserError {
  constructor(
    readonly id: string,
    readonly reason: string,
  ) {
    super(
      `${reason}: stopped waiting to detach; migration ${id} runs on LazyFS (\`lazyfs detach ${id} --wait\` detaches it later)`,
    );
  }
}

export interface DetachResult {
  id: string;
  /** The process's host pid (CRIU keeps its root pid, inside a new pid namespace if need be). */
  pid: number;
  /** Restored into a new pid namespace: the root's pid there. */
  nsPid?: number;
  root: string;
  /** The directories bind-mounted in the process's new mount namespace. */
  binds: string[];
  materialized: MaterializeResult;
  /** Remote-policy files whose current content was made local (`--remote copy`). */
  remoteCopied: string[];
  timeline: DetachTimeline;
}

/** What keeps the migration from being independent, and its remote-policy files. */
export function dependence(s: DaemonStatus): { blockers: string[]; remote: string[] } {
  const remote = s.perFile.filter((f) => f.policy === "remote").map((f) => f.path);
  const left = s.perFile.filter((f) => f.policy !== "remote" && f.bytesOnOrigin > 0);
  const blockers: string[] = [];
  if (left.length > 0) {
    const bytes = left.reduce((a, f) => a + f.bytesOnOrigin, 0);
    blockers.push(`${bytes} bytes of ${left.length} file(s) (e.g. ${left[0]!.path})`);
  }
  const dirs = s.dirs ? s.dirs.uncrawled : 0;
  const found = s.dirs ? s.dirs.pendingFiles : 0;
  if (dirs > 0) blockers.push(`${dirs} director${dirs === 1 ? "y" : "ies"} not yet listed`);
  if (found > 0) blockers.push(`${found} file(s) found there not yet fetched`);
  return { blockers, remote };
}

async function daemonStatus(id: string): Promise<DaemonStatus> {
  return (await callControl(migrationPaths(id).socket, { op: "status" })) as DaemonStatus;
}

/** Refuses (or waits) until nothing but remote files keeps the origin needed. */
async function awaitIndependence(req: DetachRequest): Promise<DaemonStatus> {
  const deadline = Date.now() + (req.waitMs ?? 0);
  const stopped = () => {
    if (req.signal?.aborted) throw new DetachWaitStopped(req.id, String(req.signal.reason));
  };
  for (;;) {
    stopped();
    const s = await daemonStatus(req.id);
    stopped();
    const { blockers } = dependence(s);
    if (blockers.length === 0) return s;
    if (Date.now() >= deadline) {
      const waited = req.waitMs ? ` after waiting ${req.waitMs} ms` : "";
      const how =
        s.prefetch.mode === "none"
          ? "; its prefetch is off, so only the process's own reads fetch the rest"
          : "";
      throw new UserError(
        `migration ${req.id} is not independent of ${s.origin} yet${waited}: ${blockers.join(", ")} still only there${how} (--wait waits for it)`,
      );
    }
    await new Promise<void>((r) => {
      const wake = () => {
        clearTimeout(timer);
        r();
      };
      const timer = setTimeout(() => {
        req.signal?.removeEventListener("abort", wake);
        r();
      }, 200);
      req.signal?.addEventListener("abort", wake, { once: true });
    });
  }
}

/** `sync -f`: the mount's dirty pages (shared mappings) reach the daemon, hence the store. */
function syncMount(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("sync", ["-f", path], { stdio: "ignore" });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`sync -f ${path}: exit ${code}`)),
    );
  });
}

/**
 * Moves paths from one prefix to another in this dump's file tables, in place (the dump is
 * ours), and drops CRIU's size check for remote files (their content is the origin's latest,
 * copied after the dump, or followed again on LazyFS).
 */
function moveAndDrop(from: string, to: string, remote: ReadonlySet<string>): RewritePath {
  return (p) => {
    const name = isUnder(p, from) ? `${to}${p.slice(from.length)}` : p;
    const dropSize = remote.has(p);
    return name !== p || dropSize ? { name, dropSize } : undefined;
  };
}

async function rewriteInPlace(dir: string, rewrite: RewritePath): Promise<number> {
  let n = 0;
  for (const name of ["files.img", "reg-files.img"]) {
    const path = join(dir, name);
    if (!existsSync(path)) continue;
    const image = await readImage(path);
    const changes = rewriteImage(image, rewrite);
    if (changes.length > 0) await writeFile(path, encodeImage(image));
    n += changes.length;
  }
  return n;
}

async function blockSizeOf(cacheDir: string): Promise<number> {
  try {
    const cfg = JSON.parse(await readFile(join(cacheDir, "store.json"), "utf8")) as {
      blockSize?: number;
    };
    return cfg.blockSize ?? DEFAULT_BLOCK_SIZE;
  } catch {
    return DEFAULT_BLOCK_SIZE;
  }
}

export async function detachMigration(req: DetachRequest): Promise<DetachResult> {
  const paths = migrationPaths(req.id);
  if (!existsSync(paths.dir)) throw new UserError(`no migration ${req.id} on this host`);
  if (await readDetached(req.id)) {
    throw new UserError(`migration ${req.id} is already detached: no LazyFS is left to detach`);
  }
  const manifest = await readManifest(paths.manifest);
  const restored = await readRestored(paths.restored);
  const pid = restored.pid;
  if (!pid || !restored.mountNs || (await mountNamespaceOf(pid)) !== restored.mountNs) {
    throw new UserError(
      `migration ${req.id}: its restored process ${pid ?? "(none recorded)"} is not running here; nothing to detach (\`lazyfs unmount ${req.id}\` ends the migration)`,
    );
  }
  const root = req.root ?? join(paths.dir, "root");
  if (existsSync(root)) {
    throw new UserError(
      `${root} already exists; detach puts the process's files in a new directory`,
    );
  }
  // The whole view ends at detach: the process keeps its data's directories (all local by
  // now); elsewhere it sees the target's own files, as every other process here does.
  const binds = manifest.view === "whole" ? (manifest.dataBinds ?? []) : manifest.binds;
  if (isUnder(root, manifest.mountpoint) || binds.some((b) => isUnder(root, b))) {
    throw new UserError(`${root} is inside what LazyFS serves; choose a directory outside it`);
  }
  const t0 = Date.now();
  const status = await awaitIndependence(req);
  const { remote } = dependence(status);
  if (remote.length > 0 && req.remote !== "copy") {
    throw new UserError(
      `migration ${req.id}: ${remote.slice(0, 3).join(", ")}${remote.length > 3 ? ` and ${remote.length - 3} more` : ""} follow${remote.length === 1 ? "s" : ""} the origin's live content (policy remote) and cannot be detached as they are; \`--remote copy\` makes their current content local`,
    );
  }
  const waitMs = Date.now() - t0;
  const criu = await locateCriu(req.criuPath ? { criuPath: req.criuPath } : {});
  const blockSize = await blockSizeOf(manifest.cacheDir);
  const work = join(paths.dir, "detach");
  const images = join(work, "images");
  await rm(work, { recursive: true, force: true });
  await mkdir(images, { recursive: true, mode: 0o700 });
  // Made before the freeze: a directory that cannot be made refuses the detach at once.
  await mkdir(root, { recursive: true, mode: 0o700 }).catch((err) => {
    throw new UserError(`cannot make ${root} for the process's files: ${errorMessage(err)}`);
  });
  // Remote files as the images name them: the process's paths (planned files' ids).
  const remoteSet = new Set(
    status.perFile.filter((f) => f.policy === "remote").flatMap((f) => [f.path, f.id]),
  );
  const criuOpts = req.criu ?? {};

  // ---- the freeze: dump, materialise, restore ---------------------------------------------
  const tDump = Date.now();
  // A tree in a pid namespace of its own is dumped from inside it, by its pid there.
  const inNs = restored.nsPid !== undefined && restored.initPid !== undefined;
  await criuDump({
    pid: inNs ? restored.nsPid! : pid,
    imagesDir: images,
    logFile: join(work, "dump.log"),
    criuPath: criu.path,
    prefix: inNs
      ? ["nsenter", "-t", String(restored.initPid), "-p", "-m", "--"]
      : ["nsenter", `--mount=/proc/${pid}/ns/mnt`, "--"],
    extraArgs: criuDumpArgs(criuOpts),
  }).catch((err: unknown) => {
    // CRIU lets the tree run on when its dump fails.
    const gone = [root, work].map((d) => rm(d, { recursive: true, force: true }));
    return Promise.all(gone).then(() => {
      throw new UserError(`${errorMessage(err)}; the process runs on LazyFS as before`, {
        cause: err,
      });
    });
  });
  const tDumped = Date.now();
  let materialized: MaterializeResult;
  let newPid: number;
  let newNsPid: number | undefined;
  let newInitPid: number | undefined;
  let tPlaced: number;
  // The pids the restore needs: the tree's own, as the images name them.
  const pids = await loadDump(images).then(
    (d) => [...new Set(d.tasks.flatMap((t) => [t.pid, ...t.threads]))],
    () => [] as number[],
  );
  try {
    await syncMount(manifest.mountpoint);
    // What the whole view showed on reference only is not the process's to keep.
    const entries = (await snapshotTree(manifest.cacheDir)).filter(
      (e) => !e.node.onReference || (e.node.mode & 0o170000) === 0o040000,
    );
    const missing = onlyOnOrigin(entries.filter((e) => !e.node.onReference));
    if (missing.length > 0) {
      throw new UserError(`${missing[0]} is still only on ${manifest.origin}`);
    }
    materialized = await materializeTree({
      entries,
      mountpoint: manifest.mountpoint,
      cacheDir: manifest.cacheDir,
      blockSize,
      root,
    });
    // A served file outside every bind root was opened through the mount's own path.
    await rewriteInPlace(images, moveAndDrop(manifest.mountpoint, root, remoteSet));
    await prepareMountPoints(binds);
    const choice = await choosePidNamespace(criuOpts.pidNamespace ?? "auto", pids, 10_000);
    tPlaced = Date.now();
    ({
      pid: newPid,
      nsPid: newNsPid,
      initPid: newInitPid,
    } = await criuRestore({
      imagesDir: images,
      logFile: join(work, "restore.log"),
      criuPath: criu.path,
      extraArgs: criuRestoreArgs(criuOpts),
      prefix: detachedNamespacePrefix(root, binds),
      newPidNamespace: choice.newNamespace,
    }));
  } catch (err) {
    throw await rollBack(err);
  }
  const tRestored = Date.now();

  // ---- after the freeze: LazyFS goes ------------------------------------------------------
  const mountNs = (await mountNamespaceOf(newPid)) ?? null;
  const inNewNs = newNsPid !== undefined ? { nsPid: newNsPid, initPid: newInitPid } : {};
  const record: DetachedRecord = {
    pid: newPid,
    ...inNewNs,
    mountNs,
    root,
    binds,
    createdDirs: manifest.createdDirs,
    detachedMs: tRestored,
    timeline: {
      waitMs,
      freezeMs: tRestored - tDump,
      dumpMs: tDumped - tDump,
      materializeMs: tPlaced - tDumped,
      criuRestoreMs: tRestored - tPlaced,
      stopDaemonMs: 0,
      cleanupMs: 0,
    },
  };
  await writeFile(detachedPath(req.id), `${JSON.stringify(record)}\n`);
  await writeFile(
    paths.restored,
    `${JSON.stringify({ pid: newPid, ...inNewNs, mountNs, restoredMs: tRestored, detached: true })}\n`,
  );
  // The process's namespace mounts on the directories LazyFS created: they are its now, and
  // the daemon must not remove them when it stops.
  await writeManifest(paths.manifest, { ...manifest, createdDirs: [] });
  await stopDaemon(paths.socket).catch((err) =>
    log.warn("could not stop the daemon", { id: req.id, error: errorMessage(err) }),
  );
  const tStopped = Date.now();
  for (const dir of [manifest.cacheDir, paths.images, paths.lazyImages, work]) {
    await rm(dir, { recursive: true, force: true }).catch((err) =>
      log.warn("could not remove", { path: dir, error: errorMessage(err) }),
    );
  }
  const tClean = Date.now();
  record.timeline.stopDaemonMs = tStopped - tRestored;
  record.timeline.cleanupMs = tClean - tStopped;
  await writeFile(detachedPath(req.id), `${JSON.stringify(record)}\n`);
  return {
    id: req.id,
    pid: newPid,
    ...(newNsPid !== undefined ? { nsPid: newNsPid } : {}),
    root,
    binds,
    materialized,
    remoteCopied: remote,
    timeline: record.timeline,
  };

  /** The process goes back onto LazyFS, from the same images, as it was. */
  async function rollBack(err: unknown): Promise<unknown> {
    log.warn("detach failed after the dump; restoring the process onto LazyFS", {
      id: req.id,
      error: errorMessage(err),
    });
    await rm(root, { recursive: true, force: true }).catch(() => {});
    try {
      await rewriteInPlace(images, moveAndDrop(root, manifest.mountpoint, remoteSet));
      await prepareMountPoints(manifest.binds);
      const choice = await choosePidNamespace(criuOpts.pidNamespace ?? "auto", pids, 10_000);
      const back = await criuRestore({
        imagesDir: images,
        logFile: join(work, "restore-back.log"),
        criuPath: criu.path,
        extraArgs: criuRestoreArgs(criuOpts),
        prefix: namespacePrefix(manifest),
        newPidNamespace: choice.newNamespace,
      });
      const ns = await mountNamespaceOf(back.pid);
      const inNs = back.nsPid !== undefined ? { nsPid: back.nsPid, initPid: back.initPid } : {};
      await writeFile(
        paths.restored,
        `${JSON.stringify({ pid: back.pid, ...inNs, mountNs: ns, restoredMs: Date.now() })}\n`,
      );
      await rm(work, { recursive: true, force: true });
      return new UserError(
        `detach of ${req.id} failed: ${errorMessage(err)}; the process runs on LazyFS as before (pid ${back.pid})`,
        { cause: err },
      );
    } catch (e) {
      return new UserError(
        `detach of ${req.id} failed: ${errorMessage(err)}; restoring it onto LazyFS failed too (${errorMessage(e)}): its images are kept in ${images}`,
        { cause: err },
      );
    }
  }
}
