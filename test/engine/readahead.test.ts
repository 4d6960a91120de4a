import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../../src/fetch/index.js";
import { Readahead } from "../../src/fetch/readahead.js";
import { LocalOrigin } from "../../src/origin/index.js";
import { DEFAULT_BLOCK_SIZE } from "../../src/store/index.js";
import { metaOf, RecordingOrigin, randomFile, rng, sha256, tempDir } from "./helpers.js";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("readahead windows", () => {
  const opts = { blockSize: 64 * KiB, maxWindow: 8 * MiB };

  it("random reads never read ahead", () => {
    const ra = new Readahead(opts);
    const rand = rng(7);
    for (let i = 0; i < 1000; i++) {
      const off = Math.floor(rand() * 16384) * 64 * KiB;
      assert.equal(ra.onRead(off, 64 * KiB, 1 << 30), undefined, `read ${i} @${off}`);
    }
  });

  it("a sequential stream starts small and doubles its window up to the maximum", () => {
    const ra = new Readahead(opts);
    const asked: { start: number; end: number }[] = [];
    let off = 0;
    for (; off < 64 * MiB; off += 128 * KiB) {
      const a = ra.onRead(off, 128 * KiB, 1 << 30);
      if (a) asked.push(a);
    }
    // Nothing before 512 KiB in order (a single large read(2) arrives as page-sized requests).
    assert.equal(asked[0]!.start, 512 * KiB, "first window once 512 KiB were read in order");
    assert.equal(asked[0]!.end - asked[0]!.start, 256 * KiB, "initial window 4 blocks");
    const sizes = asked.map((a) => a.end - a.start);
    assert.ok(Math.max(...sizes) <= 8 * MiB);
    assert.equal(ra.windowAt(off), 8 * MiB, "window reached the maximum");
    // Contiguous, never overlapping, and always ahead of the reader.
    for (let i = 1; i < asked.length; i++) assert.equal(asked[i]!.start, asked[i - 1]!.end);
    // Few large requests: 64 MiB of 128 KiB reads is 512 reads.
    assert.ok(asked.length < 30, `${asked.length} readahead requests`);
  });

  it("a random read resets: the next stream starts from the initial window again", () => {
    const ra = new Readahead({ ...opts, streams: 1 });
    for (let off = 0; off < 16 * MiB; off += 128 * KiB) ra.onRead(off, 128 * KiB, 1 << 30);
    assert.equal(ra.windowAt(16 * MiB), 8 * MiB);
    assert.equal(ra.onRead(500 * MiB, 128 * KiB, 1 << 30), undefined, "a jump is a new stream");
    assert.equal(ra.windowAt(16 * MiB), 0, "the old stream is gone");
    for (let k = 1; k < 3; k++)
      assert.equal(ra.onRead(500 * MiB + k * 128 * KiB, 128 * KiB, 1 << 30), undefined);
    assert.equal(ra.onRead(500 * MiB + 384 * KiB, 128 * KiB, 1 << 30)?.end, 500 * MiB + 768 * KiB);
  });

  it("keeps interleaved streams apart and clips to the file size", () => {
    const ra = new Readahead(opts);
    const size = 10 * MiB;
    let a = 0;
    let b = 5 * MiB;
    const ahead: { start: number; end: number }[] = [];
    for (let i = 0; i < 40; i++) {
      const x = ra.onRead(a, 128 * KiB, size);
      const y = ra.onRead(b, 128 * KiB, size);
      for (const r of [x, y]) if (r) ahead.push(r);
      a += 128 * KiB;
      b += 128 * KiB;
    }
    assert.ok(
      ahead.some((r) => r.start < 5 * MiB),
      "stream a reads ahead",
    );
    assert.ok(
      ahead.some((r) => r.start >= 5 * MiB),
      "stream b reads ahead",
    );
    assert.ok(ahead.every((r) => r.end <= size && r.start < r.end));
    assert.equal(ra.onRead(size - 128 * KiB, 128 * KiB, size), undefined);
  });

  it("page-sized requests of one 256 KiB read do not read ahead", () => {
    const ra = new Readahead(opts);
    for (let off = 0; off < 256 * KiB; off += 4 * KiB)
      assert.equal(ra.onRead(off, 4 * KiB, 1 << 30), undefined, `@${off}`);
  });

  it("re-reading the tail of the last block continues the stream", () => {
    const ra = new Readahead({ ...opts, triggerBytes: 128 * KiB });
    assert.equal(ra.onRead(0, 64 * KiB, 1 << 30), undefined);
    assert.deepEqual(ra.onRead(60 * KiB, 68 * KiB, 1 << 30), { start: 128 * KiB, end: 384 * KiB });
  });
});

