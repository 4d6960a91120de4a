/**
 * A full cache disk is a state, not a crash. The migration's state directory (cache, journal,
 * passthrough table, daemon log) is on a small tmpfs inside host b. A migrated process reads a
 * large file of the origin, re-reads a small file it has made local, and appends lines to a
 * log of its own; its reads fill the disk. Then: reads of data not yet local fail with ENOSPC,
 * `status` and metrics say the cache disk is full, the log says so once; the daemon killed
 * while the disk is full is replaced by one that serves (the local file reads on, exact, and
 * nothing gets ENOTCONN); once space is freed the reads go on, exact, and status clears.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  AWAIT_GO,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";
import { parseOpenMetrics, sampleValue } from "./openmetrics.js";

const MiB = 1024 * 1024;
const ENOSPC = 28;
const ENOTCONN = 107;

/**
 * argv: big, small, lines, report dir (on b, outside the process's served directories).
 * After SIGUSR1: reads `big` in 1 MiB steps up to the byte count in REPORT/limit, re-reads
 * `small` by name and checks it, appends a line to `lines`; reports JSON lines to REPORT/out:
 * every read (sha), every error kind once with its errno, and a tick with error counts.
 */
const PROGRAM = `${AWAIT_GO}
import hashlib,json,os,sys,time
big,small,lines,report=sys.argv[1:5]
print('ready',flush=True)
await_go()
rep=open(report+'/out','a',buffering=1)
def say(**k): rep.write(json.dumps(k)+'\\n')
want=hashlib.sha256(open(small,'rb').read()).hexdigest()
say(ev='go',small=want)
fd=os.open(big,os.O_RDONLY)
out=open(lines,'a')
off=0; n=0; it=0; errs={}
def err(what,e):
  k='%s:%d' % (what,e.errno)
  if k not in errs: say(ev='error',what=what,errno=e.errno,off=off)
  errs[k]=errs.get(k,0)+1
while True:
  it+=1
  try: limit=int(open(report+'/limit').read() or 0)
  except (OSError,ValueError): limit=0
  if off<limit:
    try:
      b=os.pread(fd,min(${MiB},limit-off),off)
      say(ev='read',off=off,len=len(b),sha=hashlib.sha256(b).hexdigest())
      off+=len(b)
    except OSError as e:
      err('read',e)
  try:
    with open(small,'rb') as f:
      if hashlib.sha256(f.read()).hexdigest()!=want: say(ev='small-differs')
  except OSError as e:
    err('small',e)
  try:
    out.write('%d\\n' % n); out.flush(); n+=1
  except OSError as e:
    err('write',e)
  if it%10==0: say(ev='tick',it=it,off=off,lines=n,errs=errs)
  time.sleep(0.05)
`;

interface Report {
  ev: string;
  off?: number;
  len?: number;
  sha?: string;
  small?: string;
  what?: string;
  errno?: number;
  it?: number;
  errs?: Record<string, number>;
}

let pair: HostPair;
let lazyfs: LazyfsOnB;
const dir = `${DATA_DIR}/exhaustion-${process.pid}`;
const reportDir = `${DATA_DIR}/exhaustion-report-${process.pid}`;
let tmpfsMounted = false;

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function report(): Promise<Report[]> {
  return (await linesIn(pair.b, `${reportDir}/out`)).map((l) => JSON.parse(l) as Report);
}

/** Waits for the process's next tick after `after` ticks seen; returns the report then. */
async function nextTick(seen: number, what: string, ms = 60_000): Promise<Report[]> {
  return waitFor(
    what,
    async () => {
      const r = await report().catch(() => []);
      return r.filter((x) => x.ev === "tick").length > seen ? r : undefined;
    },
    ms,
  );
}

const ticks = (r: Report[]) => r.filter((x) => x.ev === "tick").length;

