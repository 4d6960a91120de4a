/**
 * Whether a migration is really served, for `lazyfs status`: the daemon answers on its control
 * socket, its supervisor lives, the mount and the restored process's own view answer a
 * request (each probed in a child process with a timeout: a dead or stuck FUSE connection
 * never hangs status). When something does not, one reason and the command that repairs it.
 */
import { deadConnection, type Probe, probePath } from "../common/probe.js";
// The files themselves, not migration/index.js: status loads only what it uses.
import { readManifest } from "../migration/manifest.js";
import { mountNamespaceOf, probeView } from "../migration/namespace.js";
import { migrationPaths, readRestored } from "../migration/state.js";
import type { DaemonStatus } from "./status.js";
import { readSupervisorRecord } from "./supervisor-record.js";

export interface Health {
  /**
   * ok: served; broken: the process or its files are not served as they must be; stopped: no
   * daemon runs and no restored process needs one.
   */
  state: "ok" | "broken" | "stopped";
  /** What is wrong, when not ok. */
  reason?: string;
  /** What to run about it. */
  run?: string;
  /** One line: `ok`, `broken: <reason>; run <run>`, `stopped; run <run>`. */
  text: string;
}

/** Whether process `pid` exists (a zombie too). */
export function alive(pid: number | null | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function broken(reason: string, run: string): Health {
  return { state: "broken", reason, run, text: `broken: ${reason}; run ${run}` };
}

const seconds = (ms: number) => `${Math.max(0, Math.round(ms / 100) / 10)} s`;

/** The health of migration `id`, given what its daemon answered (`status`), if it did. */
export async function checkHealth(id: string, status?: DaemonStatus): Promise<Health> {
  const paths = migrationPaths(id);
  const manifest = await readManifest(paths.manifest).catch(() => undefined);
  // Nothing is served from a directory without a manifest; no command to offer (not even
  // --purge: the directory may hold something else).
  if (!manifest) {
    const reason = "no readable manifest";
    return { state: "stopped", reason, text: `stopped: ${reason}` };
  }
  const restored = await readRestored(paths.restored);
  const pid = restored.pid;
  // The restored process, and not a later one with its pid: same mount namespace.
  const processLives =
    !!pid && !!restored.mountNs && (await mountNamespaceOf(pid)) === restored.mountNs;
  const remount = `lazyfs mount --id ${id} --background`;
  const fresh = `lazyfs unmount ${id} --force && ${remount}`;
  if (!status) {
    const sup = await readSupervisorRecord(id);
    if (sup && alive(sup.pid)) {
      if (sup.retryAtMs && !sup.servingPid) {
        return broken(
          `the daemon died ${sup.quickFailures} time(s) in a row at start (last: ${sup.lastExit}); the supervisor tries again in ${seconds(sup.retryAtMs - Date.now())}`,
          `lazyfs status ${id} again, and read ${paths.log}`,
        );
      }
      return broken(
        `the daemon does not answer (supervisor ${sup.pid} lives)`,
        `lazyfs status ${id} again`,
      );
    }
    if (!processLives) return { state: "stopped", run: remount, text: `stopped; run ${remount}` };
    return broken(`the daemon and its supervisor are gone, process ${pid} is not served`, remount);
  }
  if (status.supervisorPid !== null && !alive(status.supervisorPid)) {
    return broken(
      `supervisor ${status.supervisorPid} is gone: a daemon crash now would not be survived`,
      `lazyfs status ${id} again (the daemon starts a new supervisor)`,
    );
  }
  // A dead connection needs a new one; a slow answer may pass (the daemon's log says more).
  const remedy = (p: Probe) =>
    deadConnection(p) ? fresh : `lazyfs status ${id} again, and read ${paths.log}`;
  const mount = await probePath(manifest.mountpoint);
  if (!mount.ok) {
    return broken(
      `the mount ${manifest.mountpoint} does not answer (${mount.reason})`,
      remedy(mount),
    );
  }
  if (processLives && pid) {
    const view = await probeView(manifest, pid);
    if (!view.ok) {
      const reason = `process ${pid}'s own view of its files does not answer (${view.reason})`;
      return broken(reason, remedy(view));
    }
  }
  return { state: "ok", text: "ok" };
}
