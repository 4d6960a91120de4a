/** Pure parts of migration planning: URLs, maps, rates, policies, the plan itself, the tree. */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import type { DumpModel } from "../../src/criu/index.js";
import { Tree } from "../../src/lazy/index.js";
import { parseMaps, parsePolicyRules, planMigration } from "../../src/migrate/index.js";
import {
  mapPath,
  parseBlockSize,
  parseOriginUrl,
  parsePrefetch,
  parseRate,
} from "../../src/migration/index.js";
import type { OriginStat } from "../../src/origin/index.js";

describe("command-line values", () => {
  test("origin URLs", () => {
    assert.deepEqual(parseOriginUrl("ssh://root@10.0.0.1"), {
      user: "root",
      host: "10.0.0.1",
      port: 22,
    });
    assert.deepEqual(parseOriginUrl("ssh://ops@host.example:2222"), {
      user: "ops",
      host: "host.example",
      port: 2222,
    });
    assert.deepEqual(parseOriginUrl("ssh://[fe80::1]:22"), {
      user: "root",
      host: "fe80::1",
      port: 22,
    });
    for (const bad of [
      "10.0.0.1",
      "ssh://",
      "scp://a@b",
      "ssh://a@b:0",
      "ssh://a@b:70000",
      "ssh://a@b/path",
    ]) {
      assert.throws(() => parseOriginUrl(bad), UserError, bad);
    }
  });

  test("path maps: longest prefix wins, whole components only", () => {
    const maps = parseMaps(["/srv=/data", "/srv/app=/opt/app", "/=/migrated"]);
    assert.equal(mapPath("/srv/app/log.txt", maps), "/opt/app/log.txt");
    assert.equal(mapPath("/srv/db", maps), "/data/db");
    assert.equal(mapPath("/srv", maps), "/data");
    assert.equal(mapPath("/srvx/file", maps), "/migrated/srvx/file");
    assert.equal(mapPath("/etc/hosts", []), "/etc/hosts");
    assert.throws(() => parseMaps(["relative=/x"]), /absolute paths/);
    assert.throws(() => parseMaps(["/no-equals"]), /OLD=NEW/);
  });

  test("rates and prefetch schedules", () => {
    assert.equal(parseRate("500k"), 500_000);
    assert.equal(parseRate("10M"), 10_000_000);
    assert.equal(parseRate("1Mi"), 1 << 20);
    assert.equal(parseRate("100mbit"), 12_500_000);
    assert.throws(() => parseRate("fast"), /expected e\.g\. 500k/);
    assert.throws(() => parseRate("0"), /positive/);
    assert.deepEqual(parsePrefetch("immediate"), { mode: "immediate" });
    assert.deepEqual(parsePrefetch("delay:5000"), { mode: "delay", delayMs: 5000 });
    assert.deepEqual(parsePrefetch("3s"), { mode: "delay", delayMs: 3000 });
    assert.throws(() => parsePrefetch("later"), /--prefetch "later"/);
    assert.deepEqual(parsePolicyRules(["*.log=remote", "/srv/**=eager"]), [
      { glob: "*.log", policy: "remote" },
      { glob: "/srv/**", policy: "eager" },
    ]);
    assert.throws(() => parsePolicyRules(["*.log"]), /GLOB=POLICY/);
    assert.throws(() => parsePolicyRules(["*.log=sometimes"]), /unknown policy sometimes/);
  });

  test("block sizes", () => {
    assert.equal(parseBlockSize("64K"), 65536);
    assert.equal(parseBlockSize("1M"), 1 << 20);
    assert.equal(parseBlockSize("4KiB"), 4096);
    assert.equal(parseBlockSize("8192"), 8192);
    for (const bad of ["1000", "2K", "32M", "0", "big", "64KB"]) {
      assert.throws(() => parseBlockSize(bad), /--block-size .*multiple of 4K from 4K to 16M/, bad);
    }
  });
});

const stat = (size: number, mtimeMs: number, mode = 0o100644): OriginStat => ({
  size,
  mtimeMs,
  mode,
  uid: 1000,
  gid: 1000,
  isDirectory: (mode & 0o170000) === 0o040000,
});

function dump(files: { path: string; type: string; size?: number }[]): DumpModel {
  return {
    dir: "/nonexistent",
    imgVersion: 2,
    tasks: [],
    files: files.map((f, i) => ({
      ...f,
      fileIds: [i + 1],
      usedBy: [{ pid: 42, use: "fd", fd: i + 3 }],
    })),
  };
}

