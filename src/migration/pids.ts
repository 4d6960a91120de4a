/**
 * The pids a restored tree needs on this host.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { UserError } from "../common/errors.js";
import type { PidNamespaceMode } from "../criu/index.js";
/**
 * CRIU restores every task with its original pid (no pid namespace), so they must be free
 * here. A pid whose process just died may stay taken until its parent reaps it: wait a bit.
 */
export async function waitPidsFree(pids: number[], waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const taken = takenPids(pids);
    if (taken.length === 0) return;
    if (Date.now() >= deadline) {
      const who = await Promise.all(
        taken.slice(0, 3).map(async (p) => {
          const comm = (await readFile(`/proc/${p}/comm`, "utf8").catch(() => "?")).trim();
          return `${p} (${comm})`;
        }),
      );
      throw new UserError(
        `pid(s) ${who.join(", ")} in use on this host; CRIU restores the process tree with its original pids, so they must be free (--pid-namespace never)`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function takenPids(pids: readonly number[]): number[] {
  return pids.filter((p) => existsSync(`/proc/${p}`));
}

export interface PidNamespaceChoice {
  /** Restore into a new pid namespace of its own. */
  newNamespace: boolean;
  /** Why (auto): a pid of the tree that is taken here. */
  taken?: number;
}

/**
 * Where the tree gets its pids: on this host (they must be free; `never`), or in a new pid
 * namespace of its own (`always`, or `auto` when a pid of the tree is taken here). A pid that
 * a process just dying still holds is waited for a moment before auto gives it up.
 */
export async function choosePidNamespace(
  mode: PidNamespaceMode,
  pids: number[],
  waitMs: number,
): Promise<PidNamespaceChoice> {
  if (mode === "never") {
    await waitPidsFree(pids, waitMs);
    return { newNamespace: false };
  }
  let choice: PidNamespaceChoice = { newNamespace: true };
  if (mode === "auto") {
    const deadline = Date.now() + Math.min(waitMs, 1000);
    for (;;) {
      const taken = takenPids(pids);
      if (taken.length === 0) return { newNamespace: false };
      if (Date.now() >= deadline) {
        choice = { newNamespace: true, taken: taken[0]! };
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // Our init is pid 1 of the new namespace.
  if (pids.includes(1)) {
    throw new UserError(
      "the tree has a process with pid 1, which a new pid namespace gives to LazyFS's init; it can only be restored with its pids free on this host",
    );
  }
  return choice;
}
