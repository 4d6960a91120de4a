/**
 * Failover end to end: a migrated process reads a file that is only on the origin (partly read
 * before the migration), copies it block by block into a file of its own with fsyncs, and
 * appends a record per block, while the process serving its mount is killed with SIGKILL ten
 * times (its pid from `status --json` each time). The process must see no error at all; what
 * it read hashes to the origin's sha256, its copy and records are exact. The longest stall the
 * process saw (the largest gap between two of its steps) is printed as a diagnostic.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  AWAIT_GO,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  sleep,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

const CHUNK = 64 * 1024;
const SIZE = 96 << 20;
const BEFORE = 16; // chunks read (and copied) on the origin before the migration

/** The records PROGRAM writes for `input` (run where the file is). */
const RECORDS = `import hashlib,sys
f=open(sys.argv[1],'rb')
i=0
while True:
  b=f.read(${CHUNK})
  if not b: break
  print('%d %d %s' % (i, len(b), hashlib.sha256(b).hexdigest()[:16]))
  i+=1`;

/**
 * The stall each kill caused: the length of the process's first step over 100 ms that ended
 * after the kill was sent and began before it was done (`kills`: [sent, done] wall-clock ms),
 * or 0 if no step took over 100 ms then.
 */
function stalls(kills: [number, number][], gaps: string): number[] {
  const spans = gaps
    .split(",")
    .filter((g) => g.length > 0)
    .map((g) => g.split(":").map(Number) as [number, number]);
  return kills.map(
    ([sent, done]) => spans.find(([end, len]) => end >= sent && end - len <= done)?.[1] ?? 0,
  );
}

/**
 * argv: input, copy, records. Reads CHUNK bytes at a time (paced, until SIGUSR2 says hurry),
 * writes each chunk at the same offset of `copy` and a line to `records`, fsyncs both every 8
 * chunks. Prints "ERROR ..." on any failure and goes on; at the end "DONE sha errors maxgap_ms
 * gaps" (gaps: the steps that took over 100 ms, as end:length, wall-clock ms : ms).
 */
const PROGRAM = `${AWAIT_GO}
import hashlib,os,sys,time
CHUNK=${CHUNK}
fast=[]
signal.signal(signal.SIGUSR2, lambda *a: fast.append(1))
inp=open(sys.argv[1],'rb',buffering=0)
copy=open(sys.argv[2],'wb',buffering=0)
rec=open(sys.argv[3],'w')
h=hashlib.sha256()
errors=0
i=0
tmp=None
def step():
  global i
  b=inp.read(CHUNK)
  if not b: return False
  h.update(b)
  copy.write(b)
  if tmp is not None:
    os.pwrite(tmp, b[:4096], (i % 64) * 4096)
    if os.pread(tmp, 4096, (i % 64) * 4096) != b[:4096]: raise Exception('unlinked file differs')
  rec.write('%d %d %s\\n' % (i, len(b), hashlib.sha256(b).hexdigest()[:16]))
  rec.flush()
  if i % 8 == 7:
    os.fsync(copy.fileno())
    os.fsync(rec.fileno())
  i+=1
  return True
for _ in range(${BEFORE}): step()
print('before', i, flush=True)
await_go()
# A file made here, open and removed: the kernel holds its node across every failover.
tmp=os.open(os.path.dirname(sys.argv[2])+'/scratch.tmp', os.O_CREAT|os.O_RDWR, 0o600)
os.unlink(os.path.dirname(sys.argv[2])+'/scratch.tmp')
print('go', flush=True)
last=time.monotonic()
gaps=[]
maxgap=0.0
while True:
  try:
    more=step()
  except Exception as e:
    errors+=1
    print('ERROR', repr(e), flush=True)
    time.sleep(0.05)
    continue
  now=time.monotonic()
  gap=(now-last)*1000
  last=now
  maxgap=max(maxgap,gap)
  if gap>100: gaps.append('%d:%d' % (round(time.time()*1000), round(gap)))
  if not more: break
  if not fast: time.sleep(0.03)
try:
  os.fsync(copy.fileno()); os.fsync(rec.fileno())
except Exception as e:
  errors+=1
  print('ERROR', repr(e), flush=True)
print('DONE', h.hexdigest(), errors, round(maxgap), ','.join(map(str,gaps)), flush=True)
time.sleep(600)`;

let pair: HostPair;
let lazyfs: LazyfsOnB;

