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
import type { DumpModel, FileRef } from "../criu/index.js";
import { type PolicyRule, resolvePolicy } from "../fetch/index.js";
import type { OriginStat } from "../origin/index.js";
import type { Manifest, ManifestDir, ManifestFile, PathMap } from "./manifest.js";
import { MANIFEST_VERSION } from "./manifest.js";
import type { ServeOptions, SshOptions } from "./options.js";

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

/** Applies the longest matching prefix rule. */
export function mapPath(path: string, maps: readonly PathMap[]): string {
  let best: PathMap | undefined;
  for (const m of maps) {
    const hit = m.from === "/" || path === m.from || path.startsWith(`${m.from}/`);
    if (hit && (!best || m.from.length > best.from.length)) best = m;
  }
  if (!best) return path;
  const rest = best.from === "/" ? path.slice(1) : path.slice(best.from.length + 1);
  return rest ? posix.join(best.to, rest) : best.to;
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
  if (
    ref.type === "file" &&
    ref.size !== undefined &&
    st.size !== ref.size &&
    !input.serve.allowChanged
  ) {
    throw new UserError(
      `${ref.path} on ${input.originUrl} changed since the checkpoint: it has ${st.size} bytes, the dump recorded ${ref.size} (pass --allow-changed to serve it anyway)`,
    );
  }
  const targetPath = mapPath(ref.path, input.maps);
  const policy = resolvePolicy(ref.path, input.policies);
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
  };
}

export async function planMigration(input: PlanInput): Promise<Manifest> {
  const planned = await Promise.all(input.dump.files.map((f) => planFile(f, input)));
  const files = planned.filter((f): f is ManifestFile => f !== undefined);
  return {
    ...emptyManifest(input),
    files,
    dirs: await planDirs(files, input),
    policies: [...input.policies],
  };
}
