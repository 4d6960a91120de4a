/**
 * What runs on the origin host over SSH (it needs only sshd): a CRIU >= 4.2 there, pushed as
 * a bundle if needed (criu.ts), the dump directory (dump-dir.ts), the dump session that freezes
 * the tree and snapshots its files (dump-session.ts), and the frozen tree waiting for the
 * verdict (frozen-tree.ts).
 * May import: migration/ and below (origin, ssh, criu, fetch's policies, common).
 */
export { ensureOriginCriu, type OriginCriu } from "./criu.js";
export { criuErrorsOnOrigin, makeRemoteDumpDir, removeRemoteDir } from "./dump-dir.js";
export {
  type DumpSession,
  filesToSnapshot,
  openDumpSession,
  parseSnapshotMode,
  removeSnapshots,
  type SnapshotMode,
} from "./dump-session.js";
export {
  checkOriginPid,
  localPidSpace,
  OriginTree,
  originPidSpace,
  originTreePids,
  samePidSpace,
} from "./frozen-tree.js";
export { checkSysvShm } from "./sysv-shm.js";
