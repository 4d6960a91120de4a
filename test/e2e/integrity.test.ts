/**
 * Origin integrity: a file changed on the origin after the dump is never served mixed (the
 * process reads only the dump's bytes, or gets EIO), status says which file and why;
 * `--allow-changed` serves the new content; `--origin-snapshot reflink` reads a clone taken
 * at the dump, so later changes on the origin do not matter.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus } from "../../src/daemon/index.js";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import { errorLines, type LazyfsOnB, startHosts, stopHosts, waitFor } from "./helpers.js";
import {
  assertExact,
  chunks,
  goReader,
  MiB,
  overwrite,
  type ReadResult,
  readerOnA,
  results,
  sha256,
  stageDone,
} from "./origin-helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

const EIO = 5;

/** Every read of `file` got either the dump's bytes of that range or EIO; returns the EIOs. */
function onlyOriginalOrEio(reads: ReadResult[], file: number, original: Buffer): ReadResult[] {
  const mine = reads.filter((r) => r.file === file);
  assert.ok(mine.length > 0);
  for (const r of mine) {
    if (r.errno !== undefined) {
      assert.equal(r.errno, EIO, `read of file ${file} @${r.offset}: errno ${r.errno}`);
      continue;
    }
    const want = original.subarray(r.offset, r.offset + r.len!);
    assert.equal(r.sha, sha256(want), `file ${file} @${r.offset}: bytes that are not the dump's`);
  }
  return mine.filter((r) => r.errno !== undefined);
}

