/**
 * Kernel passthrough in LazyFS: a file that is fully local when it is opened (fetched whole,
 * or created here) is served by the kernel from the store's data file, the daemon sees no READ
 * or WRITE for it, and what was written through it (in place, appended, through a mapping)
 * is the file's content, size and mtime for the engine, after a restart from the cache too.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LocalOrigin } from "../../src/origin/index.js";
import { randomFile, sha256, tempDir } from "../engine/helpers.js";
import { py } from "../fuse/helpers.js";
import { type LazyFixture, mountLazy } from "./helpers.js";

const SIZE = 3 * 1024 * 1024 + 4321;

/** Reads a file whole (prints its sha256 and size). */
const READ = `import hashlib,os,sys
with open(sys.argv[1],"rb") as f: b=f.read()
print(hashlib.sha256(b).hexdigest(),len(b),os.stat(sys.argv[1]).st_size)`;

/** Writes in place, through a shared mapping and past the end; prints sha256 and size. */
const WRITE = `import hashlib,mmap,os,sys
p=sys.argv[1]
fd=os.open(p,os.O_RDWR)
os.pwrite(fd,b"in-place",1000)
m=mmap.mmap(fd,0); m[5:10]=b"MMAP!"; m.flush(); m.close()
os.lseek(fd,0,os.SEEK_END); os.write(fd,b"appended"*1000)
os.fsync(fd); os.close(fd)
with open(p,"rb") as f: b=f.read()
print(hashlib.sha256(b).hexdigest(),len(b),os.stat(p).st_size)`;

function written(orig: Buffer): Buffer {
  const b = Buffer.concat([orig, Buffer.from("appended".repeat(1000))]);
  b.write("in-place", 1000);
  b.write("MMAP!", 5);
  return b;
}

describe("LazyFS kernel passthrough", () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let originDir: string;
  let orig: Buffer;
  const fixtures: LazyFixture[] = [];
  const mountAt = async (name: string) => {
    const f = await mountLazy({
      mountpoint: join(tmp.dir, name),
      cacheDir: join(tmp.dir, "cache"),
      origin: new LocalOrigin(),
      spec: { files: [], dirs: [], lazyDirs: [{ targetPath: "/lazy", originPath: originDir }] },
    });
    fixtures.push(f);
    return f;
  };

  before(async () => {
    tmp = await tempDir("lazy-passthrough");
    originDir = join(tmp.dir, "origin");
    fs.mkdirSync(originDir);
    orig = await randomFile(join(originDir, "data.bin"), SIZE);
  });
  after(async () => {
    for (const f of fixtures) await f.close();
    await tmp.cleanup();
  });

  it("serves a fully local file by passthrough and keeps it correct after writes", async () => {
    const f = await mountAt("mnt1");
    assert.equal(f.mount.session.passthrough.enabled, true, f.mount.session.passthrough.reason);
    const p = join(f.mount.mountpoint, "lazy", "data.bin");
    // First open: blocks still on the origin, so the daemon serves (and fetches) them.
    const first = await py(READ, p);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.trim(), `${sha256(orig)} ${SIZE} ${SIZE}`);
    assert.equal(f.mount.session.passthrough.opens, 0);
    const readsBefore = f.mount.session.requestCounts().READ ?? 0;
    assert.ok(readsBefore > 0);
    const id = f.engine.status().files.find((x) => x.path.endsWith("data.bin"))!.id;
    assert.ok(f.engine.localDataPath(id), "fully local after the first read");
    const mtimeBefore = (await fs.promises.stat(p)).mtimeMs; // async: this process serves the mount

    // Now fully local: the kernel serves it.
    const second = await py(READ, p);
    assert.equal(second.stdout.trim(), `${sha256(orig)} ${SIZE} ${SIZE}`);
    const w = await py(WRITE, p);
    assert.equal(w.code, 0, w.stderr);
    let want = written(orig);
    assert.equal(w.stdout.trim(), `${sha256(want)} ${want.length} ${want.length}`);
    // A second open while the first one has appended (its size not yet known to the daemon)
    // must be passthrough too: the kernel refuses (EIO) anything else for that inode.
    const both = await py(
      `import os,sys
p=sys.argv[1]
a=os.open(p,os.O_WRONLY|os.O_APPEND); os.write(a,b"more")
with open(p,"rb") as f: b=f.read()
os.close(a)
print(len(b),b[-4:].decode())`,
      p,
    );
    assert.equal(both.code, 0, both.stderr);
    assert.equal(both.stdout.trim(), `${want.length + 4} more`);
    want = Buffer.concat([want, Buffer.from("more")]);
    const counts = f.mount.session.requestCounts();
    assert.equal(counts.READ ?? 0, readsBefore, "no READ reached the daemon");
    assert.equal(counts.WRITE ?? 0, 0, "no WRITE reached the daemon");
    assert.ok(f.mount.session.passthrough.opens >= 3);

    // The engine and the tree know what the kernel wrote.
    assert.equal(f.engine.size(id), want.length);
    assert.equal(sha256(await f.engine.read(id, 0, want.length + 10)), sha256(want));
    assert.ok(f.engine.status().files.find((x) => x.id === id)!.bytesDirty > 0);
    assert.ok((await fs.promises.stat(p)).mtimeMs > mtimeBefore, "mtime follows the writes");

    // A file created here is local from the start.
    const np = join(f.mount.mountpoint, "lazy", "new.bin");
    fs.writeFileSync(join(tmp.dir, "seed"), orig.subarray(0, 100_000));
    const c = await py(
      `import shutil,sys\nshutil.copyfile(sys.argv[1],sys.argv[2])`,
      join(tmp.dir, "seed"),
      np,
    );
    assert.equal(c.code, 0, c.stderr);
    assert.equal(
      f.mount.session.requestCounts().WRITE ?? 0,
      0,
      "created file written by the kernel",
    );
    const nr = await py(READ, np);
    assert.equal(nr.stdout.trim(), `${sha256(orig.subarray(0, 100_000))} 100000 100000`);
    await f.close();

    // After a restart from the cache: the same content, served by passthrough again.
    const g = await mountAt("mnt2");
    const again = await py(READ, join(g.mount.mountpoint, "lazy", "data.bin"));
    assert.equal(again.stdout.trim(), `${sha256(want)} ${want.length} ${want.length}`);
    const newAgain = await py(READ, join(g.mount.mountpoint, "lazy", "new.bin"));
    assert.equal(newAgain.stdout.trim(), `${sha256(orig.subarray(0, 100_000))} 100000 100000`);
    assert.equal(g.mount.session.requestCounts().READ ?? 0, 0);
    assert.equal(
      sha256(fs.readFileSync(join(originDir, "data.bin"))),
      sha256(orig),
      "origin untouched",
    );
  });
});
