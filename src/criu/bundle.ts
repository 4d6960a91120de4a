/**
 * A self-contained, relocatable bundle of this host's CRIU (and `nft` when there is one), to
 * run on a host that has no usable CRIU:
 *
 *   bin/criu, bin/nft                  wrappers that find the bundle from their own location
 *   usr/sbin/criu, usr/sbin/nft        the programs
 *   usr/lib/<triplet>/                 their whole library closure and the dynamic loader
 *
 * From LazyFS's private prefix (scripts/setup.sh) the programs and libraries are taken as they
 * are; from a system CRIU (an ELF binary) they are its `ldd` closure. The bundle is packed as
 * a tar.gz named by the sha256 of its tree (paths, types, modes, contents) in a root-only
 * cache directory, so the same CRIU is packed once and every host can key it by that hash.
 */
import { execFile } from "node:child_process";
import { createHash, type Hash } from "node:crypto";
import {
  access,
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";

const run = promisify(execFile);

export const LOCAL_BUNDLE_CACHE = "/var/lib/lazyfs/bundles";

export interface CriuBundle {
  /** sha256 (hex) of the bundle's tree; also the tarball's name. */
  hash: string;
  /** The packed bundle, `<cacheDir>/<hash>.tar.gz`. */
  tarball: string;
  bytes: number;
  /** The bundled CRIU's version as `--version` prints it. */
  version: string;
  hasNft: boolean;
  /** Where it came from: the private prefix's directory or the system binary's path. */
  from: string;
}

/** Library directory and loader name per architecture (Debian multiarch layout). */
const LAYOUT: Record<string, { triplet: string; loader: string }> = {
  x64: { triplet: "x86_64-linux-gnu", loader: "ld-linux-x86-64.so.2" },
  arm64: { triplet: "aarch64-linux-gnu", loader: "ld-linux-aarch64.so.1" },
};
/** iconv modules: neither CRIU nor nft uses them (8 MiB). */
const SKIP_IN_LIBDIR = new Set(["gconv"]);

/** First line of every LazyFS wrapper after the shebang (scripts/setup.sh writes the same). */
export const WRAPPER_MARK = "# lazyfs relocatable wrapper v1";

function layout() {
  const l = LAYOUT[process.arch];
  if (!l) throw new UserError(`cannot bundle CRIU on architecture ${process.arch}`);
  return l;
}

/** The wrapper `bin/<name>`: runs usr/sbin/<name> through the bundle's own loader and libraries. */
export function wrapperScript(name: string): string {
  const { triplet, loader } = layout();
  return [
    "#!/bin/sh",
    WRAPPER_MARK,
    `p=$(readlink -f -- "$0") && p=\${p%/*} && p=\${p%/*} || exit 127`,
    `l="$p/usr/lib/${triplet}"`,
    `exec "$l/${loader}" --library-path "$l" "$p/usr/sbin/${name}" "$@"`,
    "",
  ].join("\n");
}

/**
 * Refuses a directory LazyFS keeps programs in unless it is a real directory (not a symlink)
 * owned by root and writable by nobody else. Returns the reason, or undefined when it is fine.
 */
export async function unsafeDirReason(dir: string): Promise<string | undefined> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) return "is a symlink";
  if (!st.isDirectory()) return "is not a directory";
  if (st.uid !== 0) return `is owned by uid ${st.uid}, not root`;
  if (st.mode & 0o022)
    return `is group- or world-writable (mode ${(st.mode & 0o7777).toString(8)})`;
  return undefined;
}

/** Creates `dir` (mode 0700) and its parent if missing, and refuses an unsafe one. */
export async function ensureRootOnlyDir(dir: string): Promise<void> {
  for (const d of [dirname(dir), dir]) {
    try {
      await mkdir(d, { mode: 0o700 });
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") {
        throw new UserError(`cannot create ${d}: ${errorMessage(err)}`);
      }
    }
    const why = await unsafeDirReason(d);
    if (why) throw new UserError(`refusing ${d}: it ${why}; it must be a root-only directory`);
  }
}