describe("origin integrity", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("files changed before and after their first fetch are refused, never served mixed; status and log say why", async () => {
    const size = 16 * MiB;
    const stages: [number, number, number][][] = [
      [[1, 0, 256 * 1024]],
      [...chunks(0, size, 4 * MiB), ...chunks(1, size, 4 * MiB)],
    ];
    const reader = await readerOnA(
      pair,
      { name: "integrity" },
      [
        { name: "before.bin", size },
        { name: "after.bin", size },
      ],
      stages,
    );
    const { files, data: orig } = reader;
    const m = await lazyfs.migrate(reader.pid);
    const onB = `${m.mountpoint}${reader.out}`;
    try {
      // before.bin changes (same size, in place) before anything of it was fetched.
      await overwrite(pair.a, files[0]!, 5 * MiB, Buffer.alloc(4096, 1));
      await goReader(pair, m.pid);
      const first = await stageDone(pair.b, onB, 0);
      assert.equal(
        first[0]!.sha,
        sha256(orig[1]!.subarray(0, 256 * 1024)),
        "after.bin's first block",
      );
      // after.bin changes after its first fetch.
      await overwrite(pair.a, files[1]!, 13 * MiB, Buffer.alloc(4096, 2));
      await goReader(pair, m.pid);
      const reads = await stageDone(pair.b, onB, 1);
      const eioBefore = onlyOriginalOrEio(reads, 0, orig[0]!);
      const eioAfter = onlyOriginalOrEio(reads, 1, orig[1]!);
      assert.ok(eioBefore.length > 0, "before.bin: EIO for bytes that are not local");
      assert.ok(eioAfter.length > 0, "after.bin: EIO for bytes that are not local");
      const st = await lazyfs.status(m.id);
      assert.equal(st.total.refusedFiles, 2);
      for (const path of files) {
        const f = st.perFile.find((p) => p.path === path);
        assert.ok(f?.refused, `${path} marked refused: ${JSON.stringify(f)}`);
        assert.match(f.refused.reason, /mtime|ctime|size/);
      }
      const table = (await lazyfs.run(["status", m.id])).stdout;
      assert.match(table, /2 refused/);
      assert.ok(table.includes(`${files[0]}: refused, `), table);
      assert.ok(table.includes(`${files[1]}: refused, `), table);
      const log = await pair.b.readFile(`${lazyfs.stateDir}/${m.id}/daemon.log`);
      assert.ok(
        log.split("\n").some((l) => /refused/.test(l) && l.includes(files[1]!) && /offset/.test(l)),
        "the daemon log names the file, offset and reason",
      );
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("--allow-changed serves the new content, and status says it changed", async () => {
    const size = 8 * MiB;
    const reader = await readerOnA(
      pair,
      { name: "integrity-allow" },
      [{ name: "data.bin", size }],
      [chunks(0, size, 2 * MiB)],
    );
    const { out } = reader;
    const file = reader.files[0]!;
    const data = reader.data[0]!;
    const m = await lazyfs.migrate(reader.pid, ["--allow-changed"]);
    try {
      const patch = Buffer.alloc(8192, 7);
      await overwrite(pair.a, file, 3 * MiB, patch);
      patch.copy(data, 3 * MiB);
      await goReader(pair, m.pid);
      assertExact(await stageDone(pair.b, `${m.mountpoint}${out}`, 0), data, "(new content)");
      const st = await lazyfs.status(m.id);
      const f = st.perFile.find((p) => p.path === file);
      assert.ok(f?.changed, JSON.stringify(f));
      assert.equal(f.refused, undefined);
      assert.equal(st.total.changedFiles, 1);
      assert.equal(st.total.refusedFiles, 0);
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("--origin-snapshot reflink on btrfs: the process reads the dump-time content after the origin changed it; the clone goes when the migration ends", async () => {
    const img = `${DATA_DIR}/btrfs-${process.pid}.img`;
    const fs = `${DATA_DIR}/btrfs-${process.pid}`;
    await pair.a.exec("truncate", ["-s", "256M", img]);
    await pair.a.exec("mkfs.btrfs", ["-q", "-f", img]);
    await pair.a.exec("mkdir", ["-p", fs]);
    await pair.a.exec("mount", ["-o", "loop", img, fs]);
    try {
      const size = 8 * MiB;
      const reader = await readerOnA(
        pair,
        { dir: `${fs}/sub` },
        [{ name: "data.bin", size }],
        [chunks(0, size, 2 * MiB)],
      );
      const file = reader.files[0]!;
      const m = await lazyfs.migrate(reader.pid, ["--origin-snapshot", "reflink"]);
      let stopped = false;
      try {
        const t = m.timeline as { snapshotFiles?: number; snapshotMs?: number };
        assert.ok((t.snapshotFiles ?? 0) >= 2, "the data file and the output cloned");
        process.stdout.write(`figure: snapshot of ${t.snapshotFiles} files: ${t.snapshotMs} ms\n`);
        const clones = await pair.a.exec("sh", ["-c", `ls ${fs}/.lazyfs-snapshots/*/`]);
        assert.ok(clones.stdout.trim().length > 0, "a clone on the origin");
        // The origin's file changes completely after the dump.
        await overwrite(pair.a, file, 0, Buffer.alloc(size, 9));
        await goReader(pair, m.pid);
        const reads = await stageDone(pair.b, `${m.mountpoint}${reader.out}`, 0);
        assert.equal(reads.length, 4);
        assertExact(reads, reader.data[0]!, "(the dump-time content, from the clone)");
        const st: DaemonStatus = await lazyfs.status(m.id);
        assert.equal(st.total.refusedFiles, 0);
        await lazyfs.stop(m);
        stopped = true;
        // (unmount returns before the daemon has finished: wait for it)
        await waitFor("no clone left once the migration ended", async () => {
          const left = await pair.a.exec("sh", [
            "-c",
            `ls -A ${fs}/.lazyfs-snapshots 2>/dev/null; true`,
          ]);
          return left.stdout.trim() === "" ? true : undefined;
        });
      } finally {
        if (!stopped) await lazyfs.stop(m);
      }
    } finally {
      await pair.a.exec("umount", ["-l", fs], { allowFailure: true });
      await pair.a.exec("rm", ["-f", img], { allowFailure: true });
    }
  });

  test("--origin-snapshot reflink on a file system without reflinks: one clear line, the process runs on; auto goes on without", async () => {
    const wl = await readerOnA(
      pair,
      { name: "integrity-tmpfs" },
      [{ name: "data.bin", size: 2 * MiB }],
      [chunks(0, 2 * MiB, MiB)],
    );
    const r = await lazyfs.run(lazyfs.migrateArgs(wl.pid, ["--origin-snapshot", "reflink"]), true);
    assert.notEqual(r.code, 0);
    const lines = errorLines(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0]!,
      /^lazyfs: --origin-snapshot reflink: cannot clone .* on root@.*: .*--origin-snapshot auto/,
    );
    assert.match(lines[0]!, /the process runs on at /);
    await pair.a.exec("kill", ["-0", String(wl.pid)]);
    const left = await pair.a.exec("sh", [
      "-c",
      `ls -A ${DATA_DIR}/.lazyfs-snapshots 2>/dev/null; true`,
    ]);
    assert.equal(left.stdout.trim(), "", "no snapshot directory left on the origin");

    const auto = await lazyfs.run(lazyfs.migrateArgs(wl.pid, ["--origin-snapshot", "auto"]));
    assert.match(auto.stderr, /no snapshot of this file/);
    const m = JSON.parse(auto.stdout) as { id: string; pid: number; mountpoint: string };
    try {
      await goReader(pair, m.pid);
      const reads = await stageDone(pair.b, `${m.mountpoint}${wl.out}`, 0);
      assert.equal(reads.length, 2);
      assertExact(reads, wl.data[0]!);
    } finally {
      await pair.b.exec("kill", ["-KILL", String(m.pid)], { allowFailure: true });
      await lazyfs.run(["unmount", m.id, "--force", "--purge"], true);
    }
    assert.ok((await results(pair.a, wl.out)).length === 0, "nothing read on the origin");
  });
});
