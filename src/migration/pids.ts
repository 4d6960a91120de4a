/**
 * The pids a restored tree needs on this host.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { UserError } from "../common/errors.js";
/**
 * CRIU restores every task with its original pid (no pid namespace), so they must be free
 * here. A pid whose process just died may stay taken until its parent reaps it: wait a bit.
 */
export async function waitPidsFree(pids: number[], waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const taken = pids.filter((p) => existsSync(`/proc/${p}`));
    if (taken.length === 0) return;
    if (Date.now() >= deadline) {
      const who = await Promise.all(
        taken.slice(0, 3).map(async (p) => {
          const comm = (await readFile(`/proc/${p}/comm`, "utf8").catch(() => "?")).trim();
          return `${p} (${comm})`;
        }),
      );
      throw new UserError(
        `pid(s) ${who.join(", ")} in use on this host; CRIU restores the process tree with its original pids, so they must be free`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
