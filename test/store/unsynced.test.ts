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

  test("a write in flight while a commit runs keeps an earlier acknowledged write's state", async () => {
    // The commit rewrites the log with what is still pending; a block an earlier write left
    // pending must stay there (or reach the state file) while a later write to it is in flight,
    // else a server killed at that moment leaves it absent and the origin's bytes replace it.
    // On tmpfs the commit's data sync costs nothing while the 64 MiB write takes milliseconds.
    const shm = fs.mkdtempSync("/dev/shm/unsynced-");
    try {
      const data = path.join(shm, "c.data");
      const state = path.join(shm, "c.state");
      const first = await BlockFile.open(data, state, BS, 4 * BS);
      const acknowledged = randomBytes(BS);
      await first.write(0, acknowledged);
      const inFlight = first.write(0, Buffer.alloc(64 << 20, 7));
      const killed = path.join(shm, "killed");
      await first.flush();
      // The server dies here: what a successor finds is these files as they are now.
      fs.mkdirSync(killed);
      for (const f of ["c.data", "c.state", "c.state.unsynced"]) {
        fs.copyFileSync(path.join(shm, f), path.join(killed, f));
      }
      await inFlight;
      await first.close();
      const second = await BlockFile.open(
        path.join(killed, "c.data"),
        path.join(killed, "c.state"),
        BS,
        4 * BS,
      );
      assert.equal(second.stateOf(0), DIRTY);
      await second.close();
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
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
