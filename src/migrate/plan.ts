/**
 * Planning: which files of a dump LazyFS serves, from where, under which policy.
 *
 * Input: the dump model (criu/), the origin's stats of every referenced file (taken right
 * after the dump by `migrate`, or now by `restore`), the target's own file system, policy
 * rules and path maps. A regular file or directory the process references is served from
 * the mount unless the target already has an identical copy at the (mapped) path; kernel
 * file systems (/proc, /sys, /dev) and non-regular files are CRIU's business and skipped.
 */
import { lstat } from "node:fs/promises";
import { dirname, posix } from "node:path";
import { errnoCode, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { isUnder } from "../common/paths.js";
import type { DumpModel, FileRef } from "../criu/index.js";
import { type PolicyRule, resolvePolicy } from "../fetch/index.js";
import {
  type LazyDir,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestDir,
  type ManifestFile,
  mapPath,
  type PathMap,
  type ServeOptions,
  type Snapshot,
  type SshOptions,
  type View,
} from "../migration/index.js";
import type { OriginDirEntry, OriginStat } from "../origin/index.js";

const log = logger("plan");

const KERNEL_PREFIXES = ["/proc/", "/sys/", "/dev/", "/run/netns/"];

/** Parses `OLD=NEW` map rules; both sides absolute paths. */
export function parseMaps(rules: readonly string[]): PathMap[] {
  return rules.map((r) => {
    const i = r.indexOf("=");
    const from = i < 0 ? "" : r.slice(0, i);
    const to = i < 0 ? "" : r.slice(i + 1);
    if (!from.startsWith("/") || !to.startsWith("/")) {
      throw new UserError(`--map ${JSON.stringify(r)}: expected OLD=NEW with absolute paths`);
    }
    return { from: trimSlash(from), to: trimSlash(to) };
  });
}

/** Parses `GLOB=POLICY` rules. */
export function parsePolicyRules(rules: readonly string[]): PolicyRule[] {
  return rules.map((r) => {
    const i = r.lastIndexOf("=");
    if (i <= 0) throw new UserError(`--policy ${JSON.stringify(r)}: expected GLOB=POLICY`);
    const rule = { glob: r.slice(0, i), policy: r.slice(i + 1) } as PolicyRule;
    resolvePolicy("/", [rule]); // validates the policy name
    return rule;
  });
}

function trimSlash(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, "") : p;
}

export interface PlanInput {
  id: string;
  dump: DumpModel;
  /** ssh://... for the manifest and error messages */
  originUrl: string;
  /** Stat of a path on the origin; throws UserError if it is missing. */
  statOrigin: (path: string) => Promise<OriginStat>;
  /** Stats recorded right after the dump, by origin path (taken now when absent). */
  checkpointStats?: Record<string, OriginStat>;
  mtimePrecisionMs: number;
  mountpoint: string;
  cacheDir: string;
  imagesDir: string;
  policies: readonly PolicyRule[];
  maps: readonly PathMap[];
  ssh: SshOptions;
  serve: ServeOptions;
  /** Further origin directories to serve as lazy mirrors (`--lazy-dir`). */
  lazyDirPaths?: readonly string[];
  /** Reflink clones taken at the dump, by origin path (`--origin-snapshot`). */
  snapshots?: ReadonlyMap<string, Snapshot>;
  /** What the process sees of the origin (default `dirs`; the CLI's default is `whole`). */
  view?: View;
  /** The whole view: target paths that stay the target's own (see view.ts). */
  hostPaths?: readonly string[];
  /** The whole view: the origin's `/` (its directories become the view's top level). */
  listOriginRoot?: () => Promise<OriginDirEntry[]>;
}

function snapshotOf(s: Snapshot | undefined): Pick<ManifestFile, "snapshot"> {
  if (!s) return {};
  const { size, mtimeMs, ctimeMs, ino } = s.stat;
  return {
    snapshot: {
      path: s.path,
      size,
      mtimeMs,
      ...(ctimeMs !== undefined ? { ctimeMs } : {}),
      ...(ino !== undefined ? { ino } : {}),
    },
  };
}

function isKernelPath(p: string): boolean {
  return KERNEL_PREFIXES.some((k) => p.startsWith(k)) || p === "/proc" || p === "/sys";
}

async function targetStat(path: string) {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ENOTDIR") return undefined;
    throw new UserError(`target: cannot stat ${path}: ${errnoCode(err) ?? err}`);
  }
}

