/**
 * End to end: real CRIU, real sshd on host A, the real `lazyfs` CLI on host B, two
 * namespaced hosts that share no file system namespace for their data.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { DaemonStatus } from "../../src/daemon/index.js";
import { LINE_READER } from "../../src/demo/demo.js";
import {
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  type HostPair,
  type SshdHandle,
} from "../../src/hosts/index.js";
import {
  AWAIT_GO,
  gatedLineReader,
  linesIn as linesOf,
  sleep,
  standbyOf,
  waitFor,
} from "./helpers.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
/** Per run: other runs of this file may use the machine at the same time. */
const STATE = `/var/lib/lazyfs-test-${process.pid}`;

let pair: HostPair;
let sshd: SshdHandle;

interface Migrated {
  id: string;
  pid: number;
  mountpoint: string;
  timeline: { freezeMs: number; imageBytes: number; firstFetchMs: number | null };
}

function lazyfs(args: string[], allowFailure = false) {
  return pair.b.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...process.env, LAZYFS_STATE_DIR: STATE },
    timeoutMs: 120_000,
  });
}

const ssh = () => ["-i", sshd.identityFile, "--known-hosts", sshd.knownHostsFile];

async function migrate(pid: number, extra: string[] = []): Promise<Migrated> {
  const r = await lazyfs([
    "migrate",
    "--from",
    `ssh://root@${pair.a.address}`,
    "--pid",
    String(pid),
    ...ssh(),
    "--json",
    ...extra,
  ]);
  return JSON.parse(r.stdout) as Migrated;
}

async function status(id: string): Promise<DaemonStatus> {
  return (JSON.parse((await lazyfs(["status", id, "--json"])).stdout) as DaemonStatus[])[0]!;
}

async function stop(m: Migrated) {
  await pair.b.kill(m.pid, "SIGKILL");
  await lazyfs(["unmount", m.id, "--force"], true);
}

/** Tells a restored process waiting in await_go() to go on. */
const go = (m: Migrated) => pair.b.exec("kill", ["-USR1", String(m.pid)]);

const linesIn = (host: "a" | "b", path: string) => linesOf(pair[host], path);

/** Waits until process `pid` on a holds `path` open (python starts slowly on a loaded host). */
async function waitOpen(pid: number, path: string): Promise<void> {
  await waitFor(`pid ${pid} to open ${path}`, async () => {
    const fds = await pair.a.exec("ls", ["-l", `/proc/${pid}/fd`], { allowFailure: true });
    return fds.stdout.includes(`-> ${path}`) ? true : undefined;
  });
}

const sha256 = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

async function makeLines(path: string, n: number) {
  await pair.a.exec("python3", [
    "-c",
    "import sys\nwith open(sys.argv[1],'w') as f:\n  for i in range(int(sys.argv[2])): f.write('line %06d\\n' % i)",
    path,
    String(n),
  ]);
}

