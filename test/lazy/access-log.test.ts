/** The access log's coalescing and its bounded writer, on a real file. */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AccessLog, type AccessRecord } from "../../src/lazy/index.js";

let dir: string;

async function records(file: string): Promise<AccessRecord[]> {
  const text = await readFile(file, "utf8");
  return text
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as AccessRecord);
}

describe("access log", () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lazyfs-access-log-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a sequential run is one record; interleaved files keep their own runs", async () => {
    const file = join(dir, "seq.jsonl");
    const log = await AccessLog.open(file, { windowMs: 60_000 });
    const t0 = 1_000_000;
    for (let i = 0; i < 1000; i++) {
      log.add(t0 + i, 42, "read", "/a", i * 4096, 4096, "store", undefined);
      log.add(t0 + i, 42, "read", "/b", i * 8192, 8192, "store", undefined);
    }
    log.add(t0 + 2000, 42, "getattr", "/a", undefined, undefined, undefined, undefined);
    log.add(t0 + 2001, 42, "getattr", "/a", undefined, undefined, undefined, undefined);
    await log.close();
    const recs = await records(file);
    assert.deepEqual(
      recs.map((r) => [r.path, r.op, r.offset, r.length, r.count, r.t, r.lastT]),
      [
        ["/a", "read", 0, 4096 * 1000, 1000, t0, t0 + 999],
        ["/b", "read", 0, 8192 * 1000, 1000, t0, t0 + 999],
        ["/a", "getattr", undefined, undefined, 2, t0 + 2000, t0 + 2001],
      ],
    );
    assert.deepEqual(log.figures(), { file, records: 3, requests: 2002, dropped: 0 });
  });

  test("a gap, a jump, another source, another pid or an error start a new record", async () => {
    const file = join(dir, "breaks.jsonl");
    const log = await AccessLog.open(file, { windowMs: 100 });
    const t = 5_000_000;
    log.add(t, 1, "read", "/f", 0, 100, "origin", undefined);
    log.add(t + 1, 1, "read", "/f", 100, 100, "origin", undefined); // joins
    log.add(t + 500, 1, "read", "/f", 200, 100, "origin", undefined); // too late
    log.add(t + 501, 1, "read", "/f", 1000, 100, "origin", undefined); // not contiguous
    log.add(t + 502, 1, "read", "/f", 1100, 100, "store", undefined); // another source
    log.add(t + 503, 2, "read", "/f", 1200, 100, "store", undefined); // another pid
    log.add(t + 504, 1, "read", "/f", 1200, 100, "store", "EIO"); // failed
    await log.close();
    const recs = await records(file);
    assert.deepEqual(
      recs.map((r) => [r.pid, r.offset, r.length, r.source, r.error, r.count]),
      [
        [1, 0, 200, "origin", undefined, 2],
        [1, 200, 100, "origin", undefined, 1],
        [1, 1000, 100, "origin", undefined, 1],
        [1, 1100, 100, "store", undefined, 1],
        [2, 1200, 100, "store", undefined, 1],
        [1, 1200, 100, "store", "EIO", 1],
      ],
    );
  });

  test("when the writer falls behind, records are dropped, counted and reported", async () => {
    const file = join(dir, "drop.jsonl");
    const log = await AccessLog.open(file, { windowMs: 60_000, maxPendingBytes: 1000 });
    // Every request jumps: each closes the previous record, all in one tick (no I/O yet).
    for (let i = 0; i < 200; i++)
      log.add(7_000_000 + i, 3, "read", "/x", i * 10_000, 10, "store", undefined);
    await log.close();
    const f = log.figures();
    assert.ok(f.dropped > 0, "some were dropped");
    assert.equal(f.records + f.dropped, 200);
    const recs = await records(file);
    const reads = recs.filter((r) => r.op === "read");
    assert.equal(reads.length, f.records);
    const dropped = recs.filter((r) => r.op === "dropped");
    assert.equal(
      dropped.reduce((n, r) => n + (r.count ?? 0), 0),
      f.dropped,
      "the log says how many are missing",
    );
  });
});
