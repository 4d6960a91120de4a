/**
 * Writes nobody fsync'd survive the death of the server process (a failover) but not a reboot:
 * the block file's pending states are logged per boot (store/unsynced.ts). A second BlockFile
 * opened on the same files while the first never committed stands for the restarted server.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { ABSENT, BlockFile, DIRTY } from "../../src/store/blockfile.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "unsynced-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const BS = 4096;

describe("uncommitted block states", () => {
  test("a restarted process of the same boot sees every acknowledged write and the size", async () => {
    const data = path.join(dir, "a.data");
    const state = path.join(dir, "a.state");
    const first = await BlockFile.open(data, state, BS, 0);
    const bytes = randomBytes(5 * BS + 100);
    await first.write(0, bytes);
    await first.write(2 * BS + 7, Buffer.from("overwritten"));
    bytes.write("overwritten", 2 * BS + 7);
    // `first` dies here: nothing was committed to the state file.
    assert.equal(fs.readFileSync(state).readDoubleLE(8), 0);
    const second = await BlockFile.open(data, state, BS, 0);
    assert.equal(second.size, bytes.length);
    for (let i = 0; i < second.blocks; i++) assert.equal(second.stateOf(i), DIRTY);
    assert.deepEqual(await second.read(0, bytes.length), bytes);
    // Committed now: a third open finds the same without any log.
    assert.equal(fs.readFileSync(state).readDoubleLE(8), bytes.length);
    await second.close();
    assert.equal(fs.existsSync(`${state}.unsynced`), false);
  });

  test("after a reboot the log is ignored: the state file alone is the truth", async () => {
    const data = path.join(dir, "b.data");
    const state = path.join(dir, "b.state");
    const first = await BlockFile.open(data, state, BS, 3 * BS);
    await first.write(BS, randomBytes(BS));
    const log = fs.readFileSync(`${state}.unsynced`);
    log.write("00000000-0000-0000-0000-000000000000", 8, "latin1");
    fs.writeFileSync(`${state}.unsynced`, log);
    const second = await BlockFile.open(data, state, BS, 3 * BS);
    assert.equal(second.stateOf(1), ABSENT);
    await second.close();
  });
});
