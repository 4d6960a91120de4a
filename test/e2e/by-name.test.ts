/**
 * Real programs that reach files by name after the migration, in their own mount namespace
 * on the target: followers of a log the origin keeps appending to (policy remote), and the
 * process's view of its paths in /proc.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import { AWAIT_GO, type LazyfsOnB, linesIn, startHosts, stopHosts, waitFor } from "./helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

const APPENDER =
  "import sys,time\nf=open(sys.argv[1],'a')\ni=int(sys.argv[2])\nwhile True:\n  f.write('entry %d\\n' % i); f.flush(); i+=1; time.sleep(0.05)";

const entries = (lines: string[]) => lines.map((l) => Number(l.replace(/^entry /, "")));

describe("programs that reach files by name after the migration", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(() => stopHosts({ pair, lazyfs }));

  for (const [name, follower] of [
    // GNU tail's inotify mode dies on the EINTR CRIU's restore leaves in its poll() (with
    // plain CRIU too); its polling mode is what survives a checkpoint.
    ["tail -f", ["tail", "---disable-inotify", "-n", "+1", "-f"]],
    [
      // Waits on an inotify watch for IN_MODIFY: the restored watch must fire on B.
      "an inotify follower",
      [
        "python3",
        "-c",
        "import ctypes,os,sys\nlibc=ctypes.CDLL(None,use_errno=True)\nfd=libc.inotify_init()\nassert libc.inotify_add_watch(fd,sys.argv[1].encode(),2)>=0\nf=open(sys.argv[1])\nwhile True:\n  l=f.read()\n  if l: sys.stdout.write(l); sys.stdout.flush()\n  else: os.read(fd,4096)",
      ],
    ],
  ] as const) {
    test(`${name} of a log the origin keeps appending to goes on printing its new lines (--policy '*.log=remote')`, async () => {
      const dir = `${DATA_DIR}/follow-${name.replace(/\W+/g, "-")}`;
      const log = `${dir}/app.log`;
      const out = `${dir}/follower.out`;
      await pair.a.exec("mkdir", ["-p", dir]);
      await pair.a.writeFile(log, "");
      const appender = await pair.a.startWorkload("python3", ["-c", APPENDER, log, "0"], {
        stdout: "/dev/null",
      });
      const [cmd, ...args] = follower;
      const wl = await pair.a.startWorkload(cmd, [...args, log], { stdout: out, cwd: dir });
      await waitFor("the follower on A", async () =>
        (await linesIn(pair.a, out)).length >= 20 ? true : undefined,
      );
      const m = await lazyfs.migrate(wl.pid, ["--policy", "*.log=remote"]);
      try {
        // The process sees its original paths, in its own mount namespace.
        const fds = (await pair.b.exec("ls", ["-l", `/proc/${m.pid}/fd`])).stdout;
        assert.ok(fds.includes(`-> ${log}`), fds);
        assert.ok(fds.includes(`-> ${out}`), fds);
        const cwd = (await pair.b.exec("readlink", [`/proc/${m.pid}/cwd`])).stdout.trim();
        assert.equal(cwd, dir);
        const appended = async () => entries(await linesIn(pair.a, log)).length;
        const atMigration = await appended();
        const lines = await waitFor(
          "the new lines on B",
          async () => {
            const l = await linesIn(pair.b, `${m.mountpoint}${out}`);
            return l.length >= atMigration + 40 ? l : undefined;
          },
          30_000,
        );
        assert.deepEqual(
          entries(lines),
          lines.map((_, i) => i),
          "every entry once, in order, across the migration",
        );
      } finally {
        await lazyfs.stop(m);
        await pair.a.exec("kill", ["-KILL", String(appender.pid)], { allowFailure: true });
      }
    });
  }
  test("SQLite in rollback-journal mode goes on inserting (its -journal is created by name); integrity_check ok", async () => {
    const dir = `${DATA_DIR}/sqlite-journal`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const writer =
      "import sqlite3,sys,time,traceback\nsys.excepthook=lambda *e: (print('ERR', *traceback.format_exception(*e), flush=True))\ndb=sqlite3.connect(sys.argv[1],isolation_level=None)\nassert db.execute('pragma journal_mode=delete').fetchone()[0]=='delete'\ndb.execute('create table if not exists t(i integer primary key, v text)')\ni=0\nwhile True:\n  db.execute('insert into t(v) values (?)',('row %d' % i,)); i+=1\n  if i%20==0:\n    ok=db.execute('pragma integrity_check').fetchone()[0]\n    n=db.execute('select count(*) from t').fetchone()[0]\n    print(i,n,ok,flush=True)\n  time.sleep(0.002)";
    const out = `${dir}/writer.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", writer, `${dir}/test.db`], {
      stdout: out,
      cwd: dir,
    });
    await waitFor("inserts on A", async () =>
      (await linesIn(pair.a, out)).length >= 5 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid, ["--file-locks"]);
    try {
      const before = (await linesIn(pair.a, out)).length;
      const lines = await waitFor(
        "inserts on B",
        async () => {
          const l = await linesIn(pair.b, `${m.mountpoint}${out}`);
          assert.ok(!l.some((x) => x.startsWith("ERR")), l.join("\n"));
          return l.length >= before + 10 ? l : undefined;
        },
        60_000,
      );
      for (const [k, line] of lines.entries()) {
        assert.equal(
          line,
          `${(k + 1) * 20} ${(k + 1) * 20} ok`,
          "every insert there, integrity ok",
        );
      }
      // The journal came and went inside the process's view only: B's own directory (an empty
      // mount point LazyFS made for that view) holds nothing.
      const own = await pair.b.exec("ls", ["-A", dir]);
      assert.equal(own.stdout.trim(), "");
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("Python imports, after the migration, a module that exists only on the origin", async () => {
    const dir = `${DATA_DIR}/py-app`;
    await pair.a.exec("mkdir", ["-p", `${dir}/pkg`]);
    await pair.a.writeFile(`${dir}/pkg/__init__.py`, "");
    await pair.a.writeFile(`${dir}/pkg/later.py`, "VALUE = 'imported from the origin'\n");
    const program = `${AWAIT_GO}\nimport sys\nprint('started',flush=True)\nawait_go()\nimport pkg.later\nprint(pkg.later.VALUE,flush=True)\ntime.sleep(600)`;
    const out = `${dir}/out.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", program], { stdout: out, cwd: dir });
    await waitFor("started", async () => ((await linesIn(pair.a, out)).length ? true : undefined));
    const m = await lazyfs.migrate(wl.pid);
    try {
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const lines = await waitFor("the import on B", async () => {
        const l = await linesIn(pair.b, `${m.mountpoint}${out}`);
        return l.length >= 2 ? l : undefined;
      });
      assert.deepEqual(lines, ["started", "imported from the origin"]);
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("a cwd whose directory exists on B with other attributes (1777 on A, 0755 on B)", async () => {
    const dir = `${DATA_DIR}/sticky`;
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.exec("chmod", ["1777", dir]);
    await pair.b.exec("mkdir", ["-p", dir]);
    await pair.b.exec("chmod", ["0755", dir]);
    const out = `${dir}/count.txt`;
    const counter = "import time\ni=0\nwhile True:\n  print(i,flush=True); i+=1; time.sleep(0.01)";
    const wl = await pair.a.startWorkload("python3", ["-c", counter], { stdout: out, cwd: dir });
    await waitFor("counting", async () =>
      (await linesIn(pair.a, out)).length > 5 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid);
    try {
      const mode = await pair.b.exec("nsenter", [
        "-t",
        String(m.pid),
        "-m",
        "stat",
        "-c",
        "%a",
        dir,
      ]);
      assert.equal(mode.stdout.trim(), "1777", "the process sees the origin's directory");
      const own = await pair.b.exec("stat", ["-c", "%a", dir]);
      assert.equal(own.stdout.trim(), "755", "B's own directory is untouched");
      const n = (await linesIn(pair.a, out)).length;
      await waitFor("counting on B", async () =>
        (await linesIn(pair.b, `${m.mountpoint}${out}`)).length > n + 10 ? true : undefined,
      );
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("two migrations from the same origin directory do not see each other, nor does B", async () => {
    const dir = `${DATA_DIR}/shared-origin-dir`;
    await pair.a.exec("mkdir", ["-p", dir]);
    // Waits for SIGUSR1, then creates a file named after its argument and lists the directory.
    const program = `${AWAIT_GO}\nimport os,sys\nprint('ready',flush=True)\nawait_go()\nopen(sys.argv[1],'w').write('mine')\nprint(' '.join(sorted(n for n in os.listdir('.') if n.startswith('made-by-'))),flush=True)\ntime.sleep(600)`;
    const started = [];
    for (const who of ["one", "two"]) {
      const wl = await pair.a.startWorkload("python3", ["-c", program, `made-by-${who}`], {
        stdout: `${dir}/${who}.out`,
        cwd: dir,
      });
      await waitFor("ready", async () =>
        (await linesIn(pair.a, `${dir}/${who}.out`)).length ? true : undefined,
      );
      started.push({ who, m: await lazyfs.migrate(wl.pid) });
    }
    try {
      for (const { who, m } of started) {
        await pair.b.exec("kill", ["-USR1", String(m.pid)]);
        const lines = await waitFor("the listing", async () => {
          const l = await linesIn(pair.b, `${m.mountpoint}${dir}/${who}.out`);
          return l.length >= 2 ? l : undefined;
        });
        assert.equal(lines[1], `made-by-${who}`, "each sees only its own new file");
      }
      const own = await pair.b.exec("sh", ["-c", `ls -A '${dir}' 2>/dev/null; true`]);
      assert.equal(own.stdout.trim(), "", "nothing of the origin in B's own namespace");
      const onA = await pair.a.exec("ls", ["-A", dir]);
      assert.ok(!onA.stdout.includes("made-by-"), "nothing written back to the origin");
    } finally {
      for (const { m } of started) await lazyfs.stop(m);
    }
  });
  test("--map OLD=NEW: the process finds its files, cwd and output under the new path", async () => {
    const from = `${DATA_DIR}/map-from`;
    const to = `${DATA_DIR}/map-to`;
    await pair.a.exec("mkdir", ["-p", from]);
    await pair.a.writeFile(`${from}/in.txt`, "mapped content\n".repeat(1000));
    const want = (await pair.a.exec("sha256sum", [`${from}/in.txt`])).stdout.split(" ")[0];
    const program = `${AWAIT_GO}\nimport hashlib,os,sys\nf=open(sys.argv[1],'rb')\nprint('open',flush=True)\nawait_go()\nprint(hashlib.sha256(f.read()).hexdigest(),os.getcwd(),flush=True)\ntime.sleep(600)`;
    const wl = await pair.a.startWorkload("python3", ["-c", program, `${from}/in.txt`], {
      stdout: `${from}/out.txt`,
      cwd: from,
    });
    await waitFor("open", async () =>
      (await linesIn(pair.a, `${from}/out.txt`)).length ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid, ["--map", `${from}=${to}`]);
    try {
      const fds = (await pair.b.exec("ls", ["-l", `/proc/${m.pid}/fd`])).stdout;
      assert.ok(fds.includes(`-> ${to}/in.txt`) && fds.includes(`-> ${to}/out.txt`), fds);
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const lines = await waitFor("the hash on B", async () => {
        const l = await linesIn(pair.b, `${m.mountpoint}${to}/out.txt`);
        return l.length >= 2 ? l : undefined;
      });
      assert.equal(lines[1], `${want} ${to}`);
    } finally {
      await lazyfs.stop(m);
    }
  });
});
