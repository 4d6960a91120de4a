/**
 * The LazyFS daemon of one migration (`lazyfs mount --id ID`): engine + FUSE mount + control
 * socket. It resumes from the cache when restarted, and releases the SSH connection to the
 * origin as soon as nothing the process may need is left there.
 */
import { readFile, rm } from "node:fs/promises";
import type { Server } from "node:net";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { Engine, type EngineStatus, type FileStatus } from "../fetch/index.js";
import { type LazyMount, mountLazyFs } from "../lazy/index.js";
import type { Origin } from "../origin/index.js";
import { openOrigin } from "./connect.js";
import { type ControlRequest, serveControl } from "./control.js";
import { findHolders, type Holder } from "./holders.js";
import { type Manifest, readManifest } from "./manifest.js";
import { migrationPaths } from "./state.js";

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
  total: EngineStatus["total"];
  prefetch: EngineStatus["prefetch"] & { rateBytesPerSec: number; etaMs: number | null };
  firstFetchAtMs: number | null;
  independentAtMs: number | null;
  perFile: FileStatus[];
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
  try {
    const r = JSON.parse(await readFile(file, "utf8")) as { pid?: number };
    return typeof r.pid === "number" ? r.pid : null;
  } catch {
    return null;
  }
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

export async function runDaemon(id: string): Promise<void> {
  const paths = migrationPaths(id);
  const manifest: Manifest = await readManifest(paths.manifest);
  const startedMs = Date.now();
  let firstFetchAtMs: number | null = null;
  let independentAtMs: number | null = null;
  let originState: OriginState = "connected";
  const sftp = openOrigin(manifest.origin, manifest.ssh);
  const origin = watchOrigin(sftp, () => {
    firstFetchAtMs ??= Date.now();
  });
  const engine = await Engine.open({
    cacheDir: manifest.cacheDir,
    origin,
    prefetch: manifest.serve.prefetch,
    allowChanged: manifest.serve.allowChanged,
    wholeFile: manifest.serve.wholeFile ?? false,
    scrub: manifest.serve.scrub,
    ...(manifest.serve.bwlimitBytesPerSec
      ? { bwlimitBytesPerSec: manifest.serve.bwlimitBytesPerSec }
      : {}),
  });
  for (const f of manifest.files) {
    if (!f.served || f.type !== "file") continue;
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
  let mount: LazyMount;
  try {
    mount = await mountLazyFs(manifest, engine);
  } catch (err) {
    await engine.close();
    await sftp.close();
    throw err;
  }
  log.info("serving", { id, mountpoint: manifest.mountpoint, files: manifest.files.length });

  const release = async () => {
    if (originState === "released") return;
    independentAtMs ??= Date.now();
    originState = "released";
    log.info("every needed byte is local; closing the connection to the origin", {
      origin: manifest.origin,
    });
    await sftp.close().catch(() => {});
  };
  engine.on("independent", () => void release());
  if (engine.status().independent) await release();

  // Fetch rate over the last few seconds, for the prefetch ETA.
  const samples: { t: number; bytes: number }[] = [];
  const sampler = setInterval(() => {
    samples.push({ t: Date.now(), bytes: engine.status().total.bytesFetched });
    while (samples.length > 6) samples.shift();
  }, 1000);
  sampler.unref();

  const status = async (): Promise<DaemonStatus> => {
    const st = engine.status();
    if (originState !== "released") {
      const probe = await Promise.race([
        sftp.stat("/").then(
          () => "connected" as const,
          () => "unreachable" as const,
        ),
        new Promise<"unreachable">((r) => setTimeout(() => r("unreachable"), 2000).unref()),
      ]);
      if ((originState as OriginState) !== "released") originState = probe;
    }
    const first = samples[0];
    const last = samples[samples.length - 1];
    const rate =
      first && last && last.t > first.t
        ? ((last.bytes - first.bytes) * 1000) / (last.t - first.t)
        : 0;
    const pid = await restoredPid(paths.restored);
    return {
      id,
      origin: manifest.origin,
      originState,
      mountpoint: manifest.mountpoint,
      daemonPid: process.pid,
      startedMs,
      restoredPid: pid,
      restoredAlive: alive(pid),
      files: manifest.files.filter((f) => f.served).length,
      total: st.total,
      prefetch: {
        ...st.prefetch,
        rateBytesPerSec: Math.round(rate),
        etaMs:
          rate > 0 && st.total.bytesOnOrigin > 0
            ? Math.round((st.total.bytesOnOrigin / rate) * 1000)
            : null,
      },
      firstFetchAtMs,
      independentAtMs,
      perFile: st.files,
    };
  };

  let server: Server | undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info("stopping", { id, reason });
      clearInterval(sampler);
      server?.close();
      await rm(paths.socket, { force: true });
      await mount
        .unmount()
        .catch((err) => log.warn("unmount failed", { error: errorMessage(err) }));
      await engine
        .close()
        .catch((err) => log.warn("engine close failed", { error: errorMessage(err) }));
      await sftp.close().catch(() => {});
    })();
    return stopping;
  };

  server = await serveControl(paths.socket, async (req: ControlRequest) => {
    if (req.op === "status") return status();
    if (req.op === "unmount") {
      const holders = await findHolders(manifest.mountpoint, [process.pid]);
      if (holders.length > 0 && !req.force) {
        throw new UserError(
          `${manifest.mountpoint} is still in use by ${holders.length} process(es): ${holdersText(holders)} (use --force to unmount anyway)`,
        );
      }
      // Reply first; the shutdown happens right after.
      setImmediate(
        () => void shutdown(req.force ? "forced unmount" : "unmount").then(() => process.exit(0)),
      );
      return { unmounted: manifest.mountpoint, holders: holders.length };
    }
    throw new UserError(`unknown control request ${JSON.stringify(req)}`);
  });
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => void shutdown(sig).then(() => process.exit(0)));
  }
  await new Promise<void>(() => {}); // serve until shutdown exits the process
}