describe("lazy migration between two namespaced hosts", { concurrency: false }, () => {
  before(async () => {
    await cleanupStaleHosts();
    pair = await createHostPair();
    sshd = await pair.startOriginSshd();
    await pair.b.exec("rm", ["-rf", STATE]);
  });
  after(async () => {
    await pair?.b.exec(process.execPath, [CLI, "unmount", "--all", "--force"], {
      allowFailure: true,
      env: { ...process.env, LAZYFS_STATE_DIR: STATE },
    });
    await pair?.destroy();
    await pair?.b.exec("rm", ["-rf", STATE]).catch(() => {});
  });

  test("the paper's read example: output continues exactly where it stopped", async () => {
    const input = `${DATA_DIR}/read example/input.txt`;
    const output = `${DATA_DIR}/read example/output.txt`;
    await pair.a.exec("mkdir", ["-p", `${DATA_DIR}/read example`]);
    await makeLines(input, 3000);
    const wl = await pair.a.startWorkload(
      "python3",
      ["-u", "-c", gatedLineReader(40), input, "0.002"],
      { stdout: output },
    );
    await waitFor("40 lines on A", async () =>
      (await linesIn("a", output)).length >= 40 ? true : undefined,
    );
    const m = await migrate(wl.pid);
    try {
      await go(m);
      assert.ok(m.pid > 0);
      assert.ok(m.timeline.freezeMs > 0);
      const onB = `${m.mountpoint}${output}`;
      const lines = await waitFor(
        "the reader to finish on B",
        async () => {
          const l = await linesIn("b", onB);
          return l.length === 3000 ? l : undefined;
        },
        60_000,
      );
      assert.deepEqual(
        lines,
        Array.from({ length: 3000 }, (_, i) => `line ${String(i).padStart(6, "0")}`),
      );
      // The origin's copy of the output stopped at the checkpoint.
      const originLines = await linesIn("a", output);
      assert.ok(originLines.length < 3000);
      const st = await status(m.id);
      assert.equal(st.restoredPid, m.pid);
      assert.ok(st.total.bytesDirty > 0, "the output written on B is dirty in B's store");
    } finally {
      await stop(m);
    }
  });

  test("the paper's write example: appends land on the target, the origin's copy is unchanged", async () => {
    const log = `${DATA_DIR}/append.log`;
    await pair.a.writeFile(log, "origin line 0\norigin line 1\n");
    const originSha = sha256("origin line 0\norigin line 1\n");
    const writer =
      "import sys,time\nf=open(sys.argv[1],'a')\ni=0\nwhile True:\n  f.write('appended %d\\n' % i); f.flush(); i+=1; time.sleep(0.01)";
    const wl = await pair.a.startWorkload("python3", ["-c", writer, log], { stdout: "/dev/null" });
    await waitFor("appends on A", async () =>
      (await linesIn("a", log)).length >= 12 ? true : undefined,
    );
    const m = await migrate(wl.pid);
    try {
      const onA = await pair.a.readFile(log);
      const aLines = onA.split("\n").filter(Boolean);
      const onB = await waitFor("appends on B", async () => {
        const l = await linesIn("b", `${m.mountpoint}${log}`);
        return l.length > aLines.length + 5 ? l : undefined;
      });
      assert.deepEqual(
        onB.slice(0, aLines.length),
        aLines,
        "B starts with A's content at the checkpoint",
      );
      const k = aLines.length - 2;
      assert.deepEqual(
        onB.slice(aLines.length),
        onB.slice(aLines.length).map((_, i) => `appended ${k + i}`),
      );
      await sleep(300);
      assert.equal(
        await pair.a.readFile(log),
        onA,
        "the origin's copy is unchanged after the migration",
      );
      assert.notEqual(sha256(onA), originSha);
    } finally {
      await stop(m);
    }
  });

  test("a memory-mapped data file is read through the mount after migration", async () => {
    const data = `${DATA_DIR}/mapped.bin`;
    const out = `${DATA_DIR}/mapped.out`;
    await pair.a.exec("sh", ["-c", `head -c 4194304 /dev/urandom > '${data}'`]);
    const want = (await pair.a.exec("sha256sum", [data])).stdout.split(" ")[0];
    // Maps the file, then waits for SIGUSR1 before hashing the mapping.
    const reader = `${AWAIT_GO}\nimport mmap,sys,hashlib\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nprint('mapped',flush=True)\nawait_go()\nprint(hashlib.sha256(m[:]).hexdigest(),flush=True)\ntime.sleep(600)`;
    const wl = await pair.a.startWorkload("python3", ["-c", reader, data], { stdout: out });
    await waitFor("the mapping", async () =>
      (await linesIn("a", out)).length >= 1 ? true : undefined,
    );
    const m = await migrate(wl.pid);
    try {
      await go(m);
      const lines = await waitFor("the hash on B", async () => {
        const l = await linesIn("b", `${m.mountpoint}${out}`);
        return l.length >= 2 ? l : undefined;
      });
      assert.equal(lines[1], want);
      // The mapping shows the file's original path, in the process's own view.
      const maps = await pair.b.exec("cat", [`/proc/${m.pid}/maps`]);
      assert.ok(maps.stdout.includes(` ${data}\n`), "maps names the original path");
      assert.ok(!maps.stdout.includes("/lazyfs/"), "and nothing under the mount");
      const st = await status(m.id);
      const f = st.perFile.find((x) => x.path === data);
      assert.ok(f, "the mapped file is served");
      assert.equal(f.bytesLocal, f.size);
    } finally {
      await stop(m);
    }
  });

  test("a sparse reader of a 256 MiB file moves little more than it reads", async () => {
    const data = `${DATA_DIR}/big.bin`;
    const out = `${DATA_DIR}/big.out`;
    const size = 256 * 1024 * 1024;
    await pair.a.exec("sh", ["-c", `head -c ${size} /dev/urandom > '${data}'`]);
    // After the signal, reads 1% of the file: ten 256 KiB reads spread over it.
    const reader = `${AWAIT_GO}\nimport sys,hashlib\nf=open(sys.argv[1],'rb')\nsize=int(sys.argv[2])\nprint('open',flush=True)\nawait_go()\nh=hashlib.sha256()\nn=0\nfor i in range(10):\n  f.seek((i*size//10)//262144*262144)\n  b=f.read(262144); n+=len(b); h.update(b)\nprint(n, h.hexdigest(), flush=True)\ntime.sleep(600)`;
    const wl = await pair.a.startWorkload("python3", ["-c", reader, data, String(size)], {
      stdout: out,
    });
    await waitFor("the reader", async () =>
      (await linesIn("a", out)).length >= 1 ? true : undefined,
    );
    const want = (
      await pair.a.exec("python3", [
        "-c",
        "import sys,hashlib\nf=open(sys.argv[1],'rb')\nh=hashlib.sha256()\nsize=int(sys.argv[2])\nfor i in range(10):\n  f.seek((i*size//10)//262144*262144); h.update(f.read(262144))\nprint(h.hexdigest())",
        data,
        String(size),
      ])
    ).stdout.trim();
    const c0 = await pair.link.counters();
    const m = await migrate(wl.pid);
    try {
      await go(m);
      const lines = await waitFor("the sparse reads on B", async () => {
        const l = await linesIn("b", `${m.mountpoint}${out}`);
        return l.length >= 2 ? l : undefined;
      });
      const c1 = await pair.link.counters();
      const [n, hash] = lines[1]!.split(" ");
      assert.equal(hash, want);
      const bytesRead = Number(n);
      assert.equal(bytesRead, 10 * 262144);
      const onLink = c1.aToB - c0.aToB;
      const budget = 1.1 * bytesRead + m.timeline.imageBytes;
      assert.ok(onLink <= budget, `link carried ${onLink} bytes; budget ${budget}`);
      assert.ok(onLink < size / 20, "far less than the file");
    } finally {
      await stop(m);
      await pair.a.exec("rm", ["-f", data]);
    }
  });

  /** A process that opens `paths`, waits for SIGUSR1, then prints the sha256 of each. */
  const HASHER = `${AWAIT_GO}\nimport sys,hashlib\nfs=[open(p,'rb') for p in sys.argv[1:]]\nprint('open',flush=True)\nawait_go()\nfor f in fs: print(hashlib.sha256(f.read()).hexdigest(),flush=True)\ntime.sleep(600)`;

  async function hashAfterMigration(paths: string[], extra: string[] = []) {
    const out = `${DATA_DIR}/hash.out.${Date.now()}`;
    const wl = await pair.a.startWorkload("python3", ["-c", HASHER, ...paths], { stdout: out });
    await waitFor("the hasher", async () =>
      (await linesIn("a", out)).length >= 1 ? true : undefined,
    );
    const m = await migrate(wl.pid, extra);
    await go(m);
    const lines = await waitFor("the hashes on B", async () => {
      const l = await linesIn("b", `${m.mountpoint}${out}`);
      return l.length >= 1 + paths.length ? l : undefined;
    });
    return { m, hashes: lines.slice(1) };
  }

  async function originSha(path: string) {
    return (await pair.a.exec("sh", ["-c", 'sha256sum < "$1"', "sh", path])).stdout.split(" ")[0]!;
  }

  test("file names with spaces, dots, non-ASCII characters and a newline", async () => {
    const dir = `${DATA_DIR}/odd names.d`;
    const names = [
      `${dir}/a b.c.d.txt`,
      `${dir}/ünïcødé — ファイル.txt`,
      `${dir}/new\nline.txt`,
      `${dir}/.hidden`,
    ];
    await pair.a.exec("mkdir", ["-p", dir]);
    for (const [i, n] of names.entries())
      await pair.a.writeFile(n, `content ${i} `.repeat(1000 + i));
    const want = await Promise.all(names.map(originSha));
    const { m, hashes } = await hashAfterMigration(names);
    try {
      assert.deepEqual(hashes, want);
      const st = await status(m.id);
      for (const n of names)
        assert.ok(
          st.perFile.some((f) => f.path === n),
          `${JSON.stringify(n)} served`,
        );
    } finally {
      await stop(m);
    }
  });

  test("a two-process tree migrates whole and both go on", async () => {
    const inA = `${DATA_DIR}/tree-parent.txt`;
    const inB = `${DATA_DIR}/tree-child.txt`;
    await makeLines(inA, 1500);
    await makeLines(inB, 1500);
    const tree =
      "import os,sys,time\npid=os.fork()\nsrc,dst=(sys.argv[2],sys.argv[4]) if pid==0 else (sys.argv[1],sys.argv[3])\nout=open(dst,'w')\nfor line in open(src):\n  out.write(line); out.flush(); time.sleep(0.003)\ntime.sleep(600)";
    const outA = `${DATA_DIR}/tree-parent.out`;
    const outB = `${DATA_DIR}/tree-child.out`;
    const wl = await pair.a.startWorkload("python3", ["-c", tree, inA, inB, outA, outB], {
      stdout: "/dev/null",
    });
    await waitFor("both writing", async () =>
      (await linesIn("a", outA).catch(() => [])).length > 20 &&
      (await linesIn("a", outB).catch(() => [])).length > 20
        ? true
        : undefined,
    );
    const m = await migrate(wl.pid);
    try {
      const children = (
        await pair.b.exec("sh", ["-c", `cat /proc/${m.pid}/task/*/children`])
      ).stdout.trim();
      assert.match(children, /^\d+$/, "the restored parent has its child");
      const want = Array.from({ length: 1500 }, (_, i) => `line ${String(i).padStart(6, "0")}`);
      for (const out of [outA, outB]) {
        const lines = await waitFor(
          `${out} complete on B`,
          async () => {
            const l = await linesIn("b", `${m.mountpoint}${out}`);
            return l.length === 1500 ? l : undefined;
          },
          60_000,
        );
        assert.deepEqual(lines, want);
      }
    } finally {
      await stop(m);
      await pair.b.exec("pkill", ["-KILL", "-f", "tree-parent.txt"], { allowFailure: true });
    }
  });

  test("policy eager fetches whole files in the background, untouched", async () => {
    const data = `${DATA_DIR}/whole.eager`;
    await pair.a.exec("sh", ["-c", `head -c 3000000 /dev/urandom > '${data}'`]);
    const want = await originSha(data);
    const wl = await pair.a.startWorkload("python3", ["-c", HASHER, data], {
      stdout: `${DATA_DIR}/eager.out`,
    });
    await waitFor("open", async () =>
      (await linesIn("a", `${DATA_DIR}/eager.out`)).length >= 1 ? true : undefined,
    );
    const m = await migrate(wl.pid, ["--policy", "*.eager=eager"]);
    try {
      const st = await waitFor("the eager file local", async () => {
        const s = await status(m.id);
        const f = s.perFile.find((x) => x.path === data);
        return f && f.bytesLocal === f.size ? s : undefined;
      });
      assert.equal(st.perFile.find((x) => x.path === data)!.policy, "eager");
      await pair.a.exec("rm", ["-f", data]); // the origin's copy is no longer needed
      const onB = (await pair.b.exec("sha256sum", [`${m.mountpoint}${data}`])).stdout.split(" ")[0];
      assert.equal(onB, want);
    } finally {
      await stop(m);
    }
  });

  test("policy remote: writes go to the origin, nothing is cached", async () => {
    const log = `${DATA_DIR}/shared.remote`;
    await pair.a.writeFile(log, "");
    const writer =
      "import sys,time\nf=open(sys.argv[1],'a')\ni=0\nwhile True:\n  f.write('remote %d\\n' % i); f.flush(); i+=1; time.sleep(0.01)";
    const wl = await pair.a.startWorkload("python3", ["-c", writer, log], { stdout: "/dev/null" });
    await waitFor("appends on A", async () =>
      (await linesIn("a", log)).length >= 5 ? true : undefined,
    );
    const m = await migrate(wl.pid, ["--policy", "*.remote=remote"]);
    try {
      const n0 = (await linesIn("a", log)).length;
      const lines = await waitFor("the migrated process appending on A's copy", async () => {
        const l = await linesIn("a", log);
        return l.length > n0 + 10 ? l : undefined;
      });
      assert.deepEqual(
        lines,
        lines.map((_, i) => `remote ${i}`),
      );
      const st = await status(m.id);
      const f = st.perFile.find((x) => x.path === log)!;
      assert.equal(f.policy, "remote");
      assert.equal(f.bytesLocal, 0);
      assert.notEqual(st.originState, "released", "a remote file keeps the origin needed");
    } finally {
      await stop(m);
    }
  });

  test("policy scrub serves synthesized bytes, never the real content", async () => {
    const secret = `${DATA_DIR}/credentials.secret`;
    await pair.a.exec("sh", ["-c", `head -c 1000000 /dev/urandom > '${secret}'`]);
    const zeros = sha256(Buffer.alloc(1000000));
    const c0 = await pair.link.counters();
    const { m, hashes } = await hashAfterMigration(
      [secret],
      ["--policy", "*.secret=scrub", "--scrub", "zeros"],
    );
    try {
      assert.deepEqual(hashes, [zeros]);
      const c1 = await pair.link.counters();
      assert.ok(
        c1.aToB - c0.aToB < m.timeline.imageBytes + 500_000,
        "the secret did not cross the link",
      );
    } finally {
      await stop(m);
    }
  });

  test("an identical copy on the target stays local (policy local)", async () => {
    const lib = `${DATA_DIR}/shared-lib.local`;
    const content = "identical on both hosts\n".repeat(5000);
    await pair.a.writeFile(lib, content);
    await pair.b.writeFile(lib, content);
    const mtime = (await pair.a.exec("stat", ["-c", "%Y", lib])).stdout.trim();
    await pair.b.exec("touch", ["-d", `@${mtime}`, lib]);
    const { m, hashes } = await hashAfterMigration([lib], ["--policy", "*.local=local"]);
    try {
      assert.deepEqual(hashes, [sha256(content)]);
      const fd = (await pair.b.exec("sh", ["-c", `ls -l /proc/${m.pid}/fd | grep shared-lib`]))
        .stdout;
      assert.ok(fd.includes(`-> ${lib}`), `the process sees its original path: ${fd}`);
      // Its directory is served (the process's cwd), so the file is too: from B's own copy.
      const st = await status(m.id);
      const f = st.perFile.find((x) => x.path === lib);
      assert.equal(f?.policy, "local");
      assert.equal(f?.bytesFetched, 0, "not one byte of it came from the origin");
    } finally {
      await stop(m);
    }
  });

  test("a checkpoint whose origin file changed is refused clearly", async () => {
    const data = `${DATA_DIR}/changing.txt`;
    await makeLines(data, 100);
    const images = `/tmp/lazyfs-e2e-changed-${process.pid}`;
    const wl = await pair.a.startWorkload("python3", ["-c", HASHER, data], {
      stdout: "/dev/null",
    });
    await waitOpen(wl.pid, data);
    await pair.a.exec("rm", ["-rf", images]);
    await pair.a.exec("mkdir", ["-p", images]);
    await pair.a.exec("/opt/lazyfs/criu/bin/criu", [
      "dump",
      "-t",
      String(wl.pid),
      "-D",
      images,
      "-o",
      "dump.log",
    ]);
    try {
      await pair.a.exec("sh", ["-c", `echo more >> '${data}'`]);
      const r = await lazyfs(
        ["restore", "--images", images, "--origin", `ssh://root@${pair.a.address}`, ...ssh()],
        true,
      );
      assert.notEqual(r.code, 0);
      const errLines = r.stderr.trim().split("\n");
      assert.equal(errLines.length, 1, r.stderr);
      assert.match(
        errLines[0]!,
        /^lazyfs: .*changing\.txt on ssh:\/\/root@.* changed since the checkpoint: it has 1205 bytes, the dump recorded 1200/,
      );
    } finally {
      await pair.a.exec("rm", ["-rf", images]);
    }
  });

  test("unmount refuses while the restored process has files open there", async () => {
    const data = `${DATA_DIR}/held.txt`;
    await makeLines(data, 10);
    const wl = await pair.a.startWorkload("python3", ["-c", HASHER, data], {
      stdout: "/dev/null",
    });
    await waitOpen(wl.pid, data);
    const m = await migrate(wl.pid);
    try {
      const r = await lazyfs(["unmount", m.id], true);
      assert.notEqual(r.code, 0);
      assert.match(
        r.stderr,
        new RegExp(`lazyfs: ${m.mountpoint} is still in use by 1 process\\(es\\): pid ${m.pid} `),
      );
      assert.equal((await status(m.id)).restoredAlive, true);
    } finally {
      await stop(m);
    }
    const after = await lazyfs(["status", m.id, "--json"]);
    assert.match(after.stdout, /no LazyFS daemon is running/);
  });

  /** Starts the line reader on A, dumps it there with stock CRIU into a directory B can read. */
  async function dumpReader(name: string, lines: number) {
    const input = `${DATA_DIR}/${name}.in`;
    const output = `${DATA_DIR}/${name}.out`;
    await makeLines(input, lines);
    const wl = await pair.a.startWorkload("python3", ["-u", "-c", LINE_READER, input, "0.003"], {
      stdout: output,
    });
    await waitFor("progress on A", async () =>
      (await linesIn("a", output)).length >= 20 ? true : undefined,
    );
    const images = `/tmp/lazyfs-e2e-${name}-${process.pid}`;
    await pair.a.exec("rm", ["-rf", images]);
    await pair.a.exec("mkdir", ["-p", images]);
    await pair.a.exec("/opt/lazyfs/criu/bin/criu", [
      "dump",
      "-t",
      String(wl.pid),
      "-D",
      images,
      "-o",
      "dump.log",
    ]);
    return { pid: wl.pid, output, images };
  }

  const numbered = (n: number) =>
    Array.from({ length: n }, (_, i) => `line ${String(i).padStart(6, "0")}`);

  test("lazyfs restore: a dump copied by hand, restored with its files served lazily", async () => {
    const d = await dumpReader("restore-cmd", 1500);
    const r = await lazyfs([
      "restore",
      "--images",
      d.images,
      "--origin",
      `ssh://root@${pair.a.address}`,
      ...ssh(),
      "--json",
    ]);
    const res = JSON.parse(r.stdout) as {
      id: string;
      pid: number;
      mountpoint: string;
      rewritten: number;
    };
    const m = { ...res, timeline: { freezeMs: 0, imageBytes: 0, firstFetchMs: null } };
    try {
      assert.equal(res.pid, d.pid);
      // The process sees its original paths in its own mount namespace.
      const fds = (await pair.b.exec("ls", ["-l", `/proc/${res.pid}/fd`])).stdout;
      assert.ok(fds.includes(`-> ${d.output}`) && !fds.includes("/lazyfs/"), fds);
      const lines = await waitFor(
        "the reader to finish on B",
        async () => {
          const l = await linesIn("b", `${res.mountpoint}${d.output}`);
          return l.length === 1500 ? l : undefined;
        },
        60_000,
      );
      assert.deepEqual(lines, numbered(1500));
    } finally {
      await stop(m);
      await pair.a.exec("rm", ["-rf", d.images]);
    }
  });

  test("the steps by hand: mount --background, rewrite, stock criu restore, status, unmount", async () => {
    const d = await dumpReader("by-hand", 1200);
    const mounted = await lazyfs([
      "mount",
      "--images",
      d.images,
      "--origin",
      `ssh://root@${pair.a.address}`,
      ...ssh(),
      "--block-size",
      "64K",
      "--background",
    ]);
    const id = mounted.stdout.trim();
    assert.match(id, /^m[0-9a-f]{6}$/);
    const cacheConfig = await pair.b.readFile(`${STATE}/${id}/cache/store.json`);
    assert.equal(JSON.parse(cacheConfig).blockSize, 65536);
    const out = `${d.images}.lazy`;
    try {
      const rw = await lazyfs(["rewrite", "--id", id, "--out", out]);
      assert.ok(rw.stdout.includes(`${d.output} -> /lazyfs/${id}${d.output}`), rw.stdout);
      await pair.b.exec("/opt/lazyfs/criu/bin/criu", [
        "restore",
        "-D",
        out,
        "-d",
        "-o",
        "restore.log",
      ]);
      const lines = await waitFor(
        "the reader to finish on B",
        async () => {
          const l = await linesIn("b", `/lazyfs/${id}${d.output}`);
          return l.length === 1200 ? l : undefined;
        },
        60_000,
      );
      assert.deepEqual(lines, numbered(1200));
      const table = (await lazyfs(["status"])).stdout;
      assert.match(table, /^ID\s+ORIGIN\s+ORIGIN STATE/m);
      assert.ok(table.includes(id));
    } finally {
      await stop({
        id,
        pid: d.pid,
        mountpoint: `/lazyfs/${id}`,
        timeline: { freezeMs: 0, imageBytes: 0, firstFetchMs: null },
      });
      await pair.a.exec("rm", ["-rf", d.images, out]);
    }
  });

  test("bad input: one line naming what is wrong, non-zero exit", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["migrate", "--from", "ftp://x", "--pid", "1"],
        /^lazyfs: origin "ftp:\/\/x" is not of the form ssh:\/\/user@host\[:port\]/,
      ],
      [
        ["migrate", "--from", `ssh://root@${pair.a.address}`, "--pid", "999999", ...ssh()],
        /^lazyfs: root@.*: no process with pid 999999 there$/,
      ],
      [
        [
          "migrate",
          "--from",
          `ssh://root@${pair.a.address}`,
          "--pid",
          "1",
          "--known-hosts",
          "/dev/null",
          "-i",
          sshd.identityFile,
        ],
        /^lazyfs: root@10\.213\.\d+\.1:22: unknown host key/,
      ],
      [
        ["restore", "--images", "/nonexistent", "--origin", `ssh://root@${pair.a.address}`],
        /^lazyfs: \/nonexistent: no such directory/,
      ],
      [
        ["migrate", "--from", `ssh://root@${pair.a.address}`, "--pid", "1", "--prefetch", "soon"],
        /^lazyfs: --prefetch "soon": expected none, immediate, idle or delay:<ms>/,
      ],
      [
        ["migrate", "--from", `ssh://root@${pair.a.address}`, "--pid", "1", "--policy", "*.x=fast"],
        /^lazyfs: policy rule \*\.x: unknown policy fast/,
      ],
      [
        ["migrate", "--from", `ssh://root@${pair.a.address}`, "--pid", "1", "--block-size", "3K"],
        /^lazyfs: --block-size "3K": expected a multiple of 4K from 4K to 16M/,
      ],
      [["unmount", "nosuch"], /^lazyfs: no migration nosuch on this host/],
    ];
    for (const [args, want] of cases) {
      const r = await lazyfs(args, true);
      assert.notEqual(r.code, 0, args.join(" "));
      const lines = r.stderr
        .trim()
        .split("\n")
        .filter((l) => !/^(warn|info|debug) /.test(l));
      assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(lines[0]!, want);
    }
  });

  test("a killed supervisor and daemon: the stale mount is cleared and a new daemon serves the same cache", async () => {
    const data = `${DATA_DIR}/resume.bin`;
    await pair.a.exec("sh", ["-c", `head -c 5000000 /dev/urandom > '${data}'`]);
    const want = await originSha(data);
    // Prefetch also lists the served directories on the origin: only then is it independent.
    const { m, hashes } = await hashAfterMigration([data], ["--prefetch", "immediate"]);
    assert.deepEqual(hashes, [want]);
    const before = await waitFor("independence", async () => {
      const st = await status(m.id);
      return st.originState === "released" ? st : undefined;
    });
    assert.equal(before.total.bytesLocal, before.total.size);
    // Both pids are b's own: the daemon runs inside b, its PID namespace included.
    await pair.b.kill(m.pid, "SIGKILL");
    // All three of ours (daemon, supervisor, the supervisor's standby), stopped first so that
    // none reacts to another's death: any one left would serve the same mount again (failover).
    assert.ok(before.supervisorPid);
    const standby = await standbyOf(pair.b, before);
    const ours = [before.daemonPid, before.supervisorPid, standby].map(String);
    await pair.b.exec("kill", ["-STOP", ...ours]);
    await pair.b.exec("kill", ["-KILL", ...ours]);
    await waitFor("the daemon to die", async () =>
      (await pair.b.pidAlive(before.daemonPid)) ? undefined : true,
    );
    const un = await lazyfs(["unmount", m.id]);
    assert.match(
      un.stdout,
      new RegExp(`${m.id}: no daemon was running; detached the stale mount ${m.mountpoint}`),
    );
    await pair.a.exec("rm", ["-f", data]); // everything needed is in the cache
    await lazyfs(["mount", "--id", m.id, "--background"]);
    try {
      const onB = (
        await pair.b.exec("sh", ["-c", 'sha256sum < "$1"', "sh", `${m.mountpoint}${data}`])
      ).stdout.split(" ")[0];
      assert.equal(onB, want);
      const after = await status(m.id);
      assert.equal(after.total.bytesFetched, 0, "nothing fetched again");
      assert.equal(after.originState, "released");
    } finally {
      await lazyfs(["unmount", m.id, "--force", "--purge"], true);
    }
  });
});
