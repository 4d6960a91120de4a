import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { promisify } from "node:util";
import { UserError } from "../common/errors.js";

const run = promisify(execFile);

interface SpecMount {
  destination?: string;
  source?: string;
}

/**
 * Rewrites the checkpoint's `spec.dump` (the OCI spec podman restores from, volumes' paths
 * included as they were on the origin) so that each of `sources` is found under `mountpoint`,
 * where LazyFS serves it. Resolves with how many mounts changed.
 */
export async function rewriteSpecMounts(
  dir: string,
  mountpoint: string,
  sources: readonly string[],
): Promise<number> {
  const path = join(dir, "spec.dump");
  const spec = JSON.parse(await readFile(path, "utf8")) as { mounts?: SpecMount[] };
  let changed = 0;
  for (const m of spec.mounts ?? []) {
    if (m.source && sources.includes(m.source)) {
      m.source = posix.join(mountpoint, m.source);
      changed++;
    }
  }
  await writeFile(path, JSON.stringify(spec));
  return changed;
}

/** Unpacks a checkpoint archive (uncompressed tar, as `--compress none` writes it). */
export async function unpackArchive(archive: string, dir: string): Promise<void> {
  try {
    await run("tar", ["-xf", archive, "-C", dir]);
  } catch (err) {
    throw new UserError(`cannot unpack the checkpoint archive ${archive}: ${tarError(err)}`);
  }
  await readFile(join(dir, "spec.dump")).catch(() => {
    throw new UserError(`${archive}: not a podman checkpoint archive (no spec.dump)`);
  });
}

/** Packs `dir` back into an archive `podman container restore --import` reads. */
export async function packArchive(dir: string, archive: string): Promise<void> {
  try {
    await run("tar", ["-cf", archive, "-C", dir, "."]);
  } catch (err) {
    throw new UserError(`cannot write the checkpoint archive ${archive}: ${tarError(err)}`);
  }
}

function tarError(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr?.trim().split("\n").pop() ?? e.message ?? String(err)).trim();
}
