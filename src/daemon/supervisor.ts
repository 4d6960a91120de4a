/**
 * The supervisor of one migration (`lazyfs mount --id ID`): it mounts the LazyFS tree, keeps
 * /dev/fuse for the migration's whole life and runs the daemon (server.ts, the same command
 * with the device handed over) as the child that serves it; when that child dies, a new one
 * takes the same connection over (fuse/supervisor.ts). Nothing else: the daemon keeps the
 * control socket, the cache and the origin. Its pid is in `<state>/<id>/supervisor.pid` while
 * it runs.
 */
import { rm } from "node:fs/promises";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { writeFileAtomic } from "../common/private-files.js";
import { Supervisor } from "../fuse/index.js";
import { lazyMountOptions, withMountPoint } from "../lazy/index.js";
import { migrationPaths, readManifest } from "../migration/index.js";
import { secretsPayload } from "./secrets.js";
import { CLI_MAIN } from "./start.js";

const log = logger("supervisor");

/** Supervises migration `id` until its mount is gone; exits the process with the result. */
export async function runSupervisor(id: string): Promise<never> {
  const paths = migrationPaths(id);
  const manifest = await readManifest(paths.manifest);
  const sup = await withMountPoint(manifest.mountpoint, () =>
    Supervisor.start({
      mountpoint: manifest.mountpoint,
      mount: lazyMountOptions(manifest),
      command: process.execPath,
      args: [...process.execArgv, CLI_MAIN, "mount", "--id", id],
      // Every server, restarted ones too, gets the passphrases typed for the migration.
      childInput: secretsPayload,
      stateFile: paths.passthroughState,
    }),
  );
  // Not worth dying for (the cache's disk, where this goes, may be full): status then shows
  // the pid its daemon reports.
  await writeFileAtomic(paths.supervisorPid, `${process.pid}\n`).catch((err: unknown) =>
    log.warn("cannot record the supervisor's pid", { error: errorMessage(err) }),
  );
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => void sup.stop());
  const end = await sup.done;
  await rm(paths.supervisorPid, { force: true });
  if (end.kind === "gave-up") log.error("not serving any more", { id, reason: end.reason });
  // "failed": the server printed why; "unmounted": its own exit code.
  process.exit(end.kind === "unmounted" ? end.code : 1);
}
