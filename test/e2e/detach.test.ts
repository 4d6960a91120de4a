/**
 * End to end: `lazyfs detach` and `lazyfs migrate --detach`. A process migrated from host A
 * to host B runs on LazyFS; once independent it is detached: afterwards none of its
 * descriptors, mappings, cwd or exe is on a FUSE file system, its mount namespace has no
 * LazyFS mount, no LazyFS process or mount of that migration is left on B, and the process goes on
 * exactly (a reader writes the hash of every input line in order; a writer's file is exact).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { DetachResult } from "../../src/detach/index.js";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  AWAIT_GO,
  errorLines,
  type LazyfsOnB,
  type Migrated,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";
import { APPENDER, appended, HASH_READER, sha, startReaderAndWriter } from "./line-workloads.js";

/**
 * Which of a process's descriptors, mappings, cwd and exe are on a FUSE file system, and the
 * FUSE mounts of its mount namespace (run inside the host).
 */
export const ON_FUSE = `
import os, sys, json
pid = sys.argv[1]
fuse = {}
lazy = []
for l in open('/proc/%s/mountinfo' % pid):
    p = l.split()
    t = p[p.index('-') + 1]
    if t == 'fuse' or t.startswith('fuse.'):
        fuse[p[2]] = p[4]
    if t == 'fuse.lazyfs':
        lazy.append(p[4])
def dev(path):
    st = os.stat(path)
    return '%d:%d' % (os.major(st.st_dev), os.minor(st.st_dev))
on = []
for fd in os.listdir('/proc/%s/fd' % pid):
    try:
        if dev('/proc/%s/fd/%s' % (pid, fd)) in fuse:
            on.append('fd %s -> %s' % (fd, os.readlink('/proc/%s/fd/%s' % (pid, fd))))
    except OSError:
        pass
for name in ('cwd', 'exe'):
    if dev('/proc/%s/%s' % (pid, name)) in fuse:
        on.append(name)
for l in open('/proc/%s/maps' % pid):
    p = l.split()
    ma, mi = p[3].split(':')
    if '%d:%d' % (int(ma, 16), int(mi, 16)) in fuse:
        on.append('map ' + (p[5] if len(p) > 5 else '?'))
fds = sorted(os.readlink('/proc/%s/fd/%s' % (pid, fd)) for fd in os.listdir('/proc/%s/fd' % pid))
print(json.dumps({'lazyfsMounts': sorted(lazy), 'onFuse': on, 'fds': fds, 'cwd': os.readlink('/proc/%s/cwd' % pid)}))
`;

interface FuseUse {
  /** LazyFS mounts in its mount namespace (other FUSE mounts of the host may show there). */
  lazyfsMounts: string[];
  onFuse: string[];
  fds: string[];
  cwd: string;
}

let pair: HostPair;
let lazyfs: LazyfsOnB;

async function fuseUse(pid: number): Promise<FuseUse> {
  const r = await pair.b.exec("python3", ["-c", ON_FUSE, String(pid)]);
  return JSON.parse(r.stdout) as FuseUse;
}

/** LazyFS daemons and mounts of migration `id` left on host b. */
async function lazyfsLeft(id: string): Promise<{ daemons: string[]; mounts: string[] }> {
  const r = await pair.b.exec("sh", [
    "-c",
    `for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] && continue; c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in *"mount --id ${id}"*) echo "D $c";; esac; done; grep -h "lazyfs-${id}" /proc/self/mountinfo | sed 's/^/M /'; true`,
  ]);
  const lines = r.stdout.split("\n").filter(Boolean);
  return {
    daemons: lines.filter((l) => l.startsWith("D ")),
    mounts: lines.filter((l) => l.startsWith("M ")),
  };
}

async function independent(id: string): Promise<true | undefined> {
  const s = await lazyfs.status(id);
  return s.total.bytesOnOrigin === 0 && (s.dirs?.uncrawled ?? 0) === 0 ? true : undefined;
}

async function lines(path: string): Promise<string[]> {
  const text = await pair.b.readFile(path).catch(() => "");
  return text.split("\n").filter(Boolean);
}