describe("planning", () => {
  test("serves what is missing or different, keeps identical copies, skips kernel files", async () => {
    const target = await mkdtemp(join(tmpdir(), "lazyfs-plan-"));
    const keptDir = `${target}-kept`;
    try {
      await writeFile(join(target, "same.txt"), "x".repeat(100));
      await utimes(join(target, "same.txt"), 1_700_000_000, 1_700_000_000);
      await writeFile(join(target, "other.txt"), "y".repeat(100));
      await mkdir(keptDir);
      await writeFile(join(keptDir, "lib.so"), "z".repeat(100));
      await utimes(join(keptDir, "lib.so"), 1_700_000_000, 1_700_000_000);
      const origin: Record<string, OriginStat> = {
        [join(target, "same.txt")]: stat(100, 1_700_000_000_000),
        [join(target, "other.txt")]: stat(100, 1_600_000_000_000),
        [join(keptDir, "lib.so")]: stat(100, 1_700_000_000_000),
        [join(target, "missing/deep/file.bin")]: stat(5000, 1_700_000_000_000, 0o100600),
        [join(target, "missing")]: stat(0, 1_700_000_000_000, 0o040750),
        [join(target, "missing/deep")]: stat(0, 1_700_000_000_000, 0o040700),
        [target]: stat(0, 1, 0o040755),
        "/srv/app.log": stat(10, 1),
      };
      const statOrigin = async (p: string) => {
        const s = origin[p];
        if (!s) throw new UserError(`${p}: no such file on the origin`);
        return s;
      };
      const m = await planMigration({
        id: "mtest",
        dump: dump([
          { path: join(target, "same.txt"), type: "file", size: 100 },
          { path: join(target, "other.txt"), type: "file", size: 100 },
          { path: join(keptDir, "lib.so"), type: "file", size: 100 },
          { path: join(target, "missing/deep/file.bin"), type: "file", size: 5000 },
          { path: "/srv/app.log", type: "file", size: 10 },
          { path: "/dev/null", type: "chr" },
          { path: "/proc/self/status", type: "file", size: 0 },
          { path: "pipe:[123]", type: "fifo" },
        ]),
        originUrl: "ssh://root@origin",
        statOrigin,
        mtimePrecisionMs: 1000,
        mountpoint: "/lazyfs/mtest",
        cacheDir: "/var/lib/lazyfs/mtest/cache",
        imagesDir: "/var/lib/lazyfs/mtest/images",
        policies: parsePolicyRules(["*.log=remote"]),
        maps: [],
        ssh: {},
        serve: { prefetch: { mode: "none" }, allowChanged: false, scrub: { kind: "zeros" } },
      });
      const by = new Map(m.files.map((f) => [f.originPath, f]));
      assert.equal(m.files.length, 5, "kernel files and pipes are CRIU's");
      // A directory with no served file stays the target's; its identical copies are kept.
      const kept = by.get(join(keptDir, "lib.so"))!;
      assert.equal(kept.served, false);
      assert.equal(kept.restorePath, join(keptDir, "lib.so"));
      // other.txt differs, so its directory is served and bind-mounted over the target's: the
      // identical same.txt there is served too, from the target's own copy.
      const same = by.get(join(target, "same.txt"))!;
      assert.equal(same.served, true);
      assert.equal(same.policy, "local");
      assert.equal(by.get(join(target, "other.txt"))!.served, true);
      assert.deepEqual(
        m.lazyDirs.map((d) => d.targetPath),
        ["/srv", target, join(target, "missing/deep")].sort((a, b) => a.localeCompare(b)),
      );
      assert.deepEqual(m.binds, ["/srv", target].sort());
      const deep = by.get(join(target, "missing/deep/file.bin"))!;
      assert.equal(deep.restorePath, `/lazyfs/mtest${join(target, "missing/deep/file.bin")}`);
      assert.equal(deep.mode, 0o100600);
      assert.equal(by.get("/srv/app.log")!.policy, "remote");
      const dirs = new Map(m.dirs.map((d) => [d.path, d]));
      assert.equal(dirs.get(join(target, "missing"))!.mode, 0o040750);
      assert.equal(
        dirs.get("/srv")!.mode,
        0o040755,
        "an ancestor unknown on the origin gets defaults",
      );
      // A file whose size changed since the dump is refused, naming both sizes.
      origin[join(target, "other.txt")] = stat(120, 1);
      await assert.rejects(
        planMigration({
          ...m,
          id: "mtest",
          dump: dump([{ path: join(target, "other.txt"), type: "file", size: 100 }]),
          originUrl: "ssh://root@origin",
          statOrigin,
          mtimePrecisionMs: 1000,
          policies: [],
          maps: [],
        }),
        /other\.txt on ssh:\/\/root@origin changed since the checkpoint: it has 120 bytes, the dump recorded 100/,
      );
    } finally {
      await rm(target, { recursive: true, force: true });
      await rm(keptDir, { recursive: true, force: true });
    }
  });

  test("the placeholder tree: ancestors, attributes, and files added later", () => {
    const file = (targetPath: string, mode = 0o100644) => ({
      targetPath,
      type: "file" as const,
      mode,
      uid: 7,
      gid: 8,
      mtimeMs: 1000,
      policy: "lazy" as const,
      served: true,
    });
    const tree = new Tree({
      files: [file("/a/b/c.txt")],
      dirs: [{ path: "/a", mode: 0o040700, uid: 1, gid: 2, mtimeMs: 5 }],
    });
    const at = (ino: number, name: string) => tree.child(tree.get(ino)!, name)!;
    const a = at(1, "a");
    assert.equal(a.mode, 0o040700);
    const c = at(at(a.ino, "b").ino, "c.txt");
    assert.equal(c.fileId, "/a/b/c.txt");
    assert.equal(c.uid, 7);
    tree.add({ files: [file("/a/b/c.txt", 0o100600), file("/a/new\nline")], dirs: [] });
    assert.equal(at(at(a.ino, "b").ino, "c.txt").ino, c.ino, "same inode kept");
    assert.equal(c.mode, 0o100644, "a planned path is placed once (the process's changes win)");
    assert.ok(at(a.ino, "new\nline"));
    assert.throws(() => tree.add({ files: [file("/a/b/c.txt/x")], dirs: [] }), /is a file/);
  });
});
