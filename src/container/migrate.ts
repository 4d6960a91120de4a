import { execFile } from "node:child_process";
import { mkdir, open } from "node:fs/promises";
import { join, posix } from "node:path";
import { promisify } from "node:util";
import { errorMessage, UserError } from "../common/errors.js";
import { shq } from "../common/shell.js";
import { startDaemon, stopDaemon } from "../daemon/index.js";
import { planMigration } from "../migrate/index.js";
import {
  checkDestination,
  discardMigration,
  makeStateDir,
  migrationPaths,
  newMigrationId,
  openOrigin,
  type ServeOptions,
  type SshOptions,
  writeManifest,
} from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import { ensureOriginCriu } from "../origin-host/index.js";
import { packArchive, rewriteSpecMounts, unpackArchive } from "./archive.js";
import { parseContainerInspect, parseStoreInfo } from "./inspect.js";
import { podmanCommand } from "./podman.js";

const run = promisify(execFile);
/** Bytes per SFTP read while pulling the archive. */
const PULL_CHUNK = 8 << 20;

export interface ContainerMigrateRequest {
  /** The container's name or id on the origin. */
  container: string;
  from: string;
  ssh: SshOptions;
  serve: ServeOptions;
  mountpoint?: string;
  cacheDir?: string;
  originCriu?: string;
}

export interface ContainerMigrateResult {
  id: string;
  containerId: string;
  name: string;
  imageId: string;
  mountpoint: string;
  /** The checkpoint archive pulled before the restore (CRIU images, config, rootfs diff). */
  archiveBytes: number;
  checkpointMs: number;
  pullMs: number;
  restoreMs: number;
  /** The podman storage option under which the target sees the origin's image store. */
  storageOpt: string;
}

async function mustExec(origin: SftpOrigin, command: string, what: string): Promise<string> {
  const r = await origin.exec(command);
  if (r.code !== 0) {
    const why = r.stderr.trim().split("\n").pop() || `exit code ${r.code}`;
    throw new UserError(`${origin.name}: ${what} failed: ${why}`);
  }
  return r.stdout;
}

/** Copies the origin's file to `local` with large SFTP reads; resolves with the bytes. */
async function pullFile(origin: SftpOrigin, remote: string, local: string): Promise<number> {
  const { size } = await origin.stat(remote);
  const fh = await open(local, "wx", 0o600);
  try {
    for (let off = 0; off < size; off += PULL_CHUNK) {
      const data = await origin.read(remote, off, Math.min(PULL_CHUNK, size - off));
      await fh.write(data, 0, data.length, off);
    }
  } finally {
    await fh.close();
  }
  return size;
}

