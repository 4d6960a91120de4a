/**
 * The LazyFS daemon of one migration (`lazyfs mount --id ID`): engine + FUSE mount + control
 * socket. It resumes from the cache when restarted, and releases the SSH connection to the
 * origin as soon as nothing the process may need is left there.
 *
 * `migrate` starts it before the dump with an empty plan, so that Node's start-up and the
 * mount stay out of the process's freeze; the `serve` request adds the plan's files later.
 *
 * `lazyfs mount --id` runs the supervisor (supervisor.ts), which mounts and runs this daemon as
 * its child on the handed-over /dev/fuse; a daemon restarted after a crash resumes the same
 * connection (same inode numbers from the journal, requests in flight resent by the kernel).
 */
import { rm, rmdir } from "node:fs/promises";
import type { Server } from "node:net";
import { openServingOrigin } from "../chain/index.js";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { Engine } from "../fetch/index.js";
import {
  type Adoption,
  adoptedDevice,
  claimSupervisorRecovery,
  type Handover,
  inheritedDevice,
  takeOver,
} from "../fuse/index.js";
import { LazyFileSystem, type LazyMount, mountLazyFs, serveLazyFs } from "../lazy/index.js";
import {
  bindsOfOthers,
  type Manifest,
  migrationPaths,
  readManifest,
  readRestored,
  removeMountPoints,
} from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import { removeSnapshots } from "../origin-host/index.js";
import { type ControlRequest, serveControl } from "./control.js";
import { alive } from "./health.js";
import { findHolders, holdersText } from "./holders.js";
import { Observer, watchOrigin } from "./observe.js";
import { checkpointIdentity, moveOrigin, outagePolicy } from "./origin-move.js";
import { RemoteFollower } from "./remote-follow.js";
import { receiveSecrets } from "./secrets.js";
import type { DaemonStatus, OriginState } from "./status.js";
import { replaceSupervisor, runSupervisor } from "./supervisor.js";
import { Twins } from "./twins.js";

const log = logger("daemon");

/** Whether the manifest holds a plan yet (migrate mounts before the dump with an empty one). */
function planned(m: Manifest): boolean {
  return m.files.length > 0 || m.lazyDirs.length > 0;
}

/** What a serving daemon holds. */
interface Serving {
  manifest: Manifest;
  sftp: SftpOrigin;
  engine: Engine;
  mount: LazyMount;
  follower: RemoteFollower;
}

/** Identical files the whole view serves are copied into the store up to this size each. */
const TWIN_FILL_MAX_BYTES = 64 * 1024 * 1024;
const FILL_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * The whole view serves the process's own executables and libraries (identical on the
 * target) through the mount: copied into the store now, from the target's copies, before
 * CRIU maps them, they are fully local, and the kernel serves them by passthrough, instead of
 * the restore faulting them in block by block through the daemon.
 */
async function fillFromTwins(engine: Engine, manifest: Manifest, removed: Set<string>) {
  const twins = manifest.files.filter(
    (f) =>
      f.served &&
      f.type === "file" &&
      f.policy === "local" &&
      f.size <= TWIN_FILL_MAX_BYTES &&
      !removed.has(f.targetPath),
  );
  await Promise.all(
    twins.map(async (f) => {
      try {
        for (let off = 0; off < f.size; off += FILL_CHUNK_BYTES) {
          await engine.read(f.targetPath, off, Math.min(FILL_CHUNK_BYTES, f.size - off));
        }
      } catch (err) {
        log.debug("could not copy a twin now; it is copied on reference", {
          path: f.targetPath,
          error: errorMessage(err),
        });
      }
    }),
  );
}

class Daemon {
  private readonly paths;
  private readonly startedMs = Date.now();
  private firstFetchAtMs: number | null = null;
  private independentAtMs: number | null = null;
  private releasedAtMs: number | null = null;
  private originState: OriginState = "connected";
  private serving?: Promise<Serving>;
  private server?: Server;
  private stopping?: Promise<void>;
  private readonly samples: { t: number; bytes: number }[] = [];
  private sampler?: NodeJS.Timeout;
  /** Set while releasing the origin waits for the cache to be made durable (a full disk). */
  private releaseRetry?: NodeJS.Timeout;
  /** Independent, but the whole view keeps the origin until detach (said once). */
  private keptForView = false;
  /** Identical copies on the target (the whole view). */
  private twins?: Twins;
  private readonly observer;
  /** Changes when this daemon starts a new supervisor in place of one that died. */
  private supervisorPid: number | null;

  constructor(
    readonly id: string,
    private readonly handover?: Handover,
  ) {
    this.paths = migrationPaths(id);
    this.observer = new Observer(this.paths);
    this.supervisorPid = handover?.supervisorPid ?? null;
  }

