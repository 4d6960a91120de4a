/**
 * The `migrate` and `restore` commands: plan (images + the origin's stats + policies ->
 * manifest), pull the images, restore lazily in the process's own mount namespace, and the
 * verdict on the origin's frozen original (migrate.ts).
 * May import every folder below it: daemon/, detach/, chain/, origin-host/, migration/, lazy/
 * and the rest. Only cli/ (and the demo) import it.
 */
export { type DrainResult, type DrainSelection, drainProcesses } from "./drain.js";
export { Interruption, MigrationInterrupted } from "./interrupt.js";
export { migrateProcess } from "./migrate.js";
export { parseMaps, parsePolicyRules, planMigration } from "./plan.js";
export type { MigrateResult } from "./request.js";
export { pidNamespaceLine, prepare, restoreLazily, rewriteForMount } from "./restore.js";
