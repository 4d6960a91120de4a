/**
 * A full cache disk is a state, not a crash: on a small tmpfs filled to the last byte, a
 * block file whose killed predecessor left uncommitted writes opens and serves them, a fill
 * fails with ENOSPC and the store says the disk is full (once), the tree journal opens and
 * holds its records, and all of it goes on, exact, once space is freed; a process whose log
 * (stderr) is a file there logs on without dying and its held lines follow once there is
 * room. Root only (mount).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ROOT_INO } from "../../src/lazy/nodes.js";
import { Tree } from "../../src/lazy/tree.js";
import { ABSENT, DIRTY, PRESENT } from "../../src/store/blockfile.js";
import { Store } from "../../src/store/store.js";

const BS = 4096;
let dir: string;
const filler = () => path.join(dir, "filler");

/** Fills the file system with `filler` to the last byte. */
function fill(): void {
  const fd = fs.openSync(filler(), "a");
  const chunk = Buffer.alloc(BS);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, "ENOSPC");
  } finally {
    fs.closeSync(fd);
  }
}

async function waitUntil(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the child");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const meta = (id: string, size: number) => ({
  id,
  originPath: `/srv/${id}`,
  size,
  mtimeMs: 0,
  mode: 0o644,
  uid: 0,
  gid: 0,
  policy: "lazy" as const,
});

describe("a full cache disk", () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "full-disk-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", dir]);
  });
  after(() => {
    // Lazily if a failed test left a file open there.
    execFileSync("umount", ["-l", dir]);
    fs.rmdirSync(dir);
  });

  test("block files open and serve, a fill fails with ENOSPC once full, everything goes on once space is freed", async () => {
    const store = await Store.open(path.join(dir, "cache"), BS);
    const first = await store.openFile(meta("a", 16 * BS), true);
    const written = randomBytes(BS);
    await first.write(3 * BS, written);
    // `first` is killed here: block 3 is dirty in its log only. The disk fills.
    fill();
    const reopened = await Store.open(path.join(dir, "cache"), BS);
    const a = await reopened.openFile(meta("a", 16 * BS), false);
    assert.equal(a.stateOf(3), DIRTY, "the predecessor's write is known");
    assert.deepEqual(await a.read(3 * BS, BS), written);
    const bytes = randomBytes(8 * BS);
    await assert.rejects(a.fill(0, bytes), { code: "ENOSPC" });
    assert.equal(a.stateOf(0), ABSENT, "nothing of a failed fill is served");
    reopened.space.requestFailed(Object.assign(new Error("x"), { code: "ENOSPC" }));
    reopened.space.requestFailed(Object.assign(new Error("x"), { code: "ENOSPC" }));
    const full = reopened.space.status();
    assert.equal(full.full, true);
    assert.equal(full.failedRequests, 2);
    assert.ok(full.fullSinceMs !== null);

    fs.rmSync(filler());
    await a.fill(0, bytes);
    assert.equal(a.stateOf(0), PRESENT);
    assert.deepEqual(await a.read(0, 3 * BS), bytes.subarray(0, 3 * BS));
    const room = reopened.space.status();
    assert.equal(room.full, false);
    assert.equal(room.failedRequestsTotal, 2);
    assert.equal(room.fullEpisodes, 1);
    await a.close();
    reopened.space.close();
    store.space.close();
    // Everything committed: a third open finds the same from the state file alone.
    const third = await (await Store.open(path.join(dir, "cache"), BS)).openFile(
      meta("a", 16 * BS),
      false,
    );
    assert.equal(third.stateOf(0), PRESENT);
    assert.equal(third.stateOf(3), DIRTY);
    await third.close();
    await first.close();
  });

  test("the tree journal opens with the disk full, holds what it cannot write, and writes it once there is room", () => {
    const jdir = path.join(dir, "tree");
    fs.mkdirSync(jdir, { mode: 0o700 });
    const spec = { files: [], dirs: [] };
    new Tree(spec, jdir).close();
    fill();
    const failures: unknown[] = [];
    let wrote = 0;
    const space = { writeFailed: (e: unknown) => failures.push(e), wrote: () => wrote++ };
    const t2 = new Tree(spec, jdir, { space });
    const root = t2.get(ROOT_INO)!;
    // A record per name: enough to need a page the full disk does not have.
    for (let i = 0; i < 200; i++) t2.setEntry(root, `name-${i}-${"x".repeat(40)}`, 0);
    assert.ok(failures.length > 0, "the journal met the full disk");
    assert.throws(() => t2.sync(), { code: "ENOSPC" });
    fs.rmSync(filler());
    t2.sync();
    assert.ok(wrote > 0);
    t2.close();
    const t3 = new Tree(spec, jdir);
    const names = [...(t3.get(ROOT_INO)!.entries ?? new Map()).keys()];
    assert.equal(names.filter((n) => n.startsWith("name-")).length, 200);
    t3.close();
  });

  test("log lines to a full disk are held, not fatal, and written once there is room", async () => {
    const logFile = path.join(dir, "daemon.log");
    const logJs = new URL("../../src/common/log.js", import.meta.url).href;
    // Logs two lines, waits for a line on stdin, logs a third, says it lived.
    const script = `import { logger } from ${JSON.stringify(logJs)};
const log = logger("test");
log.warn("first line");
log.warn("second line");
process.stdin.once("data", () => { log.warn("third line"); process.stdout.write("alive\\n"); process.exit(0); });
process.stdout.write("waiting\\n");`;
    fill();
    const fd = fs.openSync(logFile, "a");
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["pipe", "pipe", fd],
      env: { ...process.env, LAZYFS_LOG: "warn", LAZYFS_LOG_FORMAT: "" },
    });
    fs.closeSync(fd);
    let out = "";
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    await waitUntil(() => out.includes("waiting") || child.exitCode !== null);
    assert.equal(fs.readFileSync(logFile, "utf8"), "", "nothing could be written yet");
    fs.rmSync(filler());
    child.stdin!.end("go\n");
    assert.equal(await exited, 0, "the process lived on");
    assert.match(out, /alive/);
    assert.equal(
      fs.readFileSync(logFile, "utf8"),
      "warn test: first line\nwarn test: second line\nwarn test: third line\n",
    );
  });
});
