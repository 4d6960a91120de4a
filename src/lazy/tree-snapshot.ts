/**
 * A read-only snapshot of a migration's LazyFS tree, taken from the journal in its cache
 * (lazy/journal.ts) without disturbing a daemon that may still be serving it: the journal's
 * files are read, written to a private temporary directory and replayed there. Detach materialises
 * the tree from it; a chained migration reads the tree of the host it migrates from.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errnoCode } from "../common/errors.js";
import { type Node, ROOT_INO } from "./nodes.js";
import { Tree } from "./tree.js";

/** One name in the tree, with its path as the restored process sees it (below the mount). */
export interface TreeEntry {
  path: string;
  node: Node;
}

export const JOURNAL_FILES = ["tree.json", "tree.log"] as const;

/** Every name of the tree, parents before children (a node with several names appears so). */
export function walkTree(tree: Tree): TreeEntry[] {
  const root = tree.get(ROOT_INO);
  if (!root) return [];
  const out: TreeEntry[] = [{ path: "/", node: root }];
  for (let i = 0; i < out.length; i++) {
    const { path, node } = out[i]!;
    if (!node.entries) continue;
    for (const [name, ino] of [...node.entries].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const child = ino === 0 ? undefined : tree.get(ino);
      if (child) out.push({ path: path === "/" ? `/${name}` : `${path}/${name}`, node: child });
    }
  }
  return out;
}

/** Replays a journal given as file contents (absent files: an empty tree). */
export async function treeFromJournal(
  files: Partial<Record<(typeof JOURNAL_FILES)[number], Buffer>>,
): Promise<TreeEntry[]> {
  const dir = await mkdtemp(join(tmpdir(), "lazyfs-tree-"));
  try {
    for (const name of JOURNAL_FILES) {
      const data = files[name];
      if (data) await writeFile(join(dir, name), data, { mode: 0o600 });
    }
    const tree = new Tree({ files: [], dirs: [] }, dir);
    const entries = walkTree(tree);
    tree.close();
    return entries;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The tree journaled in a local cache directory, as it is now. */
export async function snapshotTree(cacheDir: string): Promise<TreeEntry[]> {
  const files: Partial<Record<(typeof JOURNAL_FILES)[number], Buffer>> = {};
  for (const name of JOURNAL_FILES) {
    files[name] = await readFile(join(cacheDir, name)).catch((err) => {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    });
  }
  return treeFromJournal(files);
}