async function criuVersionOf(path: string): Promise<string> {
  const { stdout } = await run(path, ["--version"], { timeout: 10_000 });
  const m = /Version:\s*(\d+(?:\.\d+)*)/.exec(stdout);
  if (!m) throw new Error(`${path} --version printed no version`);
  return m[1]!;
}

/** Hard-links `src` to `dst` (same file system) or copies it. */
async function linkOrCopy(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch {
    await copyFile(src, dst);
  }
}

/** Copies a prefix directory into the stage: files linked, relative symlinks kept. */
async function stageTree(src: string, dst: string): Promise<void> {
  await mkdir(dst, { recursive: true });
  for (const e of await readdir(src, { withFileTypes: true })) {
    if (SKIP_IN_LIBDIR.has(e.name)) continue;
    const from = join(src, e.name);
    const to = join(dst, e.name);
    if (e.isDirectory()) await stageTree(from, to);
    else if (e.isSymbolicLink()) {
      const target = await readlink(from);
      if (target.startsWith("/")) await linkOrCopy(await realpath(from), to);
      else await symlink(target, to);
    } else if (e.isFile()) await linkOrCopy(from, to);
  }
}

/** `ldd` closure of an ELF program: soname -> file, and the loader's file. */
async function lddClosure(program: string): Promise<{ libs: Map<string, string>; loader: string }> {
  let stdout: string;
  try {
    ({ stdout } = await run("ldd", [program], { timeout: 10_000 }));
  } catch (err) {
    throw new UserError(
      `cannot bundle ${program}: ldd failed: ${errorMessage(err).split("\n")[0]}`,
    );
  }
  const libs = new Map<string, string>();
  let loader = "";
  for (const line of stdout.split("\n")) {
    const arrow = /^\s*(\S+) => (\S+) \(0x/.exec(line);
    if (arrow) libs.set(arrow[1]!, arrow[2]!);
    else if (/=> not found/.test(line)) {
      throw new UserError(`cannot bundle ${program}: ${line.trim()}`);
    } else {
      const direct = /^\s*(\/\S+) \(0x/.exec(line);
      if (direct) loader = direct[1]!;
    }
  }
  if (!loader) throw new UserError(`cannot bundle ${program}: ldd names no dynamic loader`);
  return { libs, loader };
}

/** Where `nft` is on this host's PATH, if anywhere. */
async function systemNft(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean)) {
    try {
      await access(join(dir, "nft"), 1);
      return join(dir, "nft");
    } catch {}
  }
  return undefined;
}

/** Fills `stage` from a LazyFS prefix; returns whether it had nft. */
async function stageFromPrefix(prefix: string, stage: string): Promise<boolean> {
  const { triplet } = layout();
  await stageTree(join(prefix, "usr/lib", triplet), join(stage, "usr/lib", triplet));
  await mkdir(join(stage, "usr/sbin"), { recursive: true });
  await linkOrCopy(join(prefix, "usr/sbin/criu"), join(stage, "usr/sbin/criu"));
  try {
    await linkOrCopy(join(prefix, "usr/sbin/nft"), join(stage, "usr/sbin/nft"));
    return true;
  } catch {
    return false;
  }
}

/** Fills `stage` from system programs and their `ldd` closure; returns whether it had nft. */
async function stageFromSystem(criu: string, stage: string): Promise<boolean> {
  const { triplet, loader } = layout();
  const libdir = join(stage, "usr/lib", triplet);
  await mkdir(libdir, { recursive: true });
  await mkdir(join(stage, "usr/sbin"), { recursive: true });
  const nft = await systemNft();
  const programs: [string, string][] = [["criu", criu]];
  if (nft) programs.push(["nft", await realpath(nft)]);
  for (const [name, path] of programs) {
    const { libs, loader: ld } = await lddClosure(path);
    await copyFile(path, join(stage, "usr/sbin", name));
    await copyFile(await realpath(ld), join(libdir, loader));
    for (const [soname, file] of libs) {
      await copyFile(await realpath(file), join(libdir, basename(soname)));
    }
  }
  return nft !== undefined;
}

