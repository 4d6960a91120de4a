/**
 * The restored process's own view of the target: `criu restore` runs inside a new private
 * mount namespace in which each bind root (a served directory, see migrate/plan.ts) is a bind mount
 * of the LazyFS tree over its original path. CRIU puts the restored tree into that namespace,
 * so the process keeps its paths (in /proc/PID/fd, maps, cwd) and finds files by name there,
 * while the rest of the target, and every other process on it, sees the target's own files.
 * Two migrations from the same origin path never see each other: each has its namespace.
 */
import { spawn } from "node:child_process";
import { lstat, mkdir, readlink, rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { isUnder } from "../common/paths.js";
import { deadConnection, type Probe, probePath } from "../common/probe.js";
import { type Manifest, type ManifestFile, readManifest } from "./manifest.js";
import { listMigrations, migrationPaths, type RestoredRecord } from "./state.js";

const log = logger("namespace");

/**
 * Makes sure every bind root exists on the target as a directory to mount on; returns the
 * directories it had to create (outermost first), to be removed when the migration ends.
 */
export async function prepareMountPoints(binds: readonly string[]): Promise<string[]> {
  const created: string[] = [];
  for (const path of binds) {
    const missing: string[] = [];
    for (let p = path; p !== "/"; p = dirname(p)) {
      const st = await lstat(p).catch((err) => {
        if (errnoCode(err) === "ENOENT") return undefined;
        throw new UserError(`target: cannot stat ${p}: ${errnoCode(err) ?? err}`);
      });
      if (st?.isDirectory()) break;
      if (st) {
        throw new UserError(
          `target: ${p} is not a directory, but the migrated process needs ${path} to be one`,
        );
      }
      missing.unshift(p);
    }
    for (const p of missing) {
      await mkdir(p, { mode: 0o755 });
      created.push(p);
    }
  }
  return created;
}

/**
 * Removes the mount points LazyFS created (innermost first; only if still empty), except
 * those another migration's process still sees LazyFS on: removing a directory detaches
 * whatever is mounted on it in every other mount namespace too.
 */
export async function removeMountPoints(
  created: readonly string[],
  inUse: ReadonlySet<string> = new Set(),
): Promise<void> {
  for (const p of [...created].reverse()) {
    if ([...inUse].some((b) => isUnder(b, p))) continue;
    await rmdir(p).catch((err) => {
      if (errnoCode(err) !== "ENOENT") {
        log.warn("could not remove a mount point LazyFS created", { path: p, error: String(err) });
      }
    });
  }
}

/**
 * Runs a command in a new private mount namespace with the binds in place:
 * `[...namespacePrefix(manifest), "criu", "restore", ...]`.
 */
export function namespacePrefix(manifest: Manifest): string[] {
  return bindNamespacePrefix(manifest.mountpoint, manifest.binds, "", manifest.hostPaths ?? []);
}

/**
 * Binds by descriptor: every source is opened before the first bind, so a bind over `/usr` or
 * `/etc` hides neither the LazyFS tree nor a host path that is put back on top of it. The
 * binds of the view go in one `mount -a` run from a table (the mount tool loads from the
 * target's own `/usr` before anything is covered; libmount reads a table from a file only: a
 * temporary one, already removed). Host paths are put back one `mount` each: `mount -a` skips
 * a target it finds mounted already, and a host path is often a mount point of its own (a
 * container's /etc/hostname). `mount -c` keeps `/proc/self/fd/N` as written (canonicalized, it
 * would name the covered path). A host path that is not a plain file or directory on the
 * target has nothing to put back. It all runs with LC_ALL=C: mount, CRIU and the tools it runs
 * need no locale, and would load its files through the view.
 */
const BIND_SCRIPT = `esc() { local s=\${1//\\\\/\\\\134}; s=\${s// /\\\\040}; s=\${s//$'\\t'/\\\\011}; printf '%s' "\${s//$'\\n'/\\\\012}"; }
export LC_ALL=C
mp=$1; shift
exec {src}<"$mp" || exit 111
tab=""
while [ "$1" != -- ]; do tab+="$(esc "/proc/self/fd/$src$1") $(esc "$1") none bind 0 0"$'\\n'; shift; done; shift
kept=()
while [ "$1" != -- ]; do
  if [ -f "$1" ] || [ -d "$1" ]; then exec {fd}<"$1" || exit 111; kept+=("$fd:$1"); fi; shift
done; shift
if [ -n "$tab" ]; then
  t=$(mktemp) && printf '%s' "$tab" >"$t" && exec {tf}<"$t" && rm -f "$t" || exit 111
  mount -c -a -T "/proc/self/fd/$tf" || exit 111
  exec {tf}<&-
fi
for k in "\${kept[@]}"; do
  fd=\${k%%:*}; mount -c --rbind "/proc/self/fd/$fd" "\${k#*:}" || exit 111; exec {fd}<&-
done
exec {src}<&-
exec "$@"`;

/**
 * A new private mount namespace in which each of `binds` is a bind mount of `<source><bind>`,
 * then each of `hostPaths` is the target's own again (bound back over those binds), after the
 * shell commands `before` ran in it.
 */
export function bindNamespacePrefix(
  source: string,
  binds: readonly string[],
  before = "",
  hostPaths: readonly string[] = [],
): string[] {
  const script = `${before}${before ? "\n" : ""}${BIND_SCRIPT}`;
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "bash",
    "-c",
    script,
    "bash",
    source,
    ...binds,
    "--",
    ...hostPaths,
    "--",
  ];
}

