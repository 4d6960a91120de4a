/**
 * What the supervisor records of itself (`supervisor.json`), read by `lazyfs status`. Kept apart
 * from supervisor.ts so that reading it loads nothing of the FUSE or LazyFS code.
 */
import { readFile } from "node:fs/promises";
import type { SupervisorState } from "../fuse/index.js";
import { migrationPaths } from "../migration/state.js";

/** What `supervisor.json` holds. */
export interface SupervisorRecord extends SupervisorState {
  pid: number;
}

export async function readSupervisorRecord(id: string): Promise<SupervisorRecord | undefined> {
  try {
    return JSON.parse(
      await readFile(migrationPaths(id).supervisorState, "utf8"),
    ) as SupervisorRecord;
  } catch {
    return undefined;
  }
}
