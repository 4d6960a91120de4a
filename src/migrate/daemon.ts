/**
 * The LazyFS daemon of one migration (`lazyfs mount --id ID`): engine + FUSE mount + control
 * socket. It resumes from the cache when restarted, and releases the SSH connection to the
 * origin as soon as nothing the process may need is left there.
 *
 * `migrate` starts it before the dump with an empty plan, so that Node's start-up and the
 * mount stay out of the process's freeze; the `serve` request adds the plan's files later.
 */
import { rm, rmdir } from "node:fs/promises";
import type { Server } from "node:net";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { Engine, type EngineStatus, type FileStatus } from "../fetch/index.js";
import { LazyFileSystem, type LazyMount, mountLazyFs } from "../lazy/index.js";
import type { Origin, SftpOrigin } from "../origin/index.js";
import { openServingOrigin } from "./chain-origin.js";
import { type ControlRequest, serveControl } from "./control.js";
import { RemoteFollower } from "./follow.js";
import { findHolders, type Holder } from "./holders.js";
import { type Manifest, readManifest } from "./manifest.js";
import { bindsOfOthers, removeMountPoints } from "./namespace.js";
import { migrationPaths, readRestored } from "./state.js";

const log = logger("daemon");

export type OriginState = "connected" | "unreachable" | "released";

export interface DaemonStatus {
  id: string;
  origin: string;
  originState: OriginState;
  mountpoint: string;
  daemonPid: number;
  startedMs: number;
  restoredPid: number | null;
  restoredAlive: boolean;
  files: number;
  /** Lazy directories: listed on the origin (crawled) or not yet, files found not yet fetched. */
  dirs: EngineStatus["dirs"];
  total: EngineStatus["total"];
  prefetch: EngineStatus["prefetch"] & { rateBytesPerSec: number; etaMs: number | null };
  firstFetchAtMs: number | null;
  independentAtMs: number | null;
  /** When the connection to the origin was closed after independence (its goodbye sent). */
  releasedAtMs: number | null;
  perFile: FileStatus[];
}

/** Whether the manifest holds a plan yet (migrate mounts before the dump with an empty one). */
function planned(m: Manifest): boolean {
  return m.files.length > 0 || m.lazyDirs.length > 0;
}