/** Runs podman here (the target) with LazyFS's CRIU; a failure is a UserError with its last line. */
async function podmanHere(args: string[], what: string): Promise<string> {
  try {
    const { stdout } = await run("sh", ["-c", podmanCommand(args)], { maxBuffer: 64 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string };
    const why = e.stderr?.trim().split("\n").pop() || errorMessage(err);
    throw new UserError(`${what} failed here: ${why}`);
  }
}

/**
 * Migrates a running podman container from the origin to here: checkpoint there (the archive
 * without volumes), serve the origin's image store and the container's volumes lazily here,
 * restore with podman here, remove the origin's container. Any failure before the restore
 * here succeeded restores the container on the origin again and says so.
 */
export async function migrateContainer(
  req: ContainerMigrateRequest,
): Promise<ContainerMigrateResult> {
  checkDestination(req.from);
  const origin = openOrigin(req.from, req.ssh);
  const id = newMigrationId();
  const paths = migrationPaths(id);
  let remoteDir: string | undefined;
  let checkpointed: string | undefined;
  let daemonStarted = false;
  try {
    await origin.connect();
    const info = parseContainerInspect(
      origin.name,
      req.container,
      await mustExec(
        origin,
        podmanCommand(["container", "inspect", req.container]),
        `podman container inspect ${req.container}`,
      ),
    );
    if (!info.running) throw new UserError(`${origin.name}: container ${info.name} is not running`);
    const { graphRoot } = parseStoreInfo(
      origin.name,
      await mustExec(origin, podmanCommand(["info", "--format", "json"]), "podman info"),
    );
    const criu = await ensureOriginCriu(origin, req.originCriu ? { explicit: req.originCriu } : {});
    // A private PATH directory whose `criu` is the CRIU just found or pushed, for podman there.
    remoteDir = (
      await mustExec(
        origin,
        `d=$(mktemp -d /tmp/lazyfs-container.XXXXXX) && printf '#!/bin/sh\\nexec %s "$@"\\n' ${shq(shq(criu.path))} >"$d/criu" && chmod 755 "$d/criu" && echo "$d"`,
        "making a working directory",
      )
    ).trim();
    const remoteArchive = `${remoteDir}/checkpoint.tar`;
    let t = Date.now();
    await mustExec(
      origin,
      podmanCommand(
        [
          "container",
          "checkpoint",
          "--export",
          remoteArchive,
          "--compress",
          "none",
          "--ignore-volumes",
          "--keep",
          info.id,
        ],
        remoteDir,
      ),
      `podman container checkpoint ${info.name}`,
    );
    checkpointed = remoteDir;
    const checkpointMs = Date.now() - t;

    t = Date.now();
    await makeStateDir(paths);
    await mkdir(paths.images, { recursive: true, mode: 0o700 });
    const pulled = join(paths.dir, "checkpoint.tar");
    const archiveBytes = await pullFile(origin, remoteArchive, pulled);
    const pullMs = Date.now() - t;

    const mountpoint = req.mountpoint ?? paths.defaultMountpoint;
    const sources = [...new Set(info.mounts.map((m) => m.source))];
    const manifest = await planMigration({
      id,
      // A container's files are its image layers and volumes, not the files its CRIU images
      // name (those are paths inside the container): the plan holds only lazy directories.
      dump: { dir: paths.images, imgVersion: 0, tasks: [], files: [] },
      originUrl: req.from,
      statOrigin: (p) => origin.stat(p),
      mtimePrecisionMs: origin.mtimePrecisionMs,
      mountpoint,
      cacheDir: req.cacheDir ?? paths.cache,
      imagesDir: paths.images,
      policies: [],
      maps: [],
      ssh: req.ssh,
      serve: req.serve,
      lazyDirPaths: [graphRoot, ...sources.filter((s) => !s.startsWith(`${graphRoot}/`))],
    });
    await writeManifest(paths.manifest, manifest);
    await startDaemon(id);
    daemonStarted = true;

    await unpackArchive(pulled, paths.images);
    await rewriteSpecMounts(paths.images, mountpoint, sources);
    const restoreArchive = join(paths.dir, "restore.tar");
    await packArchive(paths.images, restoreArchive);
    const storageOpt = `overlay.imagestore=${posix.join(mountpoint, graphRoot)}`;
    t = Date.now();
    await podmanHere(
      [
        "--storage-opt",
        storageOpt,
        "container",
        "restore",
        "--import",
        restoreArchive,
        "--ignore-volumes",
      ],
      `podman container restore of ${info.name}`,
    );
    const restoreMs = Date.now() - t;
    checkpointed = undefined;
    // The container runs here: the origin's stopped copy goes (its image stays: it is served).
    await mustExec(
      origin,
      podmanCommand(["rm", "-f", info.id]),
      `podman rm ${info.name} (it runs here now; remove it there by hand)`,
    );
    await origin.exec(`rm -rf ${shq(remoteDir)}`).catch(() => {});
    return {
      id,
      containerId: info.id,
      name: info.name,
      imageId: info.imageId,
      mountpoint,
      archiveBytes,
      checkpointMs,
      pullMs,
      restoreMs,
      storageOpt,
    };
  } catch (err) {
    if (daemonStarted) await stopDaemon(paths.socket).catch(() => {});
    await discardMigration(id, undefined).catch(() => {});
    if (checkpointed) {
      const back = await restoreOnOrigin(origin, req.container, checkpointed);
      throw new UserError(`${errorMessage(err)}; ${back}`);
    }
    if (remoteDir) await origin.exec(`rm -rf ${shq(remoteDir)}`).catch(() => {});
    throw err;
  } finally {
    await origin.close();
  }
}

/** Restores the checkpointed container on the origin again; says in words how that went. */
async function restoreOnOrigin(origin: SftpOrigin, ref: string, dir: string): Promise<string> {
  const r = await origin
    .exec(podmanCommand(["container", "restore", "--keep", ref], dir))
    .catch((e: unknown) => ({ code: -1, stdout: "", stderr: errorMessage(e) }));
  if (r.code === 0) {
    await origin.exec(`rm -rf ${shq(dir)}`).catch(() => {});
    return `the container runs on ${origin.name} again`;
  }
  const why = r.stderr.trim().split("\n").pop() || `exit code ${r.code}`;
  return `restoring it on ${origin.name} failed too (${why}): its checkpoint is in ${dir} there`;
}
