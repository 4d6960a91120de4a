/**
 * Security item 2: dump paths with `.`/`..` components are normalised and `..` never leaves
 * the served tree. Pure parts (normalisation, the tree) as unit tests; then a real dump whose
 * files.img names `<dir>/x/../../../../etc/hostname` and `<dir>/./sub/../data.txt`: the model
 * (what inspect and plan see) holds the resolved paths, and a rewrite into a mount point
 * writes names inside it, never a `..`.
 */
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { componentProblem, isEntryName, normalizeAbsolute } from "../../src/common/paths.js";
import {
  decodeEntries,
  encodeImage,
  loadDump,
  readImage,
  rewriteImage,
} from "../../src/criu/index.js";
import { ROOT_INO, Tree } from "../../src/lazy/index.js";
import { makeDump, tempDir } from "./helpers.js";

describe("dump paths with . and .. components", () => {
  test("normalizeAbsolute resolves . and .. lexically and never climbs above /", () => {
    assert.equal(normalizeAbsolute("/a/x/../../../etc/hostname"), "/etc/hostname");
    assert.equal(normalizeAbsolute("/../../.."), "/");
    assert.equal(normalizeAbsolute("/a/./b//c/"), "/a/b/c");
    assert.equal(normalizeAbsolute("pipe:[123]"), "pipe:[123]");
  });

  test("single components: names with / . .. NUL or control characters are refused", () => {
    for (const bad of ["", ".", "..", "a/b", "../x", "a\0b", "a\nb", "\x1b[2J"]) {
      assert.notEqual(componentProblem(bad), undefined, JSON.stringify(bad));
    }
    assert.equal(componentProblem("core-1.img"), undefined);
    assert.equal(isEntryName("new\nline.txt"), true, "a legal Linux name in a listing");
    assert.equal(isEntryName(".."), false);
    assert.equal(isEntryName("a/b"), false);
  });

  test("the tree never gets a node named .. or .", () => {
    const attrs = { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0, policy: "lazy" as const };
    const tree = new Tree({
      files: [
        { ...attrs, targetPath: "/srv/x/../../../etc/passwd", type: "file", size: 1, served: true },
        { ...attrs, targetPath: "/srv/./a/../b/f", type: "file", size: 1, served: true },
      ],
      dirs: [{ path: "/srv/../../d", mode: 0o755, uid: 0, gid: 0, mtimeMs: 0 }],
    } as never);
    const names: string[] = [];
    const walk = (ino: number, at: string) => {
      const n = tree.get(ino)!;
      for (const [name, child] of n.entries ?? []) {
        names.push(`${at}/${name}`);
        if (child) walk(child, `${at}/${name}`);
      }
    };
    walk(ROOT_INO, "");
    assert.deepEqual(names.sort(), ["/d", "/etc", "/etc/passwd", "/srv", "/srv/b", "/srv/b/f"]);
  });

  describe("a real dump with crafted names", () => {
    let dir: string;
    let images: string;
    let crafted: Map<string, string>;

    before(async () => {
      dir = tempDir("dotdot");
      images = await makeDump(dir);
      // Rename the dumped file's entry (and keep the others) to crafted names.
      const files = await readImage(join(images, "files.img"));
      const data = join(dir, "data.txt");
      crafted = new Map([[data, `${dir}/./sub/../x/../../${dir.split("/").pop()}/data.txt`]]);
      rewriteImage(files, (p) => crafted.get(p));
      // and one more entry pointing out of any tree
      const first = decodeEntries(files).findIndex((e) => e.reg !== undefined);
      assert.ok(first >= 0);
      rewriteImage(files, (p, e) =>
        e.id === (decodeEntries(files)[first]!.reg as { id: number }).id && !crafted.has(p)
          ? `${dir}/x/../../../../../../../../etc/hostname`
          : undefined,
      );
      writeFileSync(join(images, "files.img"), encodeImage(files));
    });

    after(() => rmSync(dir, { recursive: true, force: true }));

    test("the model (inspect, plan) holds resolved paths only", async () => {
      const model = await loadDump(images);
      const paths = [
        ...model.files.map((f) => f.path),
        ...model.tasks.flatMap((t) => [
          ...t.fds.map((f) => f.path ?? ""),
          ...t.mappings.map((m) => m.path),
        ]),
      ];
      assert.ok(paths.includes(join(dir, "data.txt")), paths.join(" "));
      for (const p of paths) assert.doesNotMatch(p, /(^|\/)\.\.?(\/|$)/, p);
    });

    test("a rewrite into a mount point keeps every name inside it", async () => {
      const files = await readImage(join(images, "files.img"));
      const mount = "/lazyfs/mtest";
      const changes = rewriteImage(files, (p) => `${mount}${p}`);
      assert.ok(changes.length > 0);
      for (const e of decodeEntries(files)) {
        const name = (e.reg as { name?: string } | undefined)?.name;
        if (name === undefined) continue;
        assert.ok(name.startsWith(`${mount}/`), name);
        assert.doesNotMatch(name, /\/\.\.?(\/|$)/, name);
      }
      const names = changes.map((c) => c.to);
      assert.ok(names.includes(`${mount}/etc/hostname`), names.join(" "));
      assert.ok(names.includes(`${mount}${dir}/data.txt`), names.join(" "));
    });
  });
});