async function planFile(ref: FileRef, input: PlanInput): Promise<ManifestFile | undefined> {
  if (ref.type !== "file" && ref.type !== "dir") return undefined;
  if (isKernelPath(ref.path) || !ref.path.startsWith("/")) return undefined;
  const st = input.checkpointStats?.[ref.path] ?? (await input.statOrigin(ref.path));
  const policy = resolvePolicy(ref.path, input.policies);
  if (
    ref.type === "file" &&
    ref.size !== undefined &&
    st.size !== ref.size &&
    !input.serve.allowChanged &&
    policy !== "remote" // its live content is what the process reads
  ) {
    throw new UserError(
      `${ref.path} on ${input.originUrl} changed since the checkpoint: it has ${st.size} bytes, the dump recorded ${ref.size} (pass --allow-changed to serve it anyway)`,
    );
  }
  const targetPath = mapPath(ref.path, input.maps);
  const local = await targetStat(targetPath);
  const base = {
    originPath: ref.path,
    targetPath,
    type: ref.type,
    size: ref.type === "file" ? st.size : 0,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    mtimeMs: st.mtimeMs,
    ...(st.ino !== undefined ? { ino: st.ino } : {}),
    ...(st.ctimeMs !== undefined ? { ctimeMs: st.ctimeMs } : {}),
    ...snapshotOf(input.snapshots?.get(ref.path)),
    policy,
    uses: ref.usedBy,
  } as const;
  const served = (reason: string): ManifestFile => ({
    ...base,
    restorePath: posix.join(input.mountpoint, targetPath),
    served: true,
    reason,
  });
  const kept = (reason: string): ManifestFile => ({
    ...base,
    restorePath: targetPath,
    served: false,
    reason,
  });
  if (ref.type === "dir") {
    return local?.isDirectory() ? kept("directory exists on target") : served("missing on target");
  }
  if (policy === "remote" || policy === "scrub") return served(`policy ${policy}`);
  if (!local) return served("missing on target");
  const identical =
    local.isFile() &&
    local.size === st.size &&
    Math.abs(local.mtimeMs - st.mtimeMs) < Math.max(1, input.mtimePrecisionMs);
  if (identical) return kept("identical copy on target");
  if (policy === "local") {
    log.warn("policy local: the target's copy differs, serving the origin's", { path: targetPath });
  }
  return served("differs on target");
}

/** All ancestors (excluding "/") of the served paths, with the origin's attributes. */
async function planDirs(files: ManifestFile[], input: PlanInput): Promise<ManifestDir[]> {
  const wanted = new Map<string, string>(); // target path -> origin path
  for (const f of files) {
    if (!f.served) continue;
    let t = f.type === "dir" ? f.targetPath : dirname(f.targetPath);
    let o = f.type === "dir" ? f.originPath : dirname(f.originPath);
    while (t !== "/" && !wanted.has(t)) {
      wanted.set(t, o);
      t = dirname(t);
      o = o === "/" ? "/" : dirname(o);
    }
  }
  const dirs = await Promise.all(
    [...wanted].map(async ([path, originPath]): Promise<ManifestDir> => {
      const st =
        input.checkpointStats?.[originPath] ??
        (await input.statOrigin(originPath).catch(() => undefined));
      // A mapped ancestor that does not exist on the origin gets plain defaults.
      return st
        ? { path, mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs }
        : { path, mode: 0o40755, uid: 0, gid: 0, mtimeMs: Date.now() };
    }),
  );
  return dirs.sort((a, b) => a.path.localeCompare(b.path));
}

/** A manifest with no files yet: enough for the daemon to mount before the dump exists. */
export function emptyManifest(
  input: Omit<
    PlanInput,
    "dump" | "statOrigin" | "checkpointStats" | "mtimePrecisionMs" | "policies"
  >,
): Manifest {
  return {
    version: MANIFEST_VERSION,
    id: input.id,
    createdMs: Date.now(),
    origin: input.originUrl,
    imagesDir: input.imagesDir,
    mountpoint: input.mountpoint,
    cacheDir: input.cacheDir,
    maps: [...input.maps],
    ssh: input.ssh,
    serve: input.serve,
    files: [],
    dirs: [],
    lazyDirs: [],
    policies: [],
    binds: [],
    createdDirs: [],
  };
}

/**
 * The directories served as lazy mirrors: those of served files, referenced directories (a
 * cwd, an open directory) and the user's `--lazy-dir`s; never `/` nor a kernel file system.
 */