describe("engine fetch sizes with default settings", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let data: Buffer;

  before(async () => {
    ({ dir, cleanup } = await tempDir("readahead"));
    src = join(dir, "origin.bin");
    data = await randomFile(src, 64 * MiB + 777);
  });
  after(() => cleanup());

  it("a sparse reader of 64 KiB pages moves what it reads (<= 1.2x)", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const engine = await Engine.open({ cacheDir: join(dir, "cache-sparse"), origin });
    await engine.addFile(await metaOf("f", src));
    const rand = rng(42);
    let read = 0;
    while (read < data.length / 20) {
      const off = Math.floor((rand() * (data.length - 64 * KiB)) / (64 * KiB)) * 64 * KiB;
      const got = await engine.read("f", off, 64 * KiB);
      assert.ok(got.equals(data.subarray(off, off + 64 * KiB)), `bytes @${off}`);
      read += got.length;
    }
    const fetched = engine.status().total.bytesFetched;
    assert.ok(fetched <= 1.2 * read, `fetched ${fetched} for ${read} read`);
    origin.assertNoOverlap(src);
    await engine.close();
  });

  it("a sequential reader is fetched in few large origin reads", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const engine = await Engine.open({ cacheDir: join(dir, "cache-seq"), origin });
    await engine.addFile(await metaOf("f", src));
    const parts: Buffer[] = [];
    for (let off = 0; off < data.length; off += 128 * KiB)
      parts.push(await engine.read("f", off, 128 * KiB));
    assert.equal(sha256(Buffer.concat(parts)), sha256(data));
    const blocks = Math.ceil(data.length / DEFAULT_BLOCK_SIZE);
    assert.ok(origin.reads.length < blocks / 16, `${origin.reads.length} reads, ${blocks} blocks`);
    assert.equal(engine.status().total.bytesFetched, data.length, "nothing fetched twice");
    await engine.close();
  });

  it("a cache made with 256 KiB blocks keeps them and resumes", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const cacheDir = join(dir, "cache-old");
    let engine = await Engine.open({ cacheDir, origin, blockSize: 256 * KiB });
    await engine.addFile(await metaOf("f", src));
    await engine.read("f", 3 * MiB + 5, 1000);
    await engine.close();
    assert.equal(
      JSON.parse(await readFile(join(cacheDir, "store.json"), "utf8")).blockSize,
      256 * KiB,
    );
    const fetchedBefore = origin.bytesRead(src);
    engine = await Engine.open({ cacheDir, origin }); // default block size asked for
    await engine.addFile(await metaOf("f", src));
    const got = await engine.read("f", 3 * MiB, 256 * KiB);
    assert.ok(got.equals(data.subarray(3 * MiB, 3 * MiB + 256 * KiB)));
    assert.equal(origin.bytesRead(src), fetchedBefore, "the old 256 KiB block is served locally");
    assert.equal(sha256(await engine.read("f", 0, data.length)), sha256(data));
    await engine.close();
  });

  it("a cache whose store.json records a bad block size is refused with one clear line", async () => {
    const cacheDir = join(dir, "cache-bad");
    const engine = await Engine.open({ cacheDir, origin: new LocalOrigin() });
    await engine.close();
    await writeFile(join(cacheDir, "store.json"), JSON.stringify({ blockSize: 1000 }));
    await assert.rejects(Engine.open({ cacheDir, origin: new LocalOrigin() }), (err: Error) => {
      assert.match(err.message, /store\.json records block size 1000/);
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  });
});
