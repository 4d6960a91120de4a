/**
 * Security item 3: directories the user names for state (`--cache`, `rewrite --out`, the state
 * root) are refused unless root-owned and not group/world-writable; files in them are created
 * O_EXCL|O_NOFOLLOW (temp files of atomic writes included), so planted symlinks and files are
 * never followed or reused.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import { checkStateDir } from "../../src/common/private-files.js";
import { rewriteImages } from "../../src/criu/index.js";
import { Tree } from "../../src/lazy/index.js";
import { Store } from "../../src/store/index.js";
import { cli, makeDump, tempDir } from "./helpers.js";

const NOBODY = 65534;
const VICTIM_TEXT = "victim: must never change\n";

describe("state directories and the files in them", () => {
  let dir: string;
  let victim: string;

  before(() => {
    dir = tempDir("statedirs");
    victim = join(dir, "victim");
    writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  const refused = async (path: string, why: RegExp) =>
    assert.rejects(checkStateDir(path, "--cache"), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, why);
      assert.match(err.message, /must be root-owned and not writable by group or others/);
      return true;
    });

  test("a directory owned by another user, or group/world-writable, is refused", async () => {
    const theirs = join(dir, "theirs");
    mkdirSync(theirs, { mode: 0o700 });
    chownSync(theirs, NOBODY, NOBODY);
    await refused(theirs, /is owned by uid 65534, not root/);
    await refused(join(theirs, "cache"), /theirs is owned by uid 65534/);
    const open = join(dir, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    await refused(open, /is writable by its group \(mode 0777\)/);
    const sticky = join(dir, "sticky");
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    await refused(sticky, /writable/); // the directory itself: sticky is not enough
    await checkStateDir(join(sticky, "new-cache"), "--cache"); // below a sticky one: fine
    const link = join(dir, "link");
    symlinkSync(open, link);
    await refused(link, /open is writable/);
    await checkStateDir(join(dir, "fine"), "--cache");
  });

  test("the CLI refuses such a --cache and rewrite --out with one line, creating nothing", async () => {
    const state = join(dir, "state");
    mkdirSync(state, { mode: 0o700 });
    const open = join(dir, "open-cli");
    mkdirSync(open);
    chmodSync(open, 0o757);
    const env = { LAZYFS_STATE_DIR: state };
    const m = await cli(
      ["mount", "--images", dir, "--origin", "ssh://root@127.0.0.1:1", "--cache", open],
      { env },
    );
    assert.equal(m.code, 1, m.stderr);
    assert.match(
      m.stderr,
      /^lazyfs: --cache .*open-cli is writable by others \(mode 0757\);[^\n]*\n$/,
    );
    const r = await cli(["rewrite", "--id", "mnone", "--out", join(open, "out")], { env });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^lazyfs: --out [^\n]*open-cli is writable by others[^\n]*\n$/);
    assert.deepEqual(readdirSync(state), []);
    assert.deepEqual(readdirSync(open), []);
  });

  test("store: a planted store.json.tmp symlink is not followed", async () => {
    const cache = join(dir, "cache-tmp");
    mkdirSync(cache, { mode: 0o700 });
    symlinkSync(victim, join(cache, "store.json.tmp"));
    const store = await Store.open(cache, 65536);
    assert.equal(store.blockSize, 65536);
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    assert.deepEqual(JSON.parse(readFileSync(join(cache, "store.json"), "utf8")), {
      blockSize: 65536,
    });
    assert.equal(existsSync(join(cache, "store.json.tmp")), false);
  });

  test("store: planted block files (world-readable, or a symlink) are refused, not reused", async () => {
    const cache = join(dir, "cache-planted");
    const store = await Store.open(cache);
    const key = createHash("sha256").update("/srv/secret").digest("hex").slice(0, 32);
    const meta = {
      id: "/srv/secret",
      originPath: "/srv/secret",
      size: 100,
      mtimeMs: 0,
      mode: 0o100600,
      uid: 0,
      gid: 0,
      policy: "lazy" as const,
    };
    const data = join(cache, "files", `${key}.data`);
    writeFileSync(data, "", { mode: 0o644 });
    chmodSync(data, 0o644);
    await assert.rejects(
      store.openFile(meta, true),
      /accessible to others \(mode 0644\); refusing to reuse it/,
    );
    rmSync(data);
    symlinkSync(victim, data);
    await assert.rejects(store.openFile(meta, true), /is a symlink; refusing to reuse it/);
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    rmSync(data);
    const file = await store.openFile(meta, true);
    await file.close();
    assert.equal(lstatSync(data).mode & 0o777, 0o600);
  });

  test("tree journal: a planted tree.json.tmp or tree.log symlink is not followed", () => {
    const cache = join(dir, "cache-tree");
    mkdirSync(cache, { mode: 0o700 });
    symlinkSync(victim, join(cache, "tree.json.tmp"));
    const tree = new Tree({ files: [], dirs: [] }, cache);
    tree.sync();
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    const other = join(dir, "cache-tree2");
    mkdirSync(other, { mode: 0o700 });
    symlinkSync(victim, join(other, "tree.log"));
    assert.throws(() => new Tree({ files: [], dirs: [] }, other), /tree\.log is a symlink/);
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
  });

  test("rewrite --out: planted image names and temp files are replaced, never written through", async () => {
    const srcDir = join(dir, "dump-src");
    mkdirSync(srcDir);
    const src = await makeDump(srcDir);
    const out = join(dir, "out");
    mkdirSync(out, { mode: 0o700 });
    symlinkSync(victim, join(out, "files.img"));
    symlinkSync(victim, join(out, "inventory.img.tmp"));
    symlinkSync(victim, join(out, "pstree.img"));
    await rewriteImages(src, out, () => undefined);
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    for (const n of ["files.img", "inventory.img", "pstree.img"]) {
      assert.ok(lstatSync(join(out, n)).isFile(), n);
      assert.deepEqual(readFileSync(join(out, n)), readFileSync(join(src, n)), n);
    }
    assert.equal(existsSync(join(out, "inventory.img.tmp")), false);
  });
});