function lazyDirsOf(files: ManifestFile[], input: PlanInput): LazyDir[] {
  const dirs = new Map<string, string>(); // target path -> origin path
  const add = (targetPath: string, originPath: string) => {
    if (targetPath !== "/" && !isKernelPath(targetPath)) dirs.set(targetPath, originPath);
  };
  for (const f of files) {
    if (f.type === "dir") {
      if (f.uses.some((u) => u.use !== "root")) add(f.targetPath, f.originPath);
    } else if (f.served) add(dirname(f.targetPath), dirname(f.originPath));
  }
  for (const d of input.lazyDirPaths ?? []) add(mapPath(d, input.maps), d);
  return [...dirs]
    .map(([targetPath, originPath]) => ({ targetPath, originPath }))
    .sort((a, b) => a.targetPath.localeCompare(b.targetPath));
}

/** The lazy directories not inside another one: where the process's view is bind-mounted. */
export function bindRoots(lazyDirs: readonly LazyDir[]): string[] {
  const paths = lazyDirs.map((d) => d.targetPath).sort();
  return paths.filter((p) => !paths.some((q) => q !== p && isUnder(p, q)));
}

/**
 * The whole view: every top-level directory of the origin (not a symbolic link, not a host
 * path) is a lazy directory served on reference and bound over the target's; host paths
 * inside them are bound back; the data's own bind roots outside them (e.g. in /tmp) stay.
 */
async function wholeView(
  dataDirs: LazyDir[],
  dataBinds: string[],
  input: PlanInput,
): Promise<{ lazyDirs: LazyDir[]; binds: string[]; hostPaths: string[] }> {
  const hostPaths = input.hostPaths ?? [];
  const entries = await input.listOriginRoot!();
  const top = entries
    .filter((e) => e.stat.isDirectory && (e.stat.mode & 0o170000) === 0o040000)
    .map((e) => `/${e.name}`)
    .filter((p) => !hostPaths.some((h) => isUnder(p, h)) && !isKernelPath(p))
    .sort();
  const byTarget = new Map<string, LazyDir>();
  for (const p of top) byTarget.set(p, { targetPath: p, originPath: p, onReference: true });
  for (const d of dataDirs) byTarget.set(d.targetPath, d); // the data's own are crawled
  const lazyDirs = [...byTarget.values()].sort((a, b) => a.targetPath.localeCompare(b.targetPath));
  const outside = dataBinds.filter((b) => !top.some((t) => isUnder(b, t)));
  const rebound = hostPaths.filter((h) => top.some((t) => isUnder(h, t) && h !== t));
  // A host path inside another host path comes back with it.
  const kept = rebound.filter((h) => !rebound.some((o) => o !== h && isUnder(h, o)));
  return { lazyDirs, binds: [...top, ...outside], hostPaths: kept.sort() };
}

export async function planMigration(input: PlanInput): Promise<Manifest> {
  const planned = await Promise.all(input.dump.files.map((f) => planFile(f, input)));
  const files = planned.filter((f): f is ManifestFile => f !== undefined);
  const dataDirs = lazyDirsOf(files, input);
  const dataBinds = bindRoots(dataDirs);
  const view = input.view ?? "dirs";
  const { lazyDirs, binds, hostPaths } =
    view === "whole"
      ? await wholeView(dataDirs, dataBinds, input)
      : { lazyDirs: dataDirs, binds: dataBinds, hostPaths: [] };
  // A bind hides the target's own directory: what the process uses there is served too, an
  // identical copy from the target's file, a referenced directory with the origin's attributes.
  // A host path bound back shows the target's own: nothing there is served.
  for (const f of files) {
    if (f.served || !binds.some((b) => isUnder(f.targetPath, b))) continue;
    if (hostPaths.some((h) => isUnder(f.targetPath, h))) continue;
    f.served = true;
    f.restorePath = posix.join(input.mountpoint, f.targetPath);
    if (f.type === "file") {
      f.policy = "local";
      f.reason = "identical copy on target, served from it";
    } else f.reason = "lazy directory";
  }
  const extraDirs = await Promise.all(
    (input.lazyDirPaths ?? []).map(async (d) => {
      const st = await input.statOrigin(d).catch(() => undefined);
      if (!st?.isDirectory) {
        throw new UserError(`--lazy-dir ${d}: not a directory on ${input.originUrl}`);
      }
      const path = mapPath(d, input.maps);
      return { path, mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs };
    }),
  );
  const dirs = [...(await planDirs(files, input)), ...extraDirs].sort((a, b) =>
    a.path.localeCompare(b.path),
  );
  return {
    ...emptyManifest(input),
    files,
    dirs,
    lazyDirs,
    binds,
    policies: [...input.policies],
    view,
    ...(view === "whole" ? { hostPaths, dataBinds } : {}),
  };
}
