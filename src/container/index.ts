/**
 * Containers migrate lazily (`lazyfs migrate --container`): podman on the origin checkpoints
 * the container into an archive (inspect.ts, podman.ts), the target serves the origin's image
 * store and the container's volumes as lazy directories of one migration (the same daemon,
 * fetch, prefetch and status as a process's), rewrites the archive's spec to the served
 * volumes (archive.ts) and restores it with its own podman (migrate.ts).
 * Sits beside migrate/: may import migrate/, daemon/, origin-host/, migration/ and below.
 * Only cli/ imports it.
 */
export { type ContainerMigrateResult, migrateContainer } from "./migrate.js";
export { podmanCommand } from "./podman.js";