describe("failover of the serving process", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(async () => {
    await stopHosts({ pair, lazyfs });
  });

  test("killed ten times during reads, writes and fsyncs: no error, exact output and files", async () => {
    const dir = `${DATA_DIR}/failover-${process.pid}`;
    const input = `${dir}/input.bin`;
    const copy = `${dir}/copy.bin`;
    const records = `${dir}/records.txt`;
    const out = `${dir}/out.txt`;
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.exec("sh", ["-c", `head -c ${SIZE} /dev/urandom > '${input}'`]);
    const want = (await pair.a.exec("sha256sum", [input])).stdout.split(" ")[0]!;
    const wl = await pair.a.startWorkload("python3", ["-c", PROGRAM, input, copy, records], {
      stdout: out,
    });
    await waitFor("the first chunks read on A", async () =>
      (await linesIn(pair.a, out)).includes(`before ${BEFORE}`) ? true : undefined,
    );
    let m: Migrated | undefined;
    try {
      m = await lazyfs.migrate(wl.pid);
      const onB = (p: string) => `${m!.mountpoint}${p}`;
      const first = await lazyfs.status(m.id);
      assert.ok(first.supervisorPid, "a supervisor owns the mount");
      assert.equal(first.serverRestarts, 0);
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      await waitFor("the process to go on on B", async () =>
        (await linesIn(pair.b, onB(out))).includes("go") ? true : undefined,
      );
      let daemonPid = first.daemonPid;
      const killedAt: [number, number][] = [];
      for (let kill = 1; kill <= 10; kill++) {
        // Let each daemon serve a while: one dying within 2 s of its start counts as a crash
        // at start, and five of those in a row make the supervisor give up (by design).
        await sleep(2200);
        const progress = await linesIn(pair.b, onB(out));
        assert.ok(!progress.some((l) => l.startsWith("DONE")), "still reading when killed");
        const sent = Date.now();
        assert.ok(await pair.b.kill(daemonPid, "SIGKILL"), `daemon ${daemonPid} to kill`);
        killedAt.push([sent, Date.now()]);
        const st = await waitFor("a new daemon", async () => {
          const s = await lazyfs.status(m!.id).catch(() => undefined);
          return s && s.daemonPid !== daemonPid ? s : undefined;
        });
        assert.equal(st.supervisorPid, first.supervisorPid);
        assert.equal(st.serverRestarts, kill);
        daemonPid = st.daemonPid;
      }
      await pair.b.exec("kill", ["-USR2", String(m.pid)]);
      const lines = await waitFor(
        "the process to finish its copy",
        async () => {
          const l = await linesIn(pair.b, onB(out));
          return l.some((x) => x.startsWith("DONE")) ? l : undefined;
        },
        180_000,
      );
      assert.deepEqual(
        lines.filter((l) => l.startsWith("ERROR")),
        [],
        "the process saw no error",
      );
      const [, sha, errors, maxGap, gaps] = lines.find((l) => l.startsWith("DONE"))!.split(" ");
      assert.equal(errors, "0");
      assert.equal(sha, want, "what the process read is the origin's file");
      const copied = (await pair.b.exec("sha256sum", [onB(copy)])).stdout.split(" ")[0];
      assert.equal(copied, want, "the copy it wrote is exact");
      const recs = await linesIn(pair.b, onB(records));
      assert.equal(recs.length, SIZE / CHUNK);
      const wantRecs = (await pair.a.exec("python3", ["-c", RECORDS, input])).stdout;
      assert.equal(`${recs.join("\n")}\n`, wantRecs, "the records it wrote are exact");
      const st = await lazyfs.status(m.id);
      assert.equal(st.serverRestarts, 10);
      assert.ok(await pair.b.pidAlive(m.pid), "the process lives on");
      const table = (await lazyfs.run(["status", m.id])).stdout.split("\n");
      assert.match(table[0]!, /DAEMON +SUPERVISOR +RESTARTS/);
      assert.match(table[1]!, new RegExp(` ${st.daemonPid} +${st.supervisorPid} +10 `));
      // unmount stops daemon and supervisor and returns once the mount point is gone.
      await pair.b.kill(m.pid, "SIGKILL");
      await lazyfs.run(["unmount", m.id, "--force"]);
      assert.equal(await pair.b.pidAlive(st.daemonPid), false, "the daemon is gone");
      assert.equal(await pair.b.pidAlive(st.supervisorPid!), false, "the supervisor is gone");
      const mounts = await pair.b.exec("cat", ["/proc/self/mountinfo"]);
      assert.ok(!mounts.stdout.includes(` ${m.mountpoint} `), "the mount is gone");
      const dirGone = await pair.b.exec("test", ["-e", m.mountpoint], { allowFailure: true });
      assert.notEqual(dirGone.code, 0, "the mount point directory is gone");
      const perKill = stalls(killedAt, gaps ?? "");
      console.log(
        `failover: stall per kill (ms): ${perKill.join(", ")}; longest step of the run ${maxGap} ms`,
      );
    } finally {
      if (m) await lazyfs.stop(m);
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });
});
