/**
 * Draining a host: many process trees moved by one `lazyfs migrate` (`--pid P1,P2,...` or
 * `--unit NAME`). Each tree is a migration of its own, with the same guarantee as one alone
 * (it runs here, or runs on at the origin exactly where it stopped); a failure of one tree
 * never stops the others. Up to `parallel` trees are in flight at once, so that one tree's
 * dump on the origin overlaps another's image transfer and restore here.
 */
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { openOrigin } from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import type { Interruption } from "./interrupt.js";
import { migrateProcess } from "./migrate.js";
import type { MigrateRequest, MigrateResult } from "./request.js";

const log = logger("drain");

/** The trees to move: pids given, or every process of a systemd unit or cgroup. */
export type DrainSelection = { pids: number[] } | { unit: string };

export interface DrainRequest extends Omit<MigrateRequest, "pid" | "id" | "interruption"> {
  select: DrainSelection;
  /** Trees in flight at once. */
  parallel: number;
  /** Held by the caller for the whole drain: a signal reaches every tree's migration. */
  interruption: Interruption;
}

/** One tree's outcome: migrated, or why it stayed on the origin. */
export type TreeOutcome =
  | { pid: number; migrated: MigrateResult }
  | { pid: number; error: string; exitCode: number };

export interface DrainResult {
  /** What `--unit` resolved to (the directory of the unit's cgroup on the origin), if given. */
  cgroup?: string;
  trees: TreeOutcome[];
  wallMs: number;
}