  /** The supervisor died (this daemon outlived it): a new one adopts the connection. */
  private replaceSupervisor(adopt: Omit<Adoption, "fd">): void {
    const h = this.handover;
    if (this.stopping || !h) return;
    this.observer.event("supervisor-replaced", { dead: this.supervisorPid });
    const pid = replaceSupervisor(this.id, h.fd, adopt, (livedMs) => {
      if (!claimSupervisorRecovery(this.paths.passthroughState, pid)) {
        // Its standby found this daemon dead (its main thread had exited) and took over.
        log.warn("the supervisor is gone and a standby took the connection over: exiting");
        process.exit(0);
      }
      // One that dies at once (it could not start) is tried again less eagerly.
      const t = setTimeout(() => this.replaceSupervisor(adopt), livedMs < 2000 ? 1000 : 0);
      t.unref();
    });
    this.supervisorPid = pid;
  }

  /** Reads the manifest, opens the engine and mounts; later calls add what the manifest added. */
  serve(): Promise<Serving> {
    const first = !this.serving;
    this.serving ??= this.doServe();
    return first ? this.serving : this.serving.then((s) => this.reload(s));
  }

  /** Hands the plan's files to the engine, except those the process has removed since. */
  private async addFiles(engine: Engine, manifest: Manifest, fs: LazyFileSystem) {
    const removed = fs.removedPlanned();
    for (const f of manifest.files) {
      if (!f.served || f.type !== "file" || removed.has(f.targetPath)) continue;
      await engine.addFile({
        id: f.targetPath,
        originPath: f.originPath,
        size: f.size,
        mtimeMs: f.mtimeMs,
        mode: f.mode,
        uid: f.uid,
        gid: f.gid,
        policy: f.policy,
        ...(f.policy === "local" ? { localPath: f.targetPath } : {}),
        ...checkpointIdentity(f),
      });
    }
    if (manifest.view === "whole") await fillFromTwins(engine, manifest, removed);
  }

  /** The plan arrived (migrate mounts before the dump): serve its files too. */
  private async reload(s: Serving): Promise<Serving> {
    const manifest = await readManifest(this.paths.manifest);
    await this.addFiles(s.engine, manifest, s.mount.fileSystem);
    s.mount.fileSystem.add(manifest);
    s.manifest = manifest;
    this.twins?.plan(manifest);
    s.follower.follow(manifest);
    void s.sftp.connect().catch(() => {});
    this.originState = "connected";
    this.independentAtMs = null;
    this.releasedAtMs = null;
    if (s.engine.status().independent) await this.release(s);
    log.info("plan loaded", { id: this.id, files: manifest.files.length });
    return s;
  }

  private async doServe(): Promise<Serving> {
    const manifest = await readManifest(this.paths.manifest);
    const sftp = openServingOrigin(manifest, outagePolicy(manifest));
    const origin = watchOrigin(sftp, () => {
      if (this.firstFetchAtMs !== null) return;
      this.firstFetchAtMs = Date.now();
      this.observer.event("first-origin-fetch", { origin: sftp.name });
    });
    const engine = await Engine.open({
      cacheDir: manifest.cacheDir,
      origin,
      prefetch: manifest.serve.prefetch,
      allowChanged: manifest.serve.allowChanged,
      wholeFile: manifest.serve.wholeFile ?? false,
      scrub: manifest.serve.scrub,
      ...(manifest.serve.blockSize ? { blockSize: manifest.serve.blockSize } : {}),
      ...(manifest.serve.bwlimitBytesPerSec
        ? { bwlimitBytesPerSec: manifest.serve.bwlimitBytesPerSec }
        : {}),
    });
    // A cache that already holds files: this daemon takes over from one that stopped or died.
    const resumed = engine.status().files.length > 0;
    let mount: LazyMount;
    try {
      const h = this.handover;
      this.twins = new Twins(manifest, sftp);
      const fs = new LazyFileSystem(manifest, engine, {
        cacheDir: manifest.cacheDir,
        policies: manifest.policies,
        generation: h?.resume ? h.restarts : 0,
        localTwin: this.twins.find,
      });
      await this.addFiles(engine, manifest, fs);
      await fs.dropOrphans(engine.status().files.map((f) => f.id));
      const served = await this.observer.serveAs(manifest, fs);
      mount = h
        ? await serveLazyFs(manifest, served, h, (adopt) => this.replaceSupervisor(adopt))
        : await mountLazyFs(manifest, served);
    } catch (err) {
      await engine.close();
      await sftp.close();
      throw err;
    }
    log.info("serving", {
      id: this.id,
      mountpoint: manifest.mountpoint,
      files: manifest.files.length,
      lazyDirs: manifest.lazyDirs.length,
    });
    const follower = new RemoteFollower(engine, manifest);
    follower.follow(manifest);
    const serving = { manifest, sftp, engine, mount, follower };
    this.observer.event("daemon-start", {
      pid: process.pid,
      mountpoint: manifest.mountpoint,
      resumed,
    });
    engine.on("refused", (f: { path: string; reason: string }) =>
      this.observer.event("refused-file", f),
    );
    await this.observer.startMetrics(manifest, () =>
      this.status().then((status) => ({ id: this.id, status })),
    );
    engine.on("independent", () => void this.release(serving));
    if (planned(manifest) && engine.status().independent) await this.release(serving);
    // Connect now so that the first fetch does not pay for the SSH handshake.
    if (planned(manifest)) void sftp.connect().catch(() => {});
    // Fetch rate over the last few seconds, for the prefetch ETA.
    this.sampler = setInterval(() => {
      this.samples.push({ t: Date.now(), bytes: engine.status().total.bytesFetched });
      while (this.samples.length > 6) this.samples.shift();
    }, 1000);
    this.sampler.unref();
    void mount.closed.then(() => {
      if (!this.stopping) {
        log.warn("the mount went away from outside; stopping", {
          mountpoint: manifest.mountpoint,
        });
        void this.shutdown("mount gone").then(() => process.exit(1));
      }
    });
    return serving;
  }