/** `lazyfs metrics` (printed once): the disk-full gauge and the ENOSPC counter of `id`. */
async function diskMetrics(id: string) {
  const fams = parseOpenMetrics((await lazyfs.run(["metrics"])).stdout);
  return {
    full: sampleValue(fams, "lazyfs_cache_disk_full", { migration: id }),
    failed: sampleValue(fams, "lazyfs_cache_enospc_requests", { migration: id }),
  };
}

/** Free bytes of the state directory's file system on b. */
async function freeBytes(): Promise<number> {
  const r = await pair.b.exec("python3", [
    "-c",
    "import os,sys\ns=os.statvfs(sys.argv[1])\nprint(s.f_bfree*s.f_frsize)",
    lazyfs.stateDir,
  ]);
  return Number(r.stdout.trim());
}

describe("a full cache disk", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
    // The state directory (default cache, log, journal) on a small file system of its own.
    await pair.b.exec("mkdir", ["-p", lazyfs.stateDir, reportDir]);
    await pair.b.exec("mount", [
      "-t",
      "tmpfs",
      "-o",
      "size=256m,mode=0700",
      "tmpfs",
      lazyfs.stateDir,
    ]);
    tmpfsMounted = true;
  });
  after(async () => {
    await lazyfs?.cleanUp();
    if (tmpfsMounted) await pair.b.exec("umount", ["-l", lazyfs.stateDir]).catch(() => {});
    await pair?.b.exec("rm", ["-rf", reportDir, lazyfs.stateDir]).catch(() => {});
    await stopHosts({ pair, lazyfs });
  });

  test("reads get ENOSPC and status says so; a daemon killed meanwhile is replaced and serves local data; all goes on once space is freed", async () => {
    const big = randomBytes(48 * MiB);
    const small = randomBytes(MiB);
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.writeFile(`${dir}/big.bin`, big);
    await pair.a.writeFile(`${dir}/small.bin`, small);
    await pair.a.writeFile(`${dir}/lines.txt`, "");
    const args = [`${dir}/big.bin`, `${dir}/small.bin`, `${dir}/lines.txt`, reportDir];
    const wl = await pair.a.startWorkload("python3", ["-c", PROGRAM, ...args], {
      stdout: `${dir}/out.txt`,
      cwd: dir,
    });
    await waitFor("the program on A", async () =>
      (await linesIn(pair.a, `${dir}/out.txt`)).includes("ready") ? true : undefined,
    );
    let m: Migrated | undefined;
    try {
      m = await lazyfs.migrate(wl.pid);
      const id = m.id;
      await pair.b.writeFile(`${reportDir}/limit`, String(4 * MiB));
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      let r = await waitFor("the first 4 MiB read on B", async () => {
        const x = await report().catch(() => []);
        return x.some((e) => e.ev === "read" && e.off === 3 * MiB) ? x : undefined;
      });
      assert.equal(r.find((e) => e.ev === "go")?.small, sha(small));
      const before = await lazyfs.status(id);
      assert.equal(before.cacheDisk.full, false);

      // Leave 6 MiB free, and let the process read 16 MiB more than that.
      const ballast = (await freeBytes()) - 6 * MiB;
      assert.ok(ballast > 0, "room for the ballast");
      await pair.b.exec("fallocate", ["-l", String(ballast), `${lazyfs.stateDir}/ballast`]);
      const limit = 26 * MiB;
      await pair.b.writeFile(`${reportDir}/limit`, String(limit));
      r = await waitFor("a read to fail with ENOSPC", async () => {
        const x = await report();
        return x.some((e) => e.ev === "error" && e.what === "read") ? x : undefined;
      });
      const failure = r.find((e) => e.ev === "error" && e.what === "read")!;
      assert.equal(failure.errno, ENOSPC, JSON.stringify(failure));
      const full = await waitFor("status to say the cache disk is full", async () => {
        const s = await lazyfs.status(id);
        return s.cacheDisk.full && s.cacheDisk.failedRequests >= 3 ? s : undefined;
      });
      assert.ok(full.cacheDisk.fullSinceMs !== null);
      const table = (await lazyfs.run(["status", id])).stdout;
      assert.match(table, /CACHE DISK/);
      assert.match(table, /full since \d\d:\d\d:\d\d \(\d+ requests failed\)/);
      assert.equal((await diskMetrics(id)).full, 1);

      // The daemon killed while the disk is full: a new one starts and serves.
      const killed = full.daemonPid;
      assert.ok(await pair.b.kill(killed, "SIGKILL"));
      const next = await waitFor(
        "a new daemon",
        async () => {
          const s = await lazyfs.status(id).catch(() => undefined);
          return s?.daemonPid && s.daemonPid !== killed ? s : undefined;
        },
        60_000,
      );
      assert.equal(next.serverRestarts, 1);
      r = await nextTick(ticks(await report()) + 3, "the process to go on after the failover");
      const fullAgain = await waitFor("the new daemon to see the disk full", async () => {
        const s = await lazyfs.status(id);
        return s.cacheDisk.full ? s : undefined;
      });
      assert.equal(fullAgain.daemonPid, next.daemonPid, "the same daemon serves on");
      // From b's own view too: a fully local file reads, nothing is ENOTCONN.
      const onB = await pair.b.exec("sha256sum", [`${m.mountpoint}${dir}/small.bin`]);
      assert.equal(onB.stdout.split(" ")[0], sha(small));

      await pair.b.exec("rm", ["-f", `${lazyfs.stateDir}/ballast`]);
      r = await waitFor(
        "the reads to go on once space is freed",
        async () => {
          const x = await report();
          return x.some((e) => e.ev === "read" && (e.off ?? 0) + (e.len ?? 0) === limit)
            ? x
            : undefined;
        },
        120_000,
      );
      const reads = r.filter((e) => e.ev === "read");
      assert.equal(
        reads.reduce((n, e) => n + (e.len ?? 0), 0),
        limit,
        "every byte read once",
      );
      for (const e of reads) {
        assert.equal(e.sha, sha(big.subarray(e.off!, e.off! + e.len!)), `bytes @${e.off}`);
      }
      // Reads failed for lack of space only, the fully local file never failed, and nothing
      // got ENOTCONN (the process's line writes may see the disk full too).
      assert.deepEqual(
        r.filter((e) => e.ev === "small-differs" || (e.ev === "error" && e.what === "small")),
        [],
        "the fully local file always read, exact",
      );
      for (const e of r.filter((x) => x.ev === "error")) {
        assert.notEqual(e.errno, ENOTCONN, `never ENOTCONN: ${JSON.stringify(e)}`);
        if (e.what === "read") assert.equal(e.errno, ENOSPC, JSON.stringify(e));
      }
      const cleared = await waitFor("status to clear", async () => {
        const s = await lazyfs.status(id);
        return s.cacheDisk.full ? undefined : s;
      });
      assert.ok(cleared.cacheDisk.failedRequestsTotal > 0);
      assert.match((await lazyfs.run(["status", id])).stdout, / ok /);
      const metrics = await diskMetrics(id);
      assert.equal(metrics.full, 0);
      assert.ok((metrics.failed ?? 0) > 0, "requests failed with ENOSPC, counted");
      // The log: one line when it starts and one when it ends, per daemon, not one a request.
      const log = await pair.b.readFile(`${lazyfs.stateDir}/${id}/daemon.log`);
      const starts = log.split("\n").filter((l) => l.includes("the cache disk is full")).length;
      const ends = log
        .split("\n")
        .filter((l) => l.includes("the cache disk has space again")).length;
      assert.ok(starts >= 1 && starts <= 2, `${starts} warnings that the disk is full`);
      assert.equal(ends, 1);
      assert.ok(await pair.b.pidAlive(m.pid), "the process lives on");
      process.stdout.write(
        `figure: ${JSON.stringify({ full: fullAgain.cacheDisk, cleared: cleared.cacheDisk, logLines: { starts, ends } })}\n`,
      );
    } finally {
      if (m) await lazyfs.stop(m);
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });
});
