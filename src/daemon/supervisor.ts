/**
 * The supervisor of one migration (`lazyfs mount --id ID`): it mounts the LazyFS tree, keeps
 * /dev/fuse for the migration's whole life and runs the daemon (server.ts, the same command
 * with the device handed over) as the child that serves it; when that child dies, a new one
 * takes the same connection over (fuse/supervisor.ts). Nothing else: the daemon keeps the
 * control socket, the cache and the origin. Its pid is in `<state>/<id>/supervisor.pid` while
 * it runs.
 */
import { rm } from "node:fs/promises";
import { writeFileAtomic } from "../common/private-files.js";
import { Supervisor } from "../fuse/index.js";
import { lazyMountOptions, withMountPoint } from "../lazy/index.js";
import { migrationPaths, readManifest } from "../migration/index.js";
import { secretsPayload } from "./secrets.js";
import { CLI_MAIN } from "./start.js";


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
  await writeFileAtomic(paths.supervisorPid, `${process.pid}\n`);
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => void sup.stop());
  const end = await sup.done;
  await rm(paths.supervisorPid, { force: true });
  // "failed": the server printed why; "unmounted": its own exit code.
  process.exit(end.kind === "unmounted" ? end.code : 1);
}
