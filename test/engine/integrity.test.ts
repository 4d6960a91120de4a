/**
 * The engine's origin integrity over a real sshd: a file changed after its first fetch is
 * refused for the bytes not yet local (the local ones are still served), the verdict survives
 * an engine restart, a file replaced by another with the same size and mtime is caught by its
 * inode and ctime, and allowChanged serves the new content and says so.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rename, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { UserError } from "../../src/common/errors.js";
import { Engine } from "../../src/fetch/index.js";
import { type SshdHandle, startSshd } from "../../src/hosts/sshd.js";
import type { FileMeta } from "../../src/store/index.js";
import { metaOf, randomFile, sftpOriginFor, tempDir } from "./helpers.js";

const BS = 64 * 1024;
const run = promisify(execFile);

let sshd: SshdHandle;
let dir: string;
let cleanup: () => Promise<void>;

/** metaOf with the inode and ctime a dump-time stat records. */
async function checkpointOf(id: string, path: string): Promise<FileMeta> {
  const st = await stat(path);
  return { ...(await metaOf(id, path)), ino: st.ino, ctimeMs: st.ctimeMs };
}

const refused = (err: unknown) => {
  assert.ok(err instanceof UserError, String(err));
  assert.match(err.message, /changed since the checkpoint/);
  return true;
};

describe("engine: origin integrity", () => {
  before(async () => {
    sshd = await startSshd();
    ({ dir, cleanup } = await tempDir("integrity"));
  });
  after(async () => {
    await sshd?.stop();
    await cleanup?.();
  });

  it("refuses what is not local once the file changed after its first fetch, also after a restart", async () => {
    const path = join(dir, "a.bin");
    const data = await randomFile(path, 16 * BS);
    const meta = await checkpointOf("a", path);
    const cacheDir = join(dir, "cache-a");
    const origin = sftpOriginFor(sshd);
    let engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    try {
      await engine.addFile(meta);
      assert.ok((await engine.read("a", 0, BS)).equals(data.subarray(0, BS)));
      const fh = Buffer.alloc(100, 1);
      await writeFile(
        path,
        Buffer.concat([data.subarray(0, 8 * BS), fh, data.subarray(8 * BS + 100)]),
      );
      await utimes(path, new Date(), new Date(meta.mtimeMs + 5000));
      await assert.rejects(engine.read("a", 8 * BS, BS), refused);
      assert.ok(
        (await engine.read("a", 0, BS)).equals(data.subarray(0, BS)),
        "local bytes still served",
      );
      const f = engine.status().files.find((x) => x.id === "a")!;
      assert.match(f.refused?.reason ?? "", /mtime/);
      assert.equal(f.refused?.offset, 8 * BS);
      assert.equal(engine.status().total.refusedFiles, 1);
    } finally {
      await engine.close();
    }
    engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    try {
      await engine.addFile(meta);
      assert.ok(engine.status().files.find((x) => x.id === "a")?.refused, "still refused");
      await assert.rejects(engine.read("a", 12 * BS, BS), refused);
      assert.ok((await engine.read("a", 0, BS)).equals(data.subarray(0, BS)));
    } finally {
      await engine.close();
      await origin.close();
    }
  });

  it("catches a file replaced by another of the same size and mtime (inode, ctime)", async () => {
    const path = join(dir, "b.bin");
    await randomFile(path, 4 * BS);
    const meta = await checkpointOf("b", path);
    const other = join(dir, "b.new");
    await randomFile(other, 4 * BS);
    await run("touch", ["-r", path, other]); // the same mtime to the nanosecond
    await rename(other, path);
    const origin = sftpOriginFor(sshd);
    const engine = await Engine.open({ cacheDir: join(dir, "cache-b"), origin, blockSize: BS });
    try {
      await engine.addFile(meta);
      await assert.rejects(engine.read("b", 0, BS), refused);
      assert.match(engine.status().files[0]!.refused?.reason ?? "", /inode|ctime/);
    } finally {
      await engine.close();
      await origin.close();
    }
  });

  it("allowChanged serves the new content and marks the file changed", async () => {
    const path = join(dir, "c.bin");
    await randomFile(path, 8 * BS);
    const meta = await checkpointOf("c", path);
    const now = await randomFile(path, 8 * BS);
    await utimes(path, new Date(), new Date(meta.mtimeMs + 5000));
    const origin = sftpOriginFor(sshd);
    const engine = await Engine.open({
      cacheDir: join(dir, "cache-c"),
      origin,
      blockSize: BS,
      allowChanged: true,
    });
    try {
      await engine.addFile(meta);
      assert.ok((await engine.read("c", 0, 8 * BS)).equals(now));
      const f = engine.status().files[0]!;
      assert.ok(f.changed, JSON.stringify(f));
      assert.equal(f.refused, undefined);
      assert.equal(engine.status().total.changedFiles, 1);
    } finally {
      await engine.close();
      await origin.close();
    }
  });
});
