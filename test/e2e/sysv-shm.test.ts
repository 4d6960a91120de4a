/**
 * What CRIU cannot dump is refused before the freeze: a process that maps SysV shared memory
 * of the host's IPC namespace (PostgreSQL on a plain host) gets one line and runs on at the
 * origin, never stopped; the same program in an IPC namespace of its own migrates.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  errorLines,
  type LazyfsOnB,
  privateDevShm,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

/** Attaches a SysV segment (removed at once: it goes with the process), then counts. */
const SHM_COUNTER = `import ctypes,sys,time
libc=ctypes.CDLL(None,use_errno=True)
libc.shmat.restype=ctypes.c_void_p
shmid=libc.shmget(0,65536,0o1600)
assert shmid>=0, ctypes.get_errno()
addr=libc.shmat(shmid,None,0)
libc.shmctl(shmid,0,None)
ctypes.memset(addr,7,65536)
i=0
while True:
  print(i, ctypes.string_at(addr+i%65536,1)==b'\\x07', flush=True); i+=1; time.sleep(0.02)`;

/** Whole lines only: the counter may be halfway through one. */
async function wholeLines(host: HostPair["a"], path: string): Promise<string[]> {
  const text = await host.readFile(path);
  return text
    .slice(0, text.lastIndexOf("\n") + 1)
    .split("\n")
    .filter((l) => l.length > 0);
}

async function counts(path: string): Promise<number[]> {
  return (await wholeLines(pair.a, path)).map((l) => Number(l.split(" ")[0]));
}

describe("SysV shared memory", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
    // The machine's /dev/shm holds other test runs' dump directories (some kept on purpose).
    await privateDevShm(pair);
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("of the host's IPC namespace: refused in one line before the freeze, the process runs on", async () => {
    const out = `${DATA_DIR}/shm-host.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", SHM_COUNTER], { stdout: out });
    try {
      await waitFor("the counter", async () => ((await counts(out)).length > 3 ? true : undefined));
      const r = await lazyfs.run(lazyfs.migrateArgs(wl.pid), true);
      assert.notEqual(r.code, 0);
      const lines = errorLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(
        lines[0]!,
        new RegExp(
          `^lazyfs: .*: pid ${wl.pid} \\(python3\\) maps SysV shared memory of the host's IPC namespace; CRIU cannot dump that: .*the process was not stopped$`,
        ),
      );
      // It goes on counting on the origin, and nothing of the attempt is left on the target.
      const seen = (await counts(out)).length;
      await waitFor("more counts", async () =>
        (await counts(out)).length > seen + 5 ? true : undefined,
      );
      const c = await counts(out);
      assert.deepEqual(
        c,
        c.map((_, i) => i),
      );
      const left = await pair.b.exec("ls", ["-A", lazyfs.stateDir], { allowFailure: true });
      assert.equal(left.stdout.trim(), "");
      const dumps = await pair.a.exec("sh", ["-c", "ls -d /dev/shm/lazyfs-dump.* 2>/dev/null"], {
        allowFailure: true,
      });
      assert.equal(dumps.stdout.trim(), "");
    } finally {
      await pair.a.kill(wl.pid, "SIGKILL").catch(() => {});
    }
  });

  test("in an IPC namespace of its own: migrates, its segment and its count go on", async () => {
    const out = `${DATA_DIR}/shm-own.txt`;
    const wl = await pair.a.startWorkload("unshare", ["--ipc", "python3", "-c", SHM_COUNTER], {
      stdout: out,
    });
    const m = await lazyfs.migrate(wl.pid);
    try {
      const path = `${m.mountpoint}${out}`;
      const before = (await wholeLines(pair.b, path)).length;
      await waitFor("counts on B", async () =>
        (await wholeLines(pair.b, path)).length > before + 5 ? true : undefined,
      );
      const lines = await wholeLines(pair.b, path);
      const c = lines.map((l) => Number(l.split(" ")[0]));
      assert.deepEqual(
        c,
        c.map((_, i) => i),
      );
      assert.ok(
        lines.every((l) => l.endsWith(" True")),
        "the segment's bytes came along",
      );
    } finally {
      await lazyfs.stop(m);
    }
  });
});