/** sha256 over the tree's sorted entries: path, kind, mode, and content or link target. */
async function hashTree(root: string): Promise<string> {
  const h = createHash("sha256");
  async function walk(rel: string, hash: Hash): Promise<void> {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, r));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        hash.update(`d\0${r}\0${mode}\0`);
        await walk(r, hash);
      } else if (st.isSymbolicLink()) {
        hash.update(`l\0${r}\0${await readlink(join(root, r))}\0`);
      } else {
        const data = await readFile(join(root, r));
        hash.update(`f\0${r}\0${mode}\0${data.length}\0`);
        hash.update(data);
      }
    }
  }
  await walk("", h);
  return h.digest("hex");
}

/** The private prefix behind a LazyFS wrapper (`<prefix>/bin/criu`), if `path` is one. */
async function prefixOf(path: string): Promise<string | undefined> {
  const head = (await readFile(path)).subarray(0, 4096).toString("latin1");
  if (!head.startsWith("#!")) return undefined;
  const prefix = dirname(dirname(path));
  try {
    await access(join(prefix, "usr/sbin/criu"));
    await access(join(prefix, "usr/lib", layout().triplet, layout().loader));
    return prefix;
  } catch {
    return undefined;
  }
}

/**
 * Packs the CRIU at `criuPath` (a LazyFS prefix wrapper or a system ELF binary) as a bundle in
 * `cacheDir` (default /var/lib/lazyfs/bundles, created root-only), or finds it packed there.
 */
export async function packCriuBundle(
  criuPath: string,
  opts: { cacheDir?: string } = {},
): Promise<CriuBundle> {
  const cacheDir = opts.cacheDir ?? LOCAL_BUNDLE_CACHE;
  await ensureRootOnlyDir(cacheDir);
  let real: string;
  try {
    real = await realpath(criuPath);
  } catch (err) {
    throw new UserError(`cannot bundle CRIU ${criuPath}: ${errorMessage(err)}`);
  }
  const prefix = await prefixOf(real);
  const head = prefix ? undefined : (await readFile(real)).subarray(0, 4);
  if (!prefix && !head?.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
    throw new UserError(
      `cannot bundle CRIU ${criuPath}: neither a LazyFS prefix wrapper (scripts/setup.sh) nor an ELF binary`,
    );
  }
  const stage = await mkdtemp(join(cacheDir, ".stage-"));
  try {
    const hasNft = prefix
      ? await stageFromPrefix(prefix, stage)
      : await stageFromSystem(real, stage);
    await mkdir(join(stage, "bin"));
    for (const name of hasNft ? ["criu", "nft"] : ["criu"]) {
      await writeFile(join(stage, "bin", name), wrapperScript(name), { mode: 0o755 });
      await chmod(join(stage, "bin", name), 0o755);
    }
    const hash = await hashTree(stage);
    const tarball = join(cacheDir, `${hash}.tar.gz`);
    let version: string;
    try {
      version = await criuVersionOf(join(stage, "bin/criu"));
    } catch (err) {
      throw new UserError(`bundled CRIU from ${criuPath} does not run: ${errorMessage(err)}`);
    }
    const from = prefix ?? real;
    try {
      return { hash, tarball, bytes: (await stat(tarball)).size, version, hasNft, from };
    } catch {}
    const tmp = `${tarball}.tmp-${process.pid}`;
    await run(
      "tar",
      [
        ...["-C", stage, "--sort=name", "--owner=0", "--group=0", "--numeric-owner"],
        ...["--mtime=@0", "-czf", tmp, "."],
      ],
      { env: { ...process.env, GZIP: "-n" } },
    );
    await rename(tmp, tarball);
    return { hash, tarball, bytes: (await stat(tarball)).size, version, hasNft, from };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
