/**
 * The supervisor of one migration (`lazyfs mount --id ID`): it mounts the LazyFS tree, keeps
 * /dev/fuse for the migration's whole life and runs the daemon (server.ts, the same command
 * with the device handed over) as the child that serves it; when that child dies, a new one
 * takes the same connection over (fuse/supervisor.ts). When the supervisor dies instead, the
 * daemon starts a new one that adopts the connection (`adoption`). Nothing else: the daemon
 * keeps the control socket, the cache and the origin. Its pid is in
 * `<state>/<id>/supervisor.pid` while it runs, what it does in `supervisor.json`.
 *
 * A supervisor that mounts afresh while the restored process lives (both processes died, the
 * old connection with them) binds the new connection into the process's own view too.
 */
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { writeFileAtomic } from "../common/private-files.js";
import {
  type Adoption,
  adoptionEnv,
  deviceMountArgs,
  Supervisor,
  type SupervisorOptions,
  type SupervisorState,
} from "../fuse/index.js";
import { lazyMountOptions, withMountPoint } from "../lazy/index.js";
import {
  type Manifest,
  migrationPaths,
  readManifest,
  readRestored,
  reattachView,
} from "../migration/index.js";
import { secretsForChild, secretsPayload } from "./secrets.js";
import { CLI_MAIN } from "./start.js";
import type { SupervisorRecord } from "./supervisor-record.js";

const log = logger("supervisor");

/** Binds the new connection into the restored process's view if that one is dead. */
async function reattach(id: string, manifest: Manifest, device: number): Promise<void> {
  const restored = await readRestored(migrationPaths(id).restored);
  const opts = lazyMountOptions(manifest);
  try {
    const done = await reattachView(manifest, restored, device, (t) => deviceMountArgs(t, opts));
    if (done === "reattached") log.warn("the process's view was dead: reattached", { id });
    else log.info("the process's view needs nothing", { id, why: done });
  } catch (err) {
    log.error("cannot reattach the process's view", { id, error: errorMessage(err) });
  }
}

/**
 * In the daemon, when its supervisor died: starts a new supervisor (detached, logging where
 * this one logs) that adopts the connection, the device handed over as its fd 3; `onExit`
 * when that one ends too. Returns its pid.
 */
export function replaceSupervisor(
  id: string,
  device: number,
  adopt: Omit<Adoption, "fd">,
  onExit: (livedMs: number) => void,
): number {
  const secrets = secretsForChild();
  const child = spawn(process.execPath, [...process.execArgv, CLI_MAIN, "mount", "--id", id], {
    detached: true,
    stdio: [secrets.stdin, "inherit", "inherit", device],
    env: { ...adoptionEnv({ ...adopt, fd: 3 }, process.env), ...secrets.env },
  });
  secrets.send(child.stdin);
  const started = Date.now();
  child.on("error", (e) => log.error("cannot start a new supervisor", { error: errorMessage(e) }));
  child.on("exit", () => onExit(Date.now() - started));
  child.unref();
  log.warn("the supervisor died; started a new one to adopt the connection", {
    id,
    pid: child.pid,
  });
  return child.pid ?? 0;
}

/**
 * Supervises migration `id` (mounting it, or adopting the connection of `adoption`) until its
 * mount is gone; exits the process with the result.
 */
export async function runSupervisor(id: string, adoption?: Adoption): Promise<never> {
  const paths = migrationPaths(id);
  const manifest = await readManifest(paths.manifest);
  let writes = Promise.resolve();
  let reattached = !!adoption;
  let sup: Supervisor | undefined;
  const onState = (state: SupervisorState) => {
    const record: SupervisorRecord = { pid: process.pid, ...state };
    writes = writes.then(() =>
      writeFileAtomic(paths.supervisorState, `${JSON.stringify(record)}\n`).catch(() => {}),
    );
    if (!reattached && sup && state.servingPid) {
      reattached = true;
      void reattach(id, manifest, sup.device);
    }
  };
  const opts: SupervisorOptions = {
    mountpoint: manifest.mountpoint,
    mount: lazyMountOptions(manifest),
    command: process.execPath,
    args: [...process.execArgv, CLI_MAIN, "mount", "--id", id],
    // Every server, restarted ones too, gets the passphrases typed for the migration.
    childInput: secretsPayload,
    stateFile: paths.passthroughState,
    onState,
  };
  sup = adoption
    ? Supervisor.adopt(opts, adoption)
    : await withMountPoint(manifest.mountpoint, () => Supervisor.start(opts));
  // Not worth dying for (the cache's disk, where this goes, may be full): status then shows
  // the pid its daemon reports.
  await writeFileAtomic(paths.supervisorPid, `${process.pid}\n`).catch((err: unknown) =>
    log.warn("cannot record the supervisor's pid", { error: errorMessage(err) }),
  );
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => void sup.stop());
  const end = await sup.done;
  await writes;
  await rm(paths.supervisorPid, { force: true });
  await rm(paths.supervisorState, { force: true });
  // "failed": the server printed why; "unmounted": its own exit code.
  process.exit(end.kind === "unmounted" ? end.code : 1);
}
