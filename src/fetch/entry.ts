/**
 * A migrated file as the engine holds it: the checks a file's meta must pass before it is
 * added, and opening its entry (its block file in the store, none for a `remote` file whose
 * content lives on the origin; its counters and readahead state). Kept apart from the engine,
 * which keeps the entries and decides when a file is added, found again or removed.
 */
import { UserError } from "../common/errors.js";
import { type FileMeta, POLICIES, type Store } from "../store/store.js";
import { newFileCounters } from "./accounting.js";
import { Readahead } from "./readahead.js";
import type { Entry } from "./types.js";

/** Refuses a meta that cannot be added (no id, bad size, unknown policy, local without path). */
export function checkNewFile(meta: FileMeta): void {
  if (!meta.id) throw new UserError("addFile: empty id");
  if (!Number.isSafeInteger(meta.size) || meta.size < 0) {
    throw new UserError(`addFile ${meta.originPath}: bad size ${meta.size}`);
  }
  if (!POLICIES.includes(meta.policy)) {
    throw new UserError(`addFile ${meta.originPath}: unknown policy ${meta.policy}`);
  }
  if (meta.policy === "local" && !meta.localPath) {
    throw new UserError(`addFile ${meta.originPath}: policy local needs localPath`);
  }
}

/**
 * Opens the entry of `meta` in `store` (`create`: a file added now, not found again at open);
 * `readahead` sizes its readahead windows.
 */
export async function openEntry(
  store: Store,
  meta: FileMeta,
  create: boolean,
  readahead: { blockSize: number; maxWindow: number },
): Promise<Entry> {
  const entry: Entry = {
    meta,
    blocks: meta.policy === "remote" ? undefined : await store.openFile(meta, create),
    remoteSize: meta.size,
    dependsOnOrigin: meta.policy !== "scrub",
    inflight: new Map(),
    stats: newFileCounters(),
    ra: new Readahead(readahead),
  };
  if (meta.policy === "remote" && create) await store.openFile(meta, true).then((b) => b.close());
  return entry;
}
