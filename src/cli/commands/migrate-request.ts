/**
 * What `lazyfs migrate` turns its options into, for one tree and for a drain alike: the
 * request fields both pass to the migration, and the `--detach` that follows it.
 */
import type { Command } from "commander";
import { type DetachResult, detachMigration } from "../../detach/index.js";
import { parsePrefetch } from "../../migration/index.js";
import { type CommonOpts, type CriuOpts, commonRequest, criuOptions } from "../options.js";
import { parseRemoteChoice } from "./detach.js";

export interface MigrateOpts extends CommonOpts, CriuOpts {
  from: string;
  onRestored?: string;
  pid?: string;
  unit?: string;
  parallel: string;
  container?: string;
  originCriu?: string;
  keepOriginImages?: boolean;
  originSnapshot?: string;
  json?: boolean;
  detach?: boolean;
  detachRemote: string;
}

/** The request fields every migrated tree gets from the command line. */
export function migrateRequestFields(cmd: Command, o: MigrateOpts) {
  const common = commonRequest(o);
  // Without prefetch a process that never reads everything would never be detached.
  if (o.detach && cmd.getOptionValueSource("prefetch") === "default") {
    common.serve.prefetch = parsePrefetch("immediate");
  }
  return {
    origin: o.from,
    ...common,
    criu: criuOptions(o),
    ...(o.onRestored ? { onRestored: o.onRestored } : {}),
    ...(o.originCriu ? { originCriu: o.originCriu } : {}),
    ...(o.keepOriginImages ? { keepOriginImages: true } : {}),
  };
}

/**
 * `--detach` of a migration once it is independent; `signal` ends the wait for independence
 * (DetachWaitStopped), a detach whose dump began is finished first.
 */
export function detachAfterMigrate(
  id: string,
  o: MigrateOpts,
  signal: AbortSignal,
): Promise<DetachResult> {
  return detachMigration({
    id,
    remote: parseRemoteChoice(o.detachRemote),
    waitMs: 24 * 3_600_000,
    ...(o.criu ? { criuPath: o.criu } : {}),
    criu: criuOptions(o),
    signal,
  });
}
