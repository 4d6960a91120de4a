/**
 * `lazyfs detach`: ending a migration's last dependency, LazyFS itself. The LazyFS tree
 * becomes plain files (materialize.ts) and a local dump + restore moves the process onto them
 * (detach.ts); detached.ts records the result.
 * May import: daemon/ (to ask and stop the daemon), migration/, lazy/ and below. Never
 * migrate/ or chain/.
 */
export {
  type DetachResult,
  DetachWaitStopped,
  detachMigration,
  type RemoteChoice,
} from "./detach.js";
export { type DetachedRecord, detachedAlive, endDetached, readDetached } from "./detached.js";