  private async release(s: Serving) {
    // An empty plan (mounted before the dump) needs nothing yet; keep the origin.
    if (this.originState === "released" || !planned(s.manifest)) return;
    if (this.independentAtMs === null) {
      this.independentAtMs = Date.now();
      this.observer.event("independent", {
        bytesFromOrigin: s.engine.status().total.bytesFromOrigin,
      });
    }
    // The rest of the whole view stays a fetch on reference until detach: the origin stays.
    if (s.manifest.view === "whole" && s.manifest.lazyDirs.some((d) => d.onReference)) {
      if (this.keptForView) return;
      this.keptForView = true;
      log.info(
        "the process's data and referenced files are local; the whole view keeps the origin until detach",
        { origin: s.manifest.origin },
      );
      return;
    }
    // Independence must survive a crash: make every block's state and every name durable
    // before letting go. A full cache disk may not allow that yet: the origin stays until it
    // does.
    try {
      await s.engine.fsyncAll();
      s.mount.fileSystem.tree.sync();
    } catch (err) {
      if (!this.releaseRetry) {
        log.warn("cannot make the cache durable; keeping the origin, trying again every 5 s", {
          error: errorMessage(err),
        });
      }
      this.releaseRetry = setTimeout(() => void this.release(s), 5000);
      this.releaseRetry.unref();
      return;
    }
    clearTimeout(this.releaseRetry);
    this.releaseRetry = undefined;
    if ((this.originState as OriginState) === "released") return;

    this.originState = "released";
    log.info("every needed byte is local; closing the connection to the origin", {
      origin: s.manifest.origin,
    });
    await removeSnapshots(s.sftp, s.manifest.snapshotDirs ?? []);
    await s.sftp.close().catch(() => {});
    this.releasedAtMs = Date.now();
    this.observer.event("origin-released", { origin: s.manifest.origin });
  }

  /** Answers at once: the origin's state comes from its connection, never from asking it. */
  private async status(): Promise<DaemonStatus> {
    if (!this.serving) throw new UserError(`migration ${this.id} is still starting`);
    const { manifest, engine, sftp } = await this.serving;
    const st = engine.status();
    // Never asks the origin: the connection's state is known here.
    const link = this.originState === "released" ? null : sftp.linkStatus();
    if (link) this.originState = link.state === "idle" ? "connecting" : link.state;
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const rate =
      first && last && last.t > first.t
        ? ((last.bytes - first.bytes) * 1000) / (last.t - first.t)
        : 0;
    const restored = await readRestored(this.paths.restored);
    const pid = typeof restored.pid === "number" ? restored.pid : null;
    return {
      id: this.id,
      origin: manifest.origin,
      originState: this.originState,
      mountpoint: manifest.mountpoint,
      daemonPid: process.pid,
      supervisorPid: this.supervisorPid,
      serverRestarts: this.handover?.restarts ?? 0,
      startedMs: this.startedMs,
      restoredPid: pid,
      ...(typeof restored.nsPid === "number" ? { restoredNsPid: restored.nsPid } : {}),
      restoredAlive: alive(pid),
      files: manifest.files.filter((f) => f.served).length,
      dirs: st.dirs,
      total: st.total,
      prefetch: {
        ...st.prefetch,
        rateBytesPerSec: Math.round(rate),
        etaMs:
          rate > 0 && st.total.bytesOnOrigin > 0
            ? Math.round((st.total.bytesOnOrigin / rate) * 1000)
            : null,
      },
      originLink: link,
      firstFetchAtMs: this.firstFetchAtMs,
      independentAtMs: this.independentAtMs,
      releasedAtMs: this.releasedAtMs,
      perFile: st.files,
      cacheDisk: engine.cacheSpace.status(),
      view: manifest.view ?? "dirs",
      identical: this.twins?.figures ?? { identicalFiles: 0, identicalBytes: 0, hashMismatches: 0 },
      ...this.observer.figures(st, sftp, this.originState),
    };
  }