/** Wraps the origin to learn when it was first read (the timeline's "first origin fetch"). */
function watchOrigin(origin: Origin, onRead: () => void): Origin {
  return new Proxy(origin, {
    get(target, prop, receiver) {
      if (prop === "read") {
        return (path: string, offset: number, length: number) => {
          onRead();
          return target.read(path, offset, length);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

async function restoredPid(file: string): Promise<number | null> {
  const r = await readRestored(file);
  return typeof r.pid === "number" ? r.pid : null;
}

function alive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function holdersText(holders: Holder[]): string {
  return holders
    .slice(0, 3)
    .map((h) => `pid ${h.pid} (${h.comm}): ${h.uses.slice(0, 2).join(", ")}`)
    .join("; ");
}

/** What a serving daemon holds. */
interface Serving {
  manifest: Manifest;
  sftp: SftpOrigin;
  engine: Engine;
  mount: LazyMount;
  follower: RemoteFollower;
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

  constructor(readonly id: string) {
    this.paths = migrationPaths(id);
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
      });
    }
  }

  /** The plan arrived (migrate mounts before the dump): serve its files too. */
  private async reload(s: Serving): Promise<Serving> {
    const manifest = await readManifest(this.paths.manifest);
    await this.addFiles(s.engine, manifest, s.mount.fileSystem);
    s.mount.fileSystem.add(manifest);
    s.manifest = manifest;
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
    const sftp = openServingOrigin(manifest);
    const origin = watchOrigin(sftp, () => {
      this.firstFetchAtMs ??= Date.now();
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
    let mount: LazyMount;
    try {
      const fs = new LazyFileSystem(manifest, engine, {
        cacheDir: manifest.cacheDir,
        policies: manifest.policies,
      });
      await this.addFiles(engine, manifest, fs);
      await fs.dropOrphans(engine.status().files.map((f) => f.id));
      mount = await mountLazyFs(manifest, fs);
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
    this.independentAtMs ??= Date.now();
    // Independence must survive a crash: make every block's state and every name durable
    // before letting go.
    await s.engine.fsyncAll();
    s.mount.fileSystem.tree.sync();
    if ((this.originState as OriginState) === "released") return;
    this.originState = "released";
    log.info("every needed byte is local; closing the connection to the origin", {
      origin: s.manifest.origin,
    });
    await s.sftp.close().catch(() => {});
    this.releasedAtMs = Date.now();
  }

  private async status(): Promise<DaemonStatus> {
    if (!this.serving) throw new UserError(`migration ${this.id} is still starting`);
    const { manifest, engine, sftp } = await this.serving;
    const st = engine.status();
    if (this.originState !== "released") {
      const probe = await Promise.race([
        sftp.stat("/").then(
          () => "connected" as const,
          () => "unreachable" as const,
        ),
        new Promise<"unreachable">((r) => setTimeout(() => r("unreachable"), 2000).unref()),
      ]);
      if ((this.originState as OriginState) !== "released") this.originState = probe;
    }
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const rate =
      first && last && last.t > first.t
        ? ((last.bytes - first.bytes) * 1000) / (last.t - first.t)
        : 0;
    const pid = await restoredPid(this.paths.restored);
    return {
      id: this.id,
      origin: manifest.origin,
      originState: this.originState,
      mountpoint: manifest.mountpoint,
      daemonPid: process.pid,
      startedMs: this.startedMs,
      restoredPid: pid,
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
      firstFetchAtMs: this.firstFetchAtMs,
      independentAtMs: this.independentAtMs,
      releasedAtMs: this.releasedAtMs,
      perFile: st.files,
    };
  }

  shutdown(reason: string): Promise<void> {
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
      await s.sftp.close().catch(() => {});
    })();
    return this.stopping;
  }

  private async unmount(force: boolean) {
    if (!this.serving) {
      setImmediate(() => void this.shutdown("unmount before serving").then(() => process.exit(0)));
      return { unmounted: null, holders: 0, daemonPid: process.pid };
    }
    const { manifest } = await this.serving;
    const { mountNs } = await readRestored(this.paths.restored);
    const holders = await findHolders(manifest.mountpoint, [process.pid], mountNs);
    if (holders.length > 0 && !force) {
      throw new UserError(
        `${manifest.mountpoint} is still in use by ${holders.length} process(es): ${holdersText(holders)} (use --force to unmount anyway)`,
      );
    }
    // Reply first; the shutdown happens right after.
    setImmediate(
      () => void this.shutdown(force ? "forced unmount" : "unmount").then(() => process.exit(0)),
    );
    return { unmounted: manifest.mountpoint, holders: holders.length, daemonPid: process.pid };
  }

  async listen(): Promise<void> {
    this.server = await serveControl(this.paths.socket, async (req: ControlRequest) => {
      if (req.op === "status") return this.status();
      if (req.op === "serve") {
        const s = await this.serve();
        return { mountpoint: s.manifest.mountpoint };
      }
      if (req.op === "unmount") return this.unmount(req.force);
      throw new UserError(`unknown control request ${JSON.stringify(req)}`);
    });
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.once(sig, () => void this.shutdown(sig).then(() => process.exit(0)));
    }
  }
}

/** Runs the daemon of migration `id` (mounted at once) until unmounted or signalled. */
export async function runDaemon(id: string): Promise<void> {
  const daemon = new Daemon(id);
  await daemon.serve();
  await daemon.listen();
  await new Promise<void>(() => {}); // serve until shutdown exits the process
}
