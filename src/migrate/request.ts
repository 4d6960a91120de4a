/**
 * What `lazyfs migrate` is asked (MigrateRequest) and what it reports (MigrateResult with its
 * timeline of the freeze and its parts).
 */
import type { OriginCriu, SnapshotMode } from "../origin-host/index.js";
import type { Interruption } from "./interrupt.js";
import type { RestoreRequest, RestoreResult } from "./restore.js";
export interface MigrateRequest extends Omit<RestoreRequest, "imagesDir" | "checkpointStats"> {
  pid: number;
  /** CRIU on the origin; default: $LAZYFS_CRIU there, /opt/lazyfs/criu/bin/criu, criu. */
  originCriu?: string;
  /** Keep the dump directory on the origin after a successful migration. */
  keepOriginImages?: boolean;
  /** How long to wait for the first origin fetch to report it in the timeline (ms). */
  firstFetchWaitMs?: number;
  /**
   * Shell command run here once the process runs here, before its original on the origin is
   * ended (e.g. to move a service address); a non-zero exit fails the migration.
   */
  onRestored?: string;
  /**
   * Clone the files the target reads from the origin at the dump (reflink: btrfs, xfs) and
   * read the clones: `reflink` fails when a file cannot be cloned, `auto` goes on without.
   */
  originSnapshot?: SnapshotMode;
  /** How SIGINT/SIGTERM/SIGHUP are answered; default: one of its own for the call. */
  interruption?: Interruption;
}

export interface CriuUsed {
  path: string;
  version: string;
  /** Where it came from: found on the host, or pushed there by this migration. */
  source: string;
}

export interface Timeline {
  /** Dump start to the restored process running on the target. */
  freezeMs: number;
  dumpMs: number;
  transferMs: number;
  imageBytes: number;
  restoreMs: number;
  /** Parts of restoreMs: plan (stats, manifest), daemon start and mount, rewrite, CRIU. */
  planMs: number;
  mountMs: number;
  rewriteMs: number;
  criuRestoreMs: number;
  /** The `--on-restored` command, if any (inside the freeze of TCP peers, not of the process). */
  onRestoredMs: number;
  /** Finding CRIU on the origin, or pushing this host's there (before the freeze). */
  originCriuMs: number;
  /** Ending the original on the origin once the restore here succeeded. */
  endOriginMs: number;
  /** From the restore to the first byte LazyFS fetched from the origin, if any yet. */
  firstFetchMs: number | null;
  /** `--origin-snapshot`: cloning on the origin (inside transferMs), and files cloned. */
  snapshotMs: number;
  snapshotFiles: number;
}

export interface MigrateResult extends RestoreResult {
  timeline: Timeline;
  originImagesDir: string;
  criu: { origin: OriginCriu; target: CriuUsed };
  /**
   * `stopped`: the original was kept frozen until the restore here succeeded (the normal
   * case). `killed`: origin and target share one kernel and pid namespace, so the dump had
   * to end the original at once (a failed restore is then restored back from the images).
   */
  originKept: "stopped" | "killed";
}
