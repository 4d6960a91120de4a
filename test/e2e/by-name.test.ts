/**
 * Real programs that reach files by name after the migration, in their own mount namespace
 * on the target: followers of a log the origin keeps appending to (policy remote), and the
 * process's view of its paths in /proc.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  type HostPair,
  type SshdHandle,
} from "../../src/hosts/index.js";
import { LazyfsOnB, linesIn, waitFor } from "./helpers.js";

let pair: HostPair;
let sshd: SshdHandle;
let lazyfs: LazyfsOnB;

const APPENDER =
  "import sys,time\nf=open(sys.argv[1],'a')\ni=int(sys.argv[2])\nwhile True:\n  f.write('entry %d\\n' % i); f.flush(); i+=1; time.sleep(0.05)";

const entries = (lines: string[]) => lines.map((l) => Number(l.replace(/^entry /, "")));

describe("programs that reach files by name after the migration", { concurrency: false }, () => {
  before(async () => {
    await cleanupStaleHosts();
    pair = await createHostPair();
    sshd = await pair.startOriginSshd();
    lazyfs = new LazyfsOnB(pair, sshd);
  });
  after(async () => {
    await lazyfs?.cleanUp();
    await pair?.destroy();
  });

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
});