  shutdown(reason: string, ended = false): Promise<void> {
    this.stopping ??= (async () => {
      log.info("stopping", { id: this.id, reason });
      clearInterval(this.sampler);
      this.server?.close();
      await rm(this.paths.socket, { force: true });
      const s = await this.serving?.catch(() => undefined);
      if (!s) return;
      s.follower.stop();
      await s.mount
        .unmount()
        .catch((err) => log.warn("unmount failed", { error: errorMessage(err) }));
      await rmdir(s.manifest.mountpoint).catch(() => {}); // only if empty: ours, not the user's
      // restore adds the mount points it created after the daemon read the manifest.
      const latest = await readManifest(this.paths.manifest).catch(() => s.manifest);
      await removeMountPoints(latest.createdDirs, await bindsOfOthers(this.id));
      await s.engine
        .close()
        .catch((err) => log.warn("engine close failed", { error: errorMessage(err) }));
      // The migration ends: its snapshots on the origin go (a restarted daemon keeps them).
      if (ended && this.originState !== "released") {
        await Promise.race([
          removeSnapshots(s.sftp, latest.snapshotDirs ?? []),
          new Promise((r) => setTimeout(r, 5000).unref()),
        ]);
      }
      await s.sftp.close().catch(() => {});
      await this.observer.close();
      this.observer.event("unmount", { reason });
    })();
    return this.stopping;
  }

  private async unmount(force: boolean) {
    if (!this.serving) {
      setImmediate(() => void this.shutdown("unmount before serving").then(() => process.exit(0)));
      return { unmounted: null, holders: 0, ...this.pids() };
    }
    const { manifest } = await this.serving;
    const { mountNs } = await readRestored(this.paths.restored);
    const holders = await findHolders(manifest.mountpoint, [process.pid], mountNs);
    if (holders.length > 0 && !force) {
      throw new UserError(
        `${manifest.mountpoint} is still in use by ${holders.length} process(es): ${holdersText(holders)} (use --force to unmount anyway)`,
      );
    }
    // Reply first (with the access log written out); the shutdown happens right after.
    await this.observer.flush();
    setImmediate(
      () =>
        void this.shutdown(force ? "forced unmount" : "unmount", true).then(() => process.exit(0)),
    );
    return { unmounted: manifest.mountpoint, holders: holders.length, ...this.pids() };
  }

  private pids() {
    return { daemonPid: process.pid, supervisorPid: this.supervisorPid };
  }

  async listen(): Promise<void> {
    this.server = await serveControl(this.paths.socket, async (req: ControlRequest) => {
      if (req.op === "status") return this.status();
      if (req.op === "serve") {
        const s = await this.serve();
        return { mountpoint: s.manifest.mountpoint };
      }
      if (req.op === "unmount") return this.unmount(req.force);
      if (req.op === "origin") {
        const s = await this.serve();
        return moveOrigin(
          this.paths.manifest,
          s,
          req.url,
          req.acceptHostKey,
          () => this.originState === "released",
        );
      }
      throw new UserError(`unknown control request ${JSON.stringify(req)}`);
    });
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.once(sig, () => void this.shutdown(sig).then(() => process.exit(0)));
    }
  }
}

/**
 * Runs the daemon of migration `id` (mounted at once) until unmounted or signalled: as the
 * supervisor's child when handed the device, else as the supervisor (which starts the child).
 */
export async function runDaemon(id: string): Promise<void> {
  // The supervisor takes the passphrases first and hands them to every server it starts.
  await receiveSecrets();
  const adoption = adoptedDevice();
  if (adoption) await runSupervisor(id, adoption);
  const handed = inheritedDevice();
  if (!handed) await runSupervisor(id);
  // A standby (started in advance by the supervisor) waits here for a failover.
  const handover = handed && (await takeOver(handed));
  const daemon = new Daemon(id, handover);
  await daemon.serve();
  await daemon.listen();
  await new Promise<void>(() => {}); // serve until shutdown exits the process
}
