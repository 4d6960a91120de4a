/**
 * What a migration's daemon answers to `{op: "status"}` on its control socket: the figures
 * `lazyfs status`, metrics and detach read. Types only, so that every reader depends on this
 * file and not on the daemon.
 */
import type { EngineStatus, FileStatus } from "../fetch/index.js";
import type { AccessLogFigures } from "../lazy/index.js";
import type { LinkState, LinkStatus } from "../origin/index.js";
import type { CacheDiskStatus } from "../store/index.js";
import type { OriginFigures } from "./origin-figures.js";
/** `connecting`/`idle`: not connected yet, nothing lost; see LinkStatus for the details. */
export type OriginState = LinkState | "released" | "connecting";

/** Files served from the target's identical copy (the whole view; daemon/twins.ts). */
export interface TwinFigures {
  /** Planned files and files found later, served from the target's copy without a fetch. */
  identicalFiles: number;
  identicalBytes: number;
  /** Files whose size and mtime matched but whose SHA-256 did not (fetched instead). */
  hashMismatches: number;
}

export interface DaemonStatus extends ObservedFigures {
  id: string;
  origin: string;
  originState: OriginState;
  mountpoint: string;
  /** The process serving the mount (restarted by the supervisor when it dies). */
  daemonPid: number;
  /** The process that owns the mount and restarts the daemon; null: none (unsupervised). */
  supervisorPid: number | null;
  /** Daemons started on this mount after the first (each one a failover). */
  serverRestarts: number;
  startedMs: number;
  restoredPid: number | null;
  /** Restored into a new pid namespace: the root's pid there (restoredPid is the host's). */
  restoredNsPid?: number;
  restoredAlive: boolean;
  files: number;
  /** Lazy directories: listed on the origin (crawled) or not yet, files found not yet fetched. */
  dirs: EngineStatus["dirs"];
  total: EngineStatus["total"];
  prefetch: EngineStatus["prefetch"] & { rateBytesPerSec: number; etaMs: number | null };
  /** The connection to the origin (state, address, reconnect attempts); null once released. */
  originLink: LinkStatus | null;
  firstFetchAtMs: number | null;
  independentAtMs: number | null;
  /** When the connection to the origin was closed after independence (its goodbye sent). */
  releasedAtMs: number | null;
  perFile: FileStatus[];
  /** Whether the cache's disk is full, since when, requests that failed with ENOSPC. */
  cacheDisk: CacheDiskStatus;
  /** What the process sees of the origin: its whole tree, or the directories of its files. */
  view: "whole" | "dirs";
  /** Files served from the target's identical copy without a fetch (daemon/twins.ts). */
  identical: TwinFigures;
}

export interface ObservedFigures {
  /** Per source of bytes: the origin host first, then scrub / local copies if used. */
  origins: OriginFigures[];
  accessLog: AccessLogFigures | null;
  /** Where this daemon serves its metrics (`--metrics`), if it does. */
  metrics: string | null;
}
