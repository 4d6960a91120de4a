/**
 * Path rewriting in a copy of an images directory: the primitive behind `lazyfs rewrite`.
 *
 * Every file a task references goes through one file id: fdinfo entries (`id`), file-backed
 * VMAs (`shmid`), the executable (mm `exe_file_id`), cwd and root (fs-*.img `cwd_id` /
 * `root_id`), FIFOs and ttys (`regf_id`). All of those ids resolve to regular-file entries in
 * files.img (or in reg-files.img of older CRIU), so renaming the `name` of those entries is the
 * one place that moves all of them. Only `name` changes: size, mode, build-id and checksums stay,
 * so CRIU's restore-time validation still compares against the original file.
 *
 * Entries are edited at the wire level (wire.ts): every other byte of every image is copied
 * unchanged, including images and fields LazyFS does not know.
 */
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { normalizeAbsolute } from "../common/paths.js";
import { copyFileAtomic, writeFileAtomic } from "../common/private-files.js";
import { type CriuImage, decodeEntry, encodeImage, readImage } from "./image.js";
import { FD_KINDS } from "./model.js";
import { removeField, spliceBytesField } from "./wire.js";

/** What the callback learns about a regular-file entry. */
export interface RegFileInfo {
  id: number;
  /** fd_types name of the files.img entry ("reg"; legacy reg-files.img entries are "reg"). */
  kind: string;
  size?: number;
  mode?: number;
  flags: number;
  image: "files.img" | "reg-files.img";
}

/**
 * What to do with one entry: a new path (string), `{ name?, dropSize? }`, or undefined to keep
 * it as it is. `dropSize` removes the recorded size, so that CRIU's restore-time size check
 * accepts a file that keeps growing on the origin (policy remote).
 */
export type RewritePath = (
  path: string,
  entry: RegFileInfo,
) => string | { name?: string; dropSize?: boolean } | undefined;

export interface RewriteChange {
  image: string;
  id: number;
  from: string;
  to: string;
}

const FILE_ENTRY_REG = 3; // file_entry.reg
const REG_NAME = 6; // reg_file_entry.name
const REG_SIZE = 8; // reg_file_entry.size

const num = (v: unknown) => (typeof v === "number" ? v : 0);

function info(reg: Record<string, unknown>, kind: string, image: RegFileInfo["image"]) {
  const i: RegFileInfo = { id: num(reg.id), kind, flags: num(reg.flags), image };
  if (typeof reg.size === "number") i.size = reg.size;
  if (typeof reg.mode === "number") i.mode = reg.mode;
  return i;
}

/**
 * Rename regular-file entries of a parsed files.img or reg-files.img in place; returns the
 * changes. Other images are left alone.
 */
export function rewriteImage(image: CriuImage, rewrite: RewritePath): RewriteChange[] {
  const changes: RewriteChange[] = [];
  const kind = image.kind?.name;
  if (kind !== "FILES" && kind !== "REG_FILES") return changes;
  const imageName = kind === "FILES" ? "files.img" : "reg-files.img";
  image.entries.forEach((entry, index) => {
    const decoded = decodeEntry(image, index);
    const reg =
      kind === "FILES"
        ? (decoded.reg as Record<string, unknown> | undefined)
        : (decoded as Record<string, unknown>);
    if (!reg) return;
    const fdKind = kind === "FILES" ? (FD_KINDS[num(decoded.type)] ?? "und") : "reg";
    // The callback sees the name with `.`/`..` resolved (as inspect and plan do), and a name
    // that had them is written back resolved, so that no `..` reaches out of a served tree.
    const raw = String(reg.name);
    const from = normalizeAbsolute(raw);
    const verdict = rewrite(from, info(reg, fdKind, imageName));
    const to = (typeof verdict === "string" ? verdict : verdict?.name) ?? from;
    const dropSize = typeof verdict === "object" && verdict.dropSize === true;
    const rename = to !== raw;
    if (!rename && !dropSize) return;
    const edit = (r: Uint8Array) => {
      const named = rename ? spliceBytesField(r, REG_NAME, () => Buffer.from(to)) : r;
      return dropSize ? removeField(named, REG_SIZE) : named;
    };
    entry.payload =
      kind === "FILES"
        ? spliceBytesField(entry.payload, FILE_ENTRY_REG, edit)
        : edit(entry.payload);
    changes.push({ image: imageName, id: num(reg.id), from: raw, to });
  });
  return changes;
}

/**
 * Copy the images directory `srcDir` to `dstDir` (created if needed), renaming the regular
 * files for which `rewrite` returns a new path. Every other file is copied byte for byte.
 */
export async function rewriteImages(
  srcDir: string,
  dstDir: string,
  rewrite: RewritePath,
): Promise<RewriteChange[]> {
  await mkdir(dstDir, { recursive: true });
  const changes: RewriteChange[] = [];
  for (const ent of await readdir(srcDir, { withFileTypes: true })) {
    if (!ent.isFile()) continue;
    const src = join(srcDir, ent.name);
    const dst = join(dstDir, ent.name);
    if (ent.name === "files.img" || ent.name === "reg-files.img") {
      const image = await readImage(src);
      changes.push(...rewriteImage(image, rewrite));
      await writeFileAtomic(dst, encodeImage(image));
    } else {
      await copyFileAtomic(src, dst);
    }
  }
  return changes;
}