export async function drainProcesses(req: DrainRequest): Promise<DrainResult> {
  const t0 = performance.now();
  const { select, parallel, interruption, ...common } = req;
  const origin = openOrigin(req.origin, req.ssh);
  let roots: number[];
  let cgroup: string | undefined;
  let refused: TreeOutcome[];
  try {
    await interruption.race(origin.connect(), origin.name);
    if ("unit" in select) {
      cgroup = await unitCgroup(origin, select.unit);
      roots = await treeRootsOf(origin, cgroup);
      if (roots.length === 0) {
        throw new UserError(`${origin.name}: no process in ${select.unit} (${cgroup})`);
      }
      refused = [];
    } else {
      ({ roots, refused } = await separateTrees(origin, select.pids));
    }
  } finally {
    await origin.close();
  }
  log.info("draining", { origin: req.origin, trees: roots.length, parallel });
  const outcomes = new Map<number, TreeOutcome>(refused.map((o) => [o.pid, o]));
  const queue = [...roots];
  const worker = async () => {
    for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
      outcomes.set(pid, await migrateTree(common, pid, interruption));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  const order = "pids" in select ? select.pids : roots;
  return {
    ...(cgroup ? { cgroup } : {}),
    trees: order.map((pid) => outcomes.get(pid)!),
    wallMs: Math.round(performance.now() - t0),
  };
}

/** One tree, with an Interruption of its own that hears the drain's signals. */
async function migrateTree(
  common: Omit<MigrateRequest, "pid" | "interruption">,
  pid: number,
  drain: Interruption,
): Promise<TreeOutcome> {
  if (drain.signal) {
    return { pid, error: `not started: interrupted (${drain.signal})`, exitCode: 130 };
  }
  const interruption = drain.child();
  try {
    return { pid, migrated: await migrateProcess({ ...common, pid, interruption }) };
  } catch (err) {
    log.warn("a tree stayed on the origin", { pid, error: errorMessage(err) });
    const exitCode = err instanceof UserError ? err.exitCode : 1;
    return { pid, error: errorMessage(err), exitCode };
  } finally {
    interruption.close();
  }
}

/** pid -> parent pid on the origin, for the pids asked (absent: no such process). */
async function parentsOf(
  origin: SftpOrigin,
  pids: readonly number[],
): Promise<Map<number, number>> {
  // The fields after the command name, which may hold spaces and parentheses.
  const r = await origin.exec(
    `for p in ${pids.join(" ")}; do s=$(cat /proc/$p/stat 2>/dev/null) || continue; set -- \${s##*') '}; echo "$p $2"; done`,
  );
  const parents = new Map<number, number>();
  for (const line of r.stdout.trim().split("\n")) {
    const [pid, ppid] = line.split(" ").map(Number);
    if (pid && ppid !== undefined) parents.set(pid, ppid);
  }
  return parents;
}

/**
 * The pids given, less those inside another given pid's tree (CRIU dumps a tree whole: it
 * moves with its root), which are reported, not migrated twice. A pid given twice counts once.
 */
async function separateTrees(
  origin: SftpOrigin,
  pids: readonly number[],
): Promise<{ roots: number[]; refused: TreeOutcome[] }> {
  const unique = [...new Set(pids)];
  // Ancestors up to init, for every pid: a few rounds of one command each.
  const parent = new Map<number, number>();
  let ask = unique;
  for (let round = 0; round < 64 && ask.length > 0; round++) {
    const found = await parentsOf(origin, ask);
    for (const [p, pp] of found) parent.set(p, pp);
    ask = [...new Set([...found.values()])].filter((p) => p > 1 && !parent.has(p));
  }
  const given = new Set(unique);
  const roots: number[] = [];
  const refused: TreeOutcome[] = [];
  for (const pid of unique) {
    let ancestor = parent.get(pid);
    while (ancestor !== undefined && ancestor > 1 && !given.has(ancestor)) {
      ancestor = parent.get(ancestor);
    }
    if (ancestor !== undefined && given.has(ancestor)) {
      refused.push({
        pid,
        error: `part of pid ${ancestor}'s tree on ${origin.name}: it moves with that tree`,
        exitCode: 1,
      });
    } else {
      // A pid that does not exist is refused by its own migration, with the usual line.
      roots.push(pid);
    }
  }
  return { roots, refused };
}

/**
 * Where a cgroup's processes are listed on the origin: cgroup v2 (unified, or the hybrid
 * layout's /sys/fs/cgroup/unified) or the v1 hierarchy systemd tracks units in.
 */
const CGROUP_ROOTS = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"];

/**
 * The directory on the origin of `unit`'s cgroup: a systemd unit's ControlGroup, or a cgroup
 * path given as such (`/system.slice/x.service`), for hosts without systemd.
 */
async function unitCgroup(origin: SftpOrigin, unit: string): Promise<string> {
  if (!/^[A-Za-z0-9@:._/\\-]+$/.test(unit) || unit.includes("..")) {
    throw new UserError(`--unit ${JSON.stringify(unit)}: not a unit name nor a cgroup path`);
  }
  let cgroup = unit;
  if (!unit.startsWith("/")) {
    // sd_booted(): systemctl may be installed where systemd does not run.
    const r = await origin.exec(
      `test -d /run/systemd/system || { echo none; exit 0; }; systemctl show -P ControlGroup -- '${unit}'`,
    );
    cgroup = r.stdout.trim();
    if (cgroup === "none") {
      throw new UserError(
        `${origin.name}: systemd does not run there, so it has no unit ${unit}; give the cgroup path instead (--unit /path/of/the/cgroup)`,
      );
    }
    if (r.code !== 0 || !cgroup.startsWith("/")) {
      throw new UserError(`${origin.name}: unit ${unit} has no cgroup (not loaded or not running)`);
    }
  }
  const dirs = CGROUP_ROOTS.map((root) => `'${root}${cgroup}'`).join(" ");
  const r = await origin.exec(
    `for d in ${dirs}; do test -f "$d/cgroup.procs" && { echo "$d"; exit 0; }; done; true`,
  );
  const dir = r.stdout.trim();
  if (!dir) {
    throw new UserError(
      `${origin.name}: no cgroup ${cgroup} (looked under ${CGROUP_ROOTS.join(", ")})`,
    );
  }
  return dir;
}

/** The roots of the process trees in the cgroup at `dir` and below: parent not in it. */
async function treeRootsOf(origin: SftpOrigin, dir: string): Promise<number[]> {
  const r = await origin.exec(`find '${dir}' -name cgroup.procs -exec cat {} + 2>/dev/null; true`);
  const pids = [
    ...new Set(
      r.stdout
        .split("\n")
        .map(Number)
        .filter((p) => p > 0),
    ),
  ];
  if (pids.length === 0) return [];
  const parents = await parentsOf(origin, pids);
  const members = new Set(parents.keys());
  return [...members].filter((p) => !members.has(parents.get(p)!)).sort((a, b) => a - b);
}