describe("detach: plain local files, no LazyFS left", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(async () => {
    await stopHosts({ pair, lazyfs });
  });

  test("a reader and a writer on LazyFS are detached and go on exactly", async () => {
    const dir = `${DATA_DIR}/detach-${process.pid}`;
    const n = 4000;
    const { reader, writer, output, log, inputLines, expectedLog } = await startReaderAndWriter(
      pair.a,
      dir,
      n,
    );
    const mr = await lazyfs.migrate(reader.pid, ["--prefetch", "immediate"]);
    const mw = await lazyfs.migrate(writer.pid, ["--prefetch", "immediate"]);
    const detached: { m: Migrated; d: DetachResult; path: string }[] = [];
    try {
      for (const [m, path, cwd] of [
        [mr, output, `${dir}/r`],
        [mw, log, `${dir}/w`],
      ] as const) {
        const beforeUse = await fuseUse(m.pid);
        assert.ok(beforeUse.onFuse.length > 0, "on LazyFS the process's files are on FUSE");
        await waitFor("independence", () => independent(m.id), 60_000);
        const r = await lazyfs.run(["detach", m.id, "--json"]);
        const d = JSON.parse(r.stdout) as DetachResult;
        detached.push({ m, d, path });
        assert.equal(d.pid, m.pid, "CRIU restores the process with its pid");
        assert.ok(d.timeline.freezeMs > 0);
        assert.ok(d.materialized.linked > 0, "data files are moved into place, not copied");
        const use = await fuseUse(d.pid);
        assert.deepEqual(use.onFuse, [], `nothing on FUSE: ${use.onFuse.join(", ")}`);
        assert.deepEqual(use.lazyfsMounts, [], "no LazyFS mount in the process's namespace");
        assert.equal(use.cwd, cwd, "cwd keeps its path");
        assert.ok(use.fds.includes(path), `its file keeps its path: ${use.fds.join(", ")}`);
        const left = await lazyfsLeft(m.id);
        assert.deepEqual(left, { daemons: [], mounts: [] });
      }
      const [r, w] = detached;
      // status shows it detached; unmount leaves the running process's files alone.
      const st = JSON.parse((await lazyfs.run(["status", r!.m.id, "--json"])).stdout) as {
        detached?: { pid: number; alive: boolean; root: string };
      }[];
      assert.equal(st[0]?.detached?.pid, r!.d.pid);
      assert.equal(st[0]?.detached?.alive, true);
      const un = await lazyfs.run(["unmount", r!.m.id, "--purge"], true);
      assert.notEqual(un.code, 0);
      assert.match(
        errorLines(un.stderr)[0] ?? "",
        /^lazyfs: migration \S+ is detached: pid \d+ runs on its plain files/,
      );
      const hashes = await waitFor(
        "the reader to finish",
        async () => {
          const l = await lines(`${r!.d.root}${output}`);
          return l.length >= n ? l : undefined;
        },
        90_000,
      );
      assert.deepEqual(hashes, inputLines.map(sha));
      const written = await waitFor(
        "the writer to finish",
        async () => {
          const l = await lines(`${w!.d.root}${log}`);
          return l.length >= n + 1 ? l : undefined;
        },
        90_000,
      );
      assert.deepEqual(written, expectedLog);
      // A second detach has nothing left to do.
      const again = await lazyfs.run(["detach", r!.m.id], true);
      assert.notEqual(again.code, 0);
      assert.match(errorLines(again.stderr)[0] ?? "", /^lazyfs: migration \S+ is already detached/);
    } finally {
      for (const m of [mr, mw]) await lazyfs.stop(m);
    }
  });

  test("detach refuses with one line while the origin is still needed", async () => {
    const dir = `${DATA_DIR}/refuse-${process.pid}`;
    const input = `${dir}/big.bin`;
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.exec("dd", ["if=/dev/urandom", `of=${input}`, "bs=1M", "count=8"]);
    const wl = await pair.a.startWorkload(
      "python3",
      [
        "-c",
        "import time\nf=open(__import__('sys').argv[1],'rb')\nf.read(4096)\nwhile True: time.sleep(0.1)",
        input,
      ],
      { stdout: "/dev/null", cwd: dir },
    );
    await pair.a.exec("sleep", ["0.5"]);
    const m = await lazyfs.migrate(wl.pid);
    try {
      const r = await lazyfs.run(["detach", m.id], true);
      assert.notEqual(r.code, 0);
      const errs = errorLines(r.stderr);
      assert.equal(errs.length, 1, r.stderr);
      assert.match(
        errs[0]!,
        /^lazyfs: migration \S+ is not independent of .* yet: \d+ bytes of 1 file/,
      );
      // The process runs on LazyFS, untouched.
      const use = await fuseUse(m.pid);
      assert.ok(use.onFuse.length > 0);
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("a lazy directory's changes are detached; a remote file is refused, then copied", async () => {
    const dir = `${DATA_DIR}/lazy-${process.pid}`;
    await pair.a.exec("mkdir", ["-p", dir]);
    for (const [name, text] of [
      ["data.txt", "data on A\n"],
      ["old.txt", "old on A\n"],
      ["gone.txt", "gone on A\n"],
      ["untouched.txt", "never opened\n"],
      ["feed.remote", "feed line 1\n"],
    ]) {
      await pair.a.writeFile(`${dir}/${name}`, text!);
    }
    const script = `${AWAIT_GO}
import os
feed = open('feed.remote')
data = open('data.txt').read()
await_go()
open('new.txt', 'w').write('made on B\\n')
os.rename('old.txt', 'renamed.txt')
os.unlink('gone.txt')
os.mkdir('sub')
open('sub/inner.txt', 'w').write('inner\\n')
os.symlink('renamed.txt', 'link')
open('ops.done', 'w').write('ok')
while True: time.sleep(0.05)
`;
    const wl = await pair.a.startWorkload("python3", ["-c", script], {
      stdout: "/dev/null",
      cwd: dir,
    });
    await pair.a.exec("sleep", ["0.5"]);
    const m = await lazyfs.migrate(wl.pid, [
      "--policy",
      "*.remote=remote",
      "--prefetch",
      "immediate",
    ]);
    try {
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      await waitFor("the changes on B", async () =>
        (await pair.b.readFile(`${m.mountpoint}${dir}/ops.done`).catch(() => "")) === "ok"
          ? true
          : undefined,
      );
      await pair.a.exec("sh", ["-c", `echo 'feed line 2' >> ${dir}/feed.remote`]);
      await waitFor("the rest local", async () => {
        const st = await lazyfs.status(m.id);
        const left = st.perFile.filter((f) => f.policy !== "remote" && f.bytesOnOrigin > 0);
        return left.length === 0 && (st.dirs?.uncrawled ?? 0) + (st.dirs?.pendingFiles ?? 0) === 0
          ? true
          : undefined;
      });
      const refused = await lazyfs.run(["detach", m.id], true);
      assert.notEqual(refused.code, 0);
      const errs = errorLines(refused.stderr);
      assert.equal(errs.length, 1, refused.stderr);
      assert.match(
        errs[0]!,
        /feed\.remote follows the origin's live content \(policy remote\).*--remote copy/,
      );
      const d = JSON.parse(
        (await lazyfs.run(["detach", m.id, "--remote", "copy", "--json"])).stdout,
      ) as DetachResult;
      assert.deepEqual(d.remoteCopied, [`${dir}/feed.remote`]);
      const ls = await pair.b.exec("ls", ["-A", `${d.root}${dir}`]);
      assert.deepEqual(ls.stdout.trim().split("\n").sort(), [
        "data.txt",
        "feed.remote",
        "link",
        "new.txt",
        "ops.done",
        "renamed.txt",
        "sub",
        "untouched.txt",
      ]);
      const read = (name: string) => pair.b.readFile(`${d.root}${dir}/${name}`);
      assert.equal(await read("renamed.txt"), "old on A\n");
      assert.equal(await read("new.txt"), "made on B\n");
      assert.equal(await read("sub/inner.txt"), "inner\n");
      assert.equal(await read("untouched.txt"), "never opened\n");
      assert.equal(await read("feed.remote"), "feed line 1\nfeed line 2\n");
      assert.equal(
        (await pair.b.exec("readlink", [`${d.root}${dir}/link`])).stdout.trim(),
        "renamed.txt",
      );
      // The process sees the same through its own paths, and none of it on FUSE.
      const own = await pair.b.exec("ls", ["-A", `/proc/${d.pid}/root${dir}`]);
      assert.equal(own.stdout, ls.stdout);
      const use = await fuseUse(d.pid);
      assert.deepEqual(use.onFuse, []);
      assert.deepEqual(use.lazyfsMounts, []);
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("a detach that fails after the dump puts the process back onto LazyFS", async () => {
    const dir = `${DATA_DIR}/full-${process.pid}`;
    const input = `${dir}/input.txt`;
    const output = `${dir}/hashes.txt`;
    const n = 3000;
    await pair.a.exec("mkdir", ["-p", dir]);
    const inputLines = Array.from({ length: n }, (_, i) => `full line ${i} ${"z".repeat(i % 60)}`);
    await pair.a.writeFile(input, `${inputLines.join("\n")}\n`);
    const wl = await pair.a.startWorkload("python3", ["-u", "-c", HASH_READER, input, "0.01"], {
      stdout: output,
      cwd: dir,
    });
    await waitFor("the reader on A", async () =>
      (await pair.a.readFile(output)).split("\n").length > 20 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid, ["--prefetch", "immediate"]);
    // A file system too small for the process's files: the detach fails after the dump.
    const small = `/tmp/lazyfs-full-${process.pid}`;
    await pair.b.exec("mkdir", ["-p", small]);
    await pair.b.exec("mount", ["-t", "tmpfs", "-o", "size=32k", "lazyfs-full", small]);
    try {
      await waitFor("independence", () => independent(m.id), 60_000);
      const r = await lazyfs.run(["detach", m.id, "--dir", `${small}/root`], true);
      assert.notEqual(r.code, 0);
      const errs = errorLines(r.stderr);
      assert.equal(errs.length, 1, r.stderr);
      assert.match(
        errs[0]!,
        /^lazyfs: detach of \S+ failed: .*ENOSPC.*; the process runs on LazyFS as before \(pid \d+\)$/,
      );
      const st = await lazyfs.status(m.id);
      assert.ok(st.restoredAlive, "the process runs");
      assert.ok((await fuseUse(st.restoredPid!)).onFuse.length > 0, "on LazyFS again");
      assert.equal((await pair.b.exec("ls", ["-A", small])).stdout.trim(), "", "nothing left");
      const hashes = await waitFor(
        "the reader to finish on LazyFS",
        async () => {
          const l = await lines(`${m.mountpoint}${output}`);
          return l.length >= n ? l : undefined;
        },
        90_000,
      );
      assert.deepEqual(hashes, inputLines.map(sha));
    } finally {
      await pair.b.exec("umount", ["-l", small], { allowFailure: true });
      await pair.b.exec("rmdir", [small], { allowFailure: true });
      await lazyfs.stop(m);
    }
  });

  test("migrate --detach: the writer ends up on plain files by itself", async () => {
    const dir = `${DATA_DIR}/auto-${process.pid}`;
    const log = `${dir}/out.log`;
    const n = 3000;
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.writeFile(log, "origin line\n");
    const wl = await pair.a.startWorkload(
      "python3",
      ["-u", "-c", APPENDER, log, "0.01", String(n)],
      {
        stdout: "/dev/null",
        cwd: dir,
      },
    );
    await waitFor("the writer on A", async () =>
      (await pair.a.readFile(log)).split("\n").length > 20 ? true : undefined,
    );
    const m = (await lazyfs.migrate(wl.pid, ["--detach"])) as Migrated & { detach: DetachResult };
    try {
      assert.ok(m.detach, "the JSON holds the detach");
      assert.ok(m.detach.timeline.freezeMs > 0);
      const use = await fuseUse(m.detach.pid);
      assert.deepEqual(use.onFuse, []);
      assert.deepEqual(use.lazyfsMounts, []);
      assert.deepEqual(await lazyfsLeft(m.id), { daemons: [], mounts: [] });
      const written = await waitFor(
        "the writer to finish",
        async () => {
          const l = await lines(`${m.detach.root}${log}`);
          return l.length >= n + 1 ? l : undefined;
        },
        90_000,
      );
      assert.deepEqual(written, [
        "origin line",
        ...Array.from({ length: n }, (_, i) => appended(i)),
      ]);
    } finally {
      await lazyfs.stop(m);
    }
  });
});
