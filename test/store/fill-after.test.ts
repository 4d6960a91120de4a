/**
 * `fillAfter`: bytes whose origin read is still being verified are written to the data file at
 * once but recorded present only if the verification passes; a refused read leaves its blocks
 * absent (never served, fetched again), and blocks already local are never overwritten. And a
 * read racing a write (an appender and a reader of its file) sees the written bytes.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { ABSENT, BlockFile, DIRTY, PRESENT } from "../../src/store/blockfile.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fill-after-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const BS = 4096;

async function blockFile(name: string, size: number): Promise<BlockFile> {
  return BlockFile.open(path.join(dir, `${name}.data`), path.join(dir, `${name}.state`), BS, size);
}

describe("fill after verification", () => {
  test("recorded present only once the gate opens; a closed gate leaves the blocks absent", async () => {
    const f = await blockFile("gate", 4 * BS);
    const bytes = randomBytes(4 * BS);
    let open!: (ok: boolean) => void;
    const gate = new Promise<boolean>((r) => {
      open = r;
    });
    const filling = f.fillAfter(0, bytes.subarray(0, 2 * BS), gate);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(f.stateOf(0), ABSENT, "not recorded before the verdict");
    open(true);
    await filling;
    assert.equal(f.stateOf(0), PRESENT);
    assert.equal(f.stateOf(1), PRESENT);
    assert.deepEqual(await f.read(0, 2 * BS), bytes.subarray(0, 2 * BS));
    await f.fillAfter(2, bytes.subarray(2 * BS), Promise.resolve(false));
    assert.equal(f.stateOf(2), ABSENT, "a refused read is never recorded");
    assert.equal(f.stateOf(3), ABSENT);
    await f.close();
  });

  test("a read of a range being written waits for the bytes (never zeros past the old end)", async () => {
    const f = await blockFile("append", 0);
    const lines = randomBytes(64 * BS);
    for (let k = 0; k < 64; k++) {
      const writing = f.write(k * BS, lines.subarray(k * BS, (k + 1) * BS));
      // The size already says the new end: what is read up to it must be the new bytes.
      const got = await f.read(k * BS, BS);
      assert.deepEqual(got, lines.subarray(k * BS, (k + 1) * BS));
      await writing;
    }
    await f.close();
  });

  test("blocks written locally meanwhile are not overwritten", async () => {
    const f = await blockFile("local", 2 * BS);
    const mine = Buffer.alloc(BS, 7);
    await f.write(BS, mine);
    await f.fillAfter(0, randomBytes(2 * BS), Promise.resolve(true));
    assert.equal(f.stateOf(0), PRESENT);
    assert.equal(f.stateOf(1), DIRTY);
    assert.deepEqual(await f.read(BS, BS), mine);
    await f.close();
  });
});
