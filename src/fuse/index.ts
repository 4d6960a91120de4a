/**
 * A FUSE server library speaking the kernel protocol over /dev/fuse (no libfuse, no native
 * addon). Mount with `mount()`, implement `FileSystem`, send notifications on `Session`.
 */

export { MemoryFileSystem, type MemoryOptions } from "./examples/memory.js";
export { PassthroughFileSystem, type PassthroughOptions } from "./examples/passthrough.js";
export * from "./filesystem.js";
export {
  type Adoption,
  adoptedDevice,
  adoptionEnv,
  claimSupervisorRecovery,
  type Handover,
  handoverEnv,
  inheritedDevice,
  serveInherited,
  takeOver,
} from "./handover.js";
export {
  abortConnection,
  deviceMountArgs,
  Mount,
  type MountOptions,
  mount,
  mountDevice,
  mountInfo,
  recoverStaleMount,
  unmountOnSignals,
} from "./mount.js";
export { FOpen, FUSE_ROOT_ID, Init, Op } from "./protocol.js";
export { type PassthroughStatus, Session } from "./session.js";
export type { Negotiated, SessionOptions } from "./session-options.js";
export {
  Supervisor,
  type SupervisorEnd,
  type SupervisorOptions,
  type SupervisorState,
} from "./supervisor.js";
export { ensureThreadPool } from "./threadpool.js";
