/**
 * CRIU cannot dump a task that maps SysV shared memory of the host's IPC namespace (it dumps
 * IPC objects only as part of an IPC namespace of the tree's own): it fails at the dump with
 * `Task ... with SysVIPC shmem map ... doesn't live in IPC ns`. PostgreSQL on a plain host is
 * the usual case. Found before the freeze, so that the process is never stopped for nothing.
 */
import { UserError } from "../common/errors.js";
import type { SftpOrigin } from "../origin/index.js";
import { originTreePids } from "./frozen-tree.js";

/** Refuses, in one line, a tree of which a task maps SysV shared memory of the host's IPC ns. */
export async function checkSysvShm(origin: SftpOrigin, rootPid: number): Promise<void> {
  const pids = await originTreePids(origin, rootPid);
  // A task in an IPC namespace of its own (a container) is dumpable with it: only the
  // origin's init's namespace counts. SysV segments show in maps as /SYSV<key>.
  const r = await origin.exec(
    [
      "host=$(readlink /proc/1/ns/ipc)",
      `for p in ${pids.join(" ")}; do`,
      '  [ "$(readlink /proc/$p/ns/ipc 2>/dev/null)" = "$host" ] || continue',
      "  grep -q ' /SYSV[0-9a-f]\\{8\\}' /proc/$p/maps 2>/dev/null && echo \"$p $(cat /proc/$p/comm)\"",
      "done",
      "true",
    ].join("\n"),
  );
  const found = r.stdout.split("\n").filter((l) => l.length > 0);
  if (found.length === 0) return;
  const [pid, ...comm] = found[0]!.split(" ");
  const more = found.length > 1 ? ` (and ${found.length - 1} more of its tree)` : "";
  throw new UserError(
    `${origin.name}: pid ${pid} (${comm.join(" ")}) maps SysV shared memory of the host's IPC namespace${more}; CRIU cannot dump that: run the program in an IPC namespace of its own (unshare --ipc, a container) to migrate it; the process was not stopped`,
  );
}
