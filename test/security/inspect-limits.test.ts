/**
 * Security item 5: `inspect` and the image codec read regular files only (a FIFO, a symlink to
 * /dev/zero: one line, no hang), with bounded sizes (MAX_IMAGE_BYTES per image, only the head
 * of each *.log) and bounded entry counts (MAX_IMAGE_ENTRIES, MAX_TASKS, a task repeated 40,000
 * times in pstree.img refused at once).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import {
  encodeMessage,
  IMG_COMMON_MAGIC,
  kindByName,
  loadDump,
  parseImage,
} from "../../src/criu/index.js";
import { MAX_IMAGE_BYTES, MAX_IMAGE_ENTRIES, MAX_TASKS } from "../../src/criu/limits.js";
import { cli, makeDump, tempDir } from "./helpers.js";

function image(kind: string, entries: Uint8Array[]): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  header.writeUInt32LE(kindByName(kind).magic, 4);
  const parts: Uint8Array[] = [header];
  for (const e of entries) {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(e.length);
    parts.push(size, e);
  }
  return Buffer.concat(parts);
}

describe("inspect and the codec on hostile images directories", () => {
  let dir: string;
  let images: string;
  let pid: number;
  let n = 0;

  /** A copy of the dump, changed by `change`. */
  const variant = (change: (d: string) => void): string => {
    const d = join(dir, `variant-${n++}`);
    cpSync(images, d, { recursive: true });
    change(d);
    return d;
  };

  const oneLine = async (d: string, what: RegExp) => {
    const r = await cli(["inspect", d], { timeoutMs: 30_000 });
    assert.notEqual(r.code, -1, "inspect hung");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^lazyfs: [^\n]+\n$/);
    assert.match(r.stderr, what);
  };

  before(async () => {
    dir = tempDir("inspect-limits");
    images = await makeDump(dir);
    pid = (await loadDump(images)).tasks[0]!.pid;
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  test("an image that is a FIFO: one line, no hang", async () => {
    const d = variant((d) => {
      rmSync(join(d, "pstree.img"));
      execFileSync("mkfifo", [join(d, "pstree.img")]);
    });
    await oneLine(d, /pstree\.img: a FIFO, not a regular file; refusing to read it/);
  });

  test("an image that is a symlink to /dev/zero: one line", async () => {
    const d = variant((d) => {
      rmSync(join(d, `core-${pid}.img`));
      symlinkSync("/dev/zero", join(d, `core-${pid}.img`));
    });
    await oneLine(d, new RegExp(`core-${pid}\\.img: a character device, not a regular file`));
  });

  test("an image larger than MAX_IMAGE_BYTES is refused without reading it", async () => {
    const d = variant((d) => truncateSync(join(d, "files.img"), MAX_IMAGE_BYTES + 1));
    await oneLine(
      d,
      /files\.img: image file of \d+ bytes is larger than the limit of 67108864 bytes/,
    );
  });

  test("a 300 MB log, a FIFO log and a /dev/zero log: inspect answers, memory stays small", async () => {
    const d = variant((d) => {
      const log = join(d, "dump.log");
      const head = readFileSync(log).subarray(0, 4096);
      writeFileSync(log, head);
      truncateSync(log, 300 * 1024 * 1024);
      execFileSync("mkfifo", [join(d, "a-fifo.log")]);
      symlinkSync("/dev/zero", join(d, "b-zero.log"));
    });
    const r = await cli(["inspect", "--json", d], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).criuVersion, /^4\./);
    const before = process.memoryUsage().rss;
    const model = await loadDump(d);
    const growth = process.memoryUsage().rss - before;
    assert.match(model.criuVersion ?? "", /^4\./);
    assert.ok(growth < 64 * 1024 * 1024, `RSS grew by ${growth} bytes reading the logs`);
  });

  test("pstree.img repeating one task 40,000 times is refused at once", async () => {
    const d = variant((d) => {
      const task = encodeMessage("pstree_entry", { pid, ppid: 0, pgid: pid, sid: pid });
      writeFileSync(join(d, "pstree.img"), image("PSTREE", Array(40_000).fill(task)));
    });
    await oneLine(d, new RegExp(`pstree\\.img: task ${pid} appears more than once at byte \\d+`));
  });

  test("more than MAX_TASKS tasks, more than MAX_IMAGE_ENTRIES entries: refused", async () => {
    const d = variant((d) => {
      const tasks = Array.from({ length: MAX_TASKS + 1 }, (_, i) =>
        encodeMessage("pstree_entry", { pid: i + 1, ppid: 0, pgid: 1, sid: 1 }),
      );
      writeFileSync(join(d, "pstree.img"), image("PSTREE", tasks));
    });
    await assert.rejects(loadDump(d), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /more than 65536 tasks \(MAX_TASKS\)/);
      return true;
    });
    const many = image("FDINFO", Array(MAX_IMAGE_ENTRIES + 1).fill(new Uint8Array(0)));
    assert.throws(
      () => parseImage(many, "fdinfo-1.img"),
      /more than 1048576 entries \(MAX_IMAGE_ENTRIES\)/,
    );
  });
});
