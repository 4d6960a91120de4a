/** Reading an access log: filters (glob as in --policy, op, pid), time order, following it. */
import assert from "node:assert/strict";
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { followAccessLog, readAccessLog } from "../../src/daemon/index.js";
import type { AccessRecord } from "../../src/lazy/index.js";

let dir: string;
const rec = (t: number, pid: number, op: string, path: string): AccessRecord => ({
  t,
  pid,
  op,
  path,
  count: 1,
  lastT: t,
});
const lines = (rs: AccessRecord[]) => rs.map((r) => `${JSON.stringify(r)}\n`).join("");

describe("access log reader", { timeout: 20_000 }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lazyfs-log-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("filters by glob, op and pid, in time order; a torn last line waits", async () => {
    const file = join(dir, "a.jsonl");
    await writeFile(
      file,
      `${lines([
        rec(3, 7, "read", "/srv/data/b.bin"),
        rec(1, 7, "read", "/srv/data/a.txt"),
        rec(2, 8, "open", "/srv/data/a.txt"),
        rec(4, 7, "read", "/etc/a.txt"),
      ])}{"t":5,"pid":7,`,
    );
    const all = await readAccessLog(file);
    assert.deepEqual(
      all.map((r) => r.t),
      [1, 2, 3, 4],
    );
    const txt = await readAccessLog(file, { path: "*.txt" });
    assert.deepEqual(
      txt.map((r) => r.path),
      ["/srv/data/a.txt", "/srv/data/a.txt", "/etc/a.txt"],
    );
    const under = await readAccessLog(file, { path: "/srv/**" });
    assert.equal(under.length, 3);
    const reads7 = await readAccessLog(file, { op: "read", pid: 7, path: "/srv/data/*" });
    assert.deepEqual(
      reads7.map((r) => r.t),
      [1, 3],
    );
    assert.deepEqual(await readAccessLog(join(dir, "none.jsonl")), []);
    await writeFile(join(dir, "bad.jsonl"), "not json\n");
    await assert.rejects(
      readAccessLog(join(dir, "bad.jsonl")),
      /bad\.jsonl:1: not an access log record/,
    );
  });

  test("--follow sees records appended later, a line split across writes once", async () => {
    const file = join(dir, "f.jsonl");
    await writeFile(file, lines([rec(1, 1, "read", "/x")]));
    const seen: AccessRecord[] = [];
    const stop = new AbortController();
    const following = followAccessLog(
      file,
      0,
      { op: "read" },
      (rs) => seen.push(...rs),
      stop.signal,
      20,
    );
    const line = JSON.stringify(rec(2, 1, "read", "/y"));
    await appendFile(file, `${JSON.stringify(rec(2, 1, "open", "/y"))}\n${line.slice(0, 10)}`);
    await new Promise((r) => setTimeout(r, 100));
    await appendFile(file, `${line.slice(10)}\n`);
    while (seen.length < 2) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    await following;
    assert.deepEqual(
      seen.map((r) => [r.op, r.path]),
      [
        ["read", "/x"],
        ["read", "/y"],
      ],
    );
  });
});
