import assert from "node:assert/strict";
import { readFile, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UserError } from "../../src/common/errors.js";
import { Engine, resolvePolicy } from "../../src/fetch/index.js";
import { LocalOrigin, ScrubOrigin, seededBytes } from "../../src/origin/index.js";
import {
  concurrentRandomReads,
  metaOf,
  RecordingOrigin,
  randomFile,
  sha256,
  tempDir,
} from "./helpers.js";

const BS = 64 * 1024;

describe("engine with a local origin", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let data: Buffer;

  before(async () => {
    ({ dir, cleanup } = await tempDir("engine"));
    src = join(dir, "origin.bin");
    data = await randomFile(src, 8 * 1024 * 1024 + 12345);
  });
  after(() => cleanup());

  it("serves 32 concurrent random readers, fetching every block once, and resumes after reopen", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const cacheDir = join(dir, "cache1");
    let engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    await engine.addFile(await metaOf("f", src));
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700);
    await concurrentRandomReads((o, l) => engine.read("f", o, l), data);
    origin.assertNoOverlap(src);
    const whole = await engine.read("f", 0, data.length + 100);
    assert.equal(sha256(whole), sha256(data));
    origin.assertNoOverlap(src);
    assert.equal(origin.bytesRead(src), data.length);
    const st = engine.status();
    assert.equal(st.total.bytesFetched, data.length);
    assert.equal(st.total.bytesOnOrigin, 0);
    assert.equal(st.independent, true);
    await engine.close();

    const before = origin.reads.length;
    engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    await engine.addFile(await metaOf("f", src)); // same checkpoint: a no-op
    assert.equal(sha256(await engine.read("f", 0, data.length)), sha256(data));
    assert.equal(origin.reads.length, before, "nothing fetched again after reopen");
    await engine.close();
  });

  it("coalesces a sequential reader into few large origin reads", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const engine = await Engine.open({ cacheDir: join(dir, "cache-seq"), origin, blockSize: BS });
    await engine.addFile(await metaOf("f", src));
    for (let off = 0; off < data.length; off += 32 * 1024) {
      const got = await engine.read("f", off, 32 * 1024);
      assert.ok(got.equals(data.subarray(off, off + 32 * 1024)));
    }
    const blocks = Math.ceil(data.length / BS);
    assert.ok(
      origin.reads.length < blocks / 4,
      `${origin.reads.length} reads for ${blocks} blocks`,
    );
    origin.assertNoOverlap(src);
    await engine.close();
  });

  it("writes: whole blocks need no fetch, partial blocks fetch first; truncate and extend", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const cacheDir = join(dir, "cache-w");
    let engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    await engine.addFile(await metaOf("f", src));
    const expected = Buffer.from(data);

    const whole = Buffer.alloc(2 * BS, 0xab);
    await engine.write("f", 4 * BS, whole);
    whole.copy(expected, 4 * BS);
    assert.equal(origin.reads.length, 0, "whole-block write fetched nothing");

    const part = Buffer.alloc(100, 0xcd);
    await engine.write("f", 10 * BS + 7, part);
    part.copy(expected, 10 * BS + 7);
    assert.deepEqual(
      origin.reads.map((r) => [r.offset, r.length]),
      [[10 * BS, BS]],
    );
    assert.ok((await engine.read("f", 10 * BS, BS)).equals(expected.subarray(10 * BS, 11 * BS)));

    // Shrink into the middle of an absent block, then extend: the tail reads as zeros.
    const cut = 20 * BS + 1000;
    await engine.truncate("f", cut);
    assert.equal(engine.size("f"), cut);
    await engine.truncate("f", cut + 3 * BS);
    const grown = Buffer.concat([expected.subarray(0, cut), Buffer.alloc(3 * BS)]);
    // Write past the end extends the file.
    const tail = Buffer.alloc(10, 0xee);
    await engine.write("f", grown.length + 5, tail);
    const final = Buffer.concat([grown, Buffer.alloc(5), tail]);
    assert.equal(engine.size("f"), final.length);
    await engine.fsync("f");
    assert.equal(sha256(await engine.read("f", 0, final.length)), sha256(final));
    const st = engine.status().files[0]!;
    assert.ok(st.bytesDirty >= 2 * BS);
    await engine.close();

    engine = await Engine.open({ cacheDir, origin, blockSize: BS });
    assert.equal(engine.size("f"), final.length);
    assert.equal(sha256(await engine.read("f", 0, final.length)), sha256(final));
    await engine.close();
  });

  it("refuses a file changed on the origin since the checkpoint unless allowed", async () => {
    const path = join(dir, "changing.bin");
    const orig = await randomFile(path, 300_000);
    const meta = await metaOf("c", path);
    await writeFile(path, Buffer.concat([orig, Buffer.from("more")]));
    await utimes(path, new Date(), new Date(Date.now() + 5000));
    const origin = new LocalOrigin();
    const engine = await Engine.open({ cacheDir: join(dir, "cache-c"), origin, blockSize: BS });
    await engine.addFile(meta);
    await assert.rejects(engine.read("c", 0, 10), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(
        err.message,
        /changing\.bin on local:\/ changed since the checkpoint: size 300000 -> 300004/,
      );
      return true;
    });
    await engine.close();
    const lenient = await Engine.open({
      cacheDir: join(dir, "cache-c2"),
      origin,
      blockSize: BS,
      allowChanged: true,
    });
    await lenient.addFile(meta);
    assert.ok((await lenient.read("c", 0, 1000)).equals(orig.subarray(0, 1000)));
    await lenient.close();
  });

  it("keeps a bandwidth cap within 10%", async () => {
    const cap = 4 * 1024 * 1024;
    const engine = await Engine.open({
      cacheDir: join(dir, "cache-bw"),
      origin: new LocalOrigin(),
      blockSize: BS,
      bwlimitBytesPerSec: cap,
      maxRunBytes: 256 * 1024,
    });
    await engine.addFile(await metaOf("f", src));
    const n = data.length; // 8 MiB: two seconds at the cap
    const t0 = performance.now();
    const got = await engine.read("f", 0, n);
    const secs = (performance.now() - t0) / 1000;
    assert.equal(sha256(got), sha256(data.subarray(0, n)));
    const rate = engine.status().total.bytesFetched / secs;
    assert.ok(Math.abs(rate - cap) / cap <= 0.1, `rate ${Math.round(rate)} B/s vs cap ${cap}`);
    await engine.close();
  });

  it("prefetches in the background and reports becoming independent of the origin", async () => {
    for (const mode of ["immediate", "delay", "idle"] as const) {
      const engine = await Engine.open({
        cacheDir: join(dir, `cache-pf-${mode}`),
        origin: new LocalOrigin(),
        blockSize: BS,
        prefetch: { mode, delayMs: 50, idleMs: 50 },
      });
      const independent = new Promise<void>((r) => engine.once("independent", () => r()));
      await engine.addFile(await metaOf("f", src));
      if (mode === "idle") assert.ok((await engine.read("f", 0, 10)).equals(data.subarray(0, 10)));
      await independent;
      const st = engine.status();
      assert.equal(st.total.bytesOnOrigin, 0);
      assert.equal(st.total.bytesFetched, data.length);
      await engine.close();
    }
    // eager policy: fetched whole in the background without a prefetch schedule.
    const engine = await Engine.open({
      cacheDir: join(dir, "cache-eager"),
      origin: new LocalOrigin(),
      blockSize: BS,
    });
    await engine.addFile(await metaOf("e", src, "eager"));
    await engine.whenIndependent();
    assert.equal(engine.status().files[0]!.bytesLocal, data.length);
    await engine.close();
  });

  it("remote policy reads and writes the origin; scrub never reads it; local uses the target's copy", async () => {
    const rpath = join(dir, "remote.bin");
    const rdata = await randomFile(rpath, 200_000);
    const origin = new RecordingOrigin(new LocalOrigin());
    const engine = await Engine.open({
      cacheDir: join(dir, "cache-pol"),
      origin,
      blockSize: BS,
      scrub: new ScrubOrigin({ kind: "random", seed: "s1" }, origin),
    });
    await engine.addFile(await metaOf("r", rpath, "remote"));
    assert.ok((await engine.read("r", 10, 100)).equals(rdata.subarray(10, 110)));
    await engine.write("r", 0, Buffer.from("hello"));
    assert.equal((await readFile(rpath)).subarray(0, 5).toString(), "hello");
    assert.ok((await engine.read("r", 0, 5)).equals(Buffer.from("hello")));

    await engine.addFile(await metaOf("s", src, "scrub"));
    const readsBefore = origin.reads.length;
    const scrubbed = await engine.read("s", 1000, 5000);
    assert.ok(scrubbed.equals(seededBytes("s1", src, 1000, 5000)));
    assert.equal(origin.reads.length, readsBefore, "scrub read nothing from the origin");

    const copy = join(dir, "local-copy.bin");
    await writeFile(copy, data);
    const st = await stat(src);
    await utimes(copy, st.atime, st.mtime);
    await engine.addFile({ ...(await metaOf("l", src, "local")), localPath: copy });
    assert.equal(sha256(await engine.read("l", 0, data.length)), sha256(data));
    assert.equal(origin.reads.length, readsBefore, "local copy used, origin untouched");
    assert.equal(engine.status().files.find((f) => f.id === "l")!.bytesOnOrigin, 0);
    await engine.close();
  });

  it("resolves policies by glob, first match wins", () => {
    const rules = [
      { glob: "/var/log/**", policy: "remote" as const },
      { glob: "*.{key,pem}", policy: "scrub" as const },
      { glob: "/usr/lib/**/*.so*", policy: "local" as const },
      { glob: "/data/big?.bin", policy: "eager" as const },
    ];
    assert.equal(resolvePolicy("/var/log/app/x.log", rules), "remote");
    assert.equal(resolvePolicy("/etc/ssl/server.key", rules), "scrub");
    assert.equal(resolvePolicy("/usr/lib/x86_64-linux-gnu/libc.so.6", rules), "local");
    assert.equal(resolvePolicy("/usr/lib/libz.so", rules), "local");
    assert.equal(resolvePolicy("/data/big1.bin", rules), "eager");
    assert.equal(resolvePolicy("/data/big12.bin", rules), "lazy");
    assert.equal(resolvePolicy("/home/u/notes.txt", rules), "lazy");
    assert.throws(() => resolvePolicy("/x", [{ glob: "[a", policy: "lazy" }]), UserError);
  });
});