/** Where the restored process finds `f` in its namespace. */
function pathInNamespace(manifest: Manifest, f: ManifestFile): string {
  if (manifest.binds.some((b) => isUnder(f.targetPath, b))) return f.targetPath;
  return f.served ? f.restorePath : f.targetPath;
}

/**
 * The image copy CRIU restores from inside the namespace: paths change only where a file is
 * not at its original path there (`--map`, or a served file outside every bind), and the
 * size check is dropped for files whose origin content keeps changing (policy remote).
 */
export async function rewriteForNamespace(manifest: Manifest, outDir: string): Promise<number> {
  // Loaded here, not at the top: `lazyfs status` uses this file and needs no CRIU image code.
  const { rewriteImages } = await import("../criu/index.js");
  const byOrigin = new Map(manifest.files.map((f) => [f.originPath, f]));
  const changes = await rewriteImages(manifest.imagesDir, outDir, (path) => {
    const f = byOrigin.get(path);
    if (!f) return undefined;
    const name = pathInNamespace(manifest, f);
    return { name, dropSize: f.served && f.policy === "remote" };
  });
  return changes.filter((c) => c.from !== c.to).length;
}

/** The mount namespace of a process (`mnt:[4026532...]`), or undefined when it is gone. */
export async function mountNamespaceOf(pid: number): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
}

/** The bind roots of every other migration on this host. */
export async function bindsOfOthers(id: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const other of await listMigrations()) {
    if (other === id) continue;
    const m = await readManifest(migrationPaths(other).manifest).catch(() => undefined);
    for (const b of m?.binds ?? []) out.add(b);
  }
  return out;
}

/** Where the restored process `pid` sees its first bind root, from this namespace. */
export function viewPath(manifest: Manifest, pid: number): string | undefined {
  const b = manifest.binds[0];
  return b === undefined ? undefined : `/proc/${pid}${b === "/" ? "/root" : `/root${b}`}`;
}

/** Whether the restored process's own view answers (see common/probe.ts). */
export async function probeView(manifest: Manifest, pid: number): Promise<Probe> {
  const path = viewPath(manifest, pid);
  return path ? probePath(path) : { ok: true };
}

function runIn(pid: number, args: string[], device?: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "ignore", "pipe"];
    if (device !== undefined) stdio.push(device);
    const child = spawn("nsenter", [`--mount=/proc/${pid}/ns/mnt`, "--", ...args], { stdio });
    let err = "";
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.on("error", (e) => resolve(errorMessage(e)));
    child.on("close", (code) => resolve(code === 0 ? undefined : err.trim() || `exit ${code}`));
  });
}

/**
 * After the daemon and its supervisor both died, the FUSE connection the process's view is
 * bound to is gone for good: every access through it fails with ENOTCONN, and a new mount
 * at the mount point does not reach the process's private mount namespace. When the view is
 * dead, this mounts the new connection (`device`, mounted here already: the kernel mounts the
 * same connection once more) at the mount point inside that namespace and binds it over each
 * dead bind root. The process's descriptors opened before stay on the dead connection (EIO or
 * ENOTCONN; nothing can move them); what it opens by name from now on works, a cwd inside the
 * view included only once it changes directory by name. Returns what was done.
 */
export async function reattachView(
  manifest: Manifest,
  restored: RestoredRecord,
  device: number,
  mountArgs: (target: string) => string[],
): Promise<string> {
  const pid = restored.pid;
  if (!pid || !restored.mountNs) return "no restored process";
  if ((await mountNamespaceOf(pid)) !== restored.mountNs) return "the restored process is gone";
  if ((await mountNamespaceOf(process.pid)) === restored.mountNs) return "not in a namespace";
  const before = await probeView(manifest, pid);
  if (!deadConnection(before)) {
    return before.ok ? "the view answers" : `the view does not answer (${before.reason})`;
  }
  const mp = manifest.mountpoint;
  // Innermost first, the dead mount point last; "not mounted" is fine.
  for (const p of [...manifest.binds].reverse().concat(mp))
    await runIn(pid, ["umount", "-l", "-c", p]);
  const mounted = await runIn(pid, ["mount", ...mountArgs(mp)], device);
  if (mounted) throw new Error(`cannot mount ${mp} in the process's namespace: ${mounted}`);
  for (const b of manifest.binds) {
    const bound = await runIn(pid, ["mount", "--bind", `${mp}${b}`, b]);
    if (bound) throw new Error(`cannot bind ${b} in the process's namespace: ${bound}`);
  }
  const after = await probeView(manifest, pid);
  if (!after.ok) throw new Error(`the process's view still does not answer: ${after.reason}`);
  return "reattached";
}
