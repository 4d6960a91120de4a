/**
 * Stress end to end for file locks: a SQLite WAL writer and a reader connection (its child,
 * with a connection of its own) migrate A -> B -> A ... ten times with `--file-locks` (every hop
 * after the first is a chained migration from a host running LazyFS), then the daemon serving
 * them is killed ten times while both are busy. Before each hop the two pause between
 * transactions; after each hop and kill each holds exactly the POSIX locks it held
 * (/proc/locks: kind, type, range), a new `sqlite3` connection in the process's view finds
 * `integrity_check` ok and exactly the acknowledged inserts, and neither process died (a lost
 * lock on the `-shm` index let such a connection truncate it under the writer: SIGBUS).
 */
import assert from "node:assert/strict";
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { parseLockLines } from "../../src/criu/index.js";
import type { DaemonStatus } from "../../src/daemon/index.js";
import { DATA_DIR, type Host, type HostPair, type SshdHandle } from "../../src/hosts/index.js";
import { CLI, type LazyfsOnB, type Migrated, startHosts, stopHosts, waitFor } from "./helpers.js";

/**
 * Migrations (A -> B -> A ...) and daemon kills. `npm test` runs 4 and 4 (about 4 minutes on
 * a quiet 2-core machine); the acceptance run is `LAZYFS_STRESS_HOPS=10
 * LAZYFS_STRESS_KILLS=10` (12.5 minutes there, loaded): too long for every CI run.
 */
const HOPS = Number(process.env.LAZYFS_STRESS_HOPS ?? 4);
const KILLS = Number(process.env.LAZYFS_STRESS_KILLS ?? 4);
/** Inserts acknowledged after each hop or kill before the next (the two busy meanwhile). */
const BETWEEN = 30;

/**
 * argv: dir. Forks a reader, then writes; both pause between transactions on SIGUSR1 (a
 * "paused N" line: N inserts committed, or N reads done) and go on on SIGUSR2. Errors are
 * lines "ERROR ...", never an exit.
 */
const PROGRAM = `import os,signal,sqlite3,sys,time
d=sys.argv[1]
path=os.path.join(d,'test.db')
paused=[False]
signal.signal(signal.SIGUSR1, lambda *a: paused.__setitem__(0,True))
signal.signal(signal.SIGUSR2, lambda *a: paused.__setitem__(0,False))
def pause_point(out,n):
  if not paused[0]: return
  out.write('paused %d\\n' % n)
  while paused[0]: time.sleep(0.01)
  out.write('resumed %d\\n' % n)
reader=os.fork()
if reader==0:
  out=open(os.path.join(d,'reader.txt'),'a',buffering=1)
  while not os.path.exists(os.path.join(d,'ready')): time.sleep(0.01)
  db=sqlite3.connect(path,isolation_level=None)
  reads=0; last=0
  while True:
    pause_point(out,reads)
    try:
      n=db.execute('select count(*) from t').fetchone()[0]
      if n<last: out.write('ERROR count went back from %d to %d\\n' % (last,n))
      last=n; reads+=1
      if reads%50==0:
        ok=db.execute('pragma integrity_check').fetchone()[0]
        if ok!='ok': out.write('ERROR integrity_check %s\\n' % ok)
    except Exception as e:
      out.write('ERROR %r\\n' % (e,))
    time.sleep(0.005)
out=open(os.path.join(d,'writer.txt'),'a',buffering=1)
db=sqlite3.connect(path,isolation_level=None)
assert db.execute('pragma journal_mode=wal').fetchone()[0]=='wal'
db.execute('create table if not exists t(i integer primary key, v text)')
open(os.path.join(d,'ready'),'w').close()
out.write('reader %d\\n' % reader)
i=0
while True:
  pause_point(out,i)
  try:
    db.execute('insert into t(v) values (?)',('row %d' % i,)); i+=1
    if i%50==0: out.write('acked %d\\n' % i)
  except Exception as e:
    out.write('ERROR %r\\n' % (e,))
  time.sleep(0.002)
`;

/** argv: file. Tries a write lock on byte 128 without waiting. */
const TRY_LOCK =
  "import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n  fcntl.lockf(fd,fcntl.LOCK_EX|fcntl.LOCK_NB,1,128)\n  print('got')\nexcept OSError:\n  print('refused')";

let pair: HostPair;
let lazyfs: LazyfsOnB;
let sshdB: SshdHandle;
let knownHosts: string;
const stateOf = (h: Host) => `/var/lib/lazyfs-test-${process.pid}-${h.role}`;

function cli(host: Host, args: string[], allowFailure = false) {
  return host.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...process.env, LAZYFS_STATE_DIR: stateOf(host) },
    timeoutMs: 120_000,
  });
}

async function status(host: Host, id: string): Promise<DaemonStatus> {
  return (JSON.parse((await cli(host, ["status", id, "--json"])).stdout) as DaemonStatus[])[0]!;
}

/** A file as the process sees it (inside its mount namespace). */
async function inView(host: Host, pid: number, path: string): Promise<string[]> {
  const r = await host.exec("nsenter", ["-t", String(pid), "-m", "cat", path]);
  return r.stdout.split("\n").filter(Boolean);
}

/** The POSIX locks of `pid` as "TYPE start-end", sorted. */
async function locksOf(host: Host, pid: number): Promise<string[]> {
  const text = (await host.exec("cat", ["/proc/locks"])).stdout;
  return parseLockLines(text)
    .filter((l) => l.pid === pid)
    .map((l) => `${l.kind} ${l.type} ${l.start}-${l.end}`)
    .sort();
}

describe("SQLite WAL writer and reader with --file-locks, migrated back and forth", () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
    sshdB = await pair.startSshdOn(pair.b);
    const [, identityA, , knownA] = lazyfs.sshArgs();
    knownHosts = `${sshdB.dir}/known_hosts_ab`;
    const aKnown = await readFile(knownA!, "utf8");
    await writeFile(knownHosts, `${aKnown.trim()}\n${sshdB.hostKeyLine}\n`, { mode: 0o600 });
    // One key for every hop: B's, admitted by A's sshd too.
    await appendFile(
      `${identityA!.replace(/\/id_ed25519$/, "")}/authorized_keys`,
      await readFile(`${sshdB.identityFile}.pub`, "utf8"),
    );
  });
  after(async () => {
    for (const h of [pair?.a, pair?.b]) {
      if (!h) continue;
      await cli(h, ["unmount", "--all", "--force"], true).catch(() => {});
      await h.exec("rm", ["-rf", stateOf(h)]).catch(() => {});
    }
    await stopHosts({ pair, lazyfs });
  });

  test(`${HOPS} migrations and ${KILLS} daemon kills: same locks, no SIGBUS, integrity ok, every insert`, async () => {
    const dir = `${DATA_DIR}/locks-${process.pid}`;
    const db = `${dir}/test.db`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const wl = await pair.a.startWorkload("python3", ["-c", PROGRAM, dir], {
      stdout: `${dir}/stdout.txt`,
      stderr: `${dir}/stderr.txt`,
    });
    const pid = wl.pid;
    let host: Host = pair.a;
    const deaths: string[] = [];
    const writerLines = () => inView(host, pid, `${dir}/writer.txt`);
    const readerLines = () => inView(host, pid, `${dir}/reader.txt`);
    const acked = async () =>
      Number(
        (await writerLines())
          .filter((l) => l.startsWith("acked "))
          .pop()
          ?.split(" ")[1] ?? 0,
      );
    const reader = await waitFor("the reader", async () => {
      const l = (await writerLines().catch(() => [])).find((x) => x.startsWith("reader "));
      return l ? Number(l.split(" ")[1]) : undefined;
    });
    let pauses = 0;
    /** Both stop between transactions; the number of inserts committed. */
    const pause = async (): Promise<number> => {
      pauses++;
      await host.kill(-pid, "SIGUSR1");
      const paused = (lines: string[]) => lines.filter((l) => l.startsWith("paused "));
      return waitFor("both paused", async () => {
        const w = paused(await writerLines());
        const r = paused(await readerLines());
        return w.length === pauses && r.length === pauses
          ? Number(w.at(-1)!.split(" ")[1])
          : undefined;
      }).catch(async (err) => {
        const d = await host.exec(
          "sh",
          [
            "-c",
            `for p in ${pid} ${reader}; do grep State /proc/$p/status; cat /proc/$p/wchan; echo; cat /proc/$p/stack; done; nsenter -t ${pid} -m tail -n 4 ${dir}/writer.txt ${dir}/reader.txt ${dir}/stderr.txt; nsenter -t ${pid} -m grep -c paused ${dir}/writer.txt ${dir}/reader.txt`,
          ],
          { allowFailure: true },
        );
        throw new Error(`${err}: ${d.stdout} ${d.stderr}`);
      });
    };
    /** Both go on (seen before the next pause: a pause right after would cancel this one). */
    const resume = async () => {
      await host.kill(-pid, "SIGUSR2");
      const resumed = (lines: string[]) => lines.filter((l) => l.startsWith("resumed ")).length;
      await waitFor("both resumed", async () =>
        resumed(await writerLines()) === pauses && resumed(await readerLines()) === pauses
          ? true
          : undefined,
      );
    };
    const locks = async () => ({
      writer: await locksOf(host, pid),
      reader: await locksOf(host, reader),
    });
    /** A new connection in the process's view: integrity_check and the row count. */
    const newConnection = async (): Promise<string> => {
      const r = await host.exec("nsenter", [
        "-t",
        String(pid),
        "-m",
        "sqlite3",
        "-cmd",
        ".timeout 10000",
        db,
        "pragma integrity_check; select count(*) from t;",
      ]);
      return r.stdout.trim().replace(/\n/g, " ");
    };
    /** After a hop or kill: alive, same locks, a new connection sees exactly the inserts. */
    const check = async (
      what: string,
      before: { writer: string[]; reader: string[] },
      n: number,
    ) => {
      for (const p of [pid, reader]) {
        assert.ok(await host.pidAlive(p), `${what}: process ${p} alive (${deaths.join("; ")})`);
      }
      const errors = [...(await writerLines()), ...(await readerLines())].filter((l) =>
        l.startsWith("ERROR"),
      );
      assert.deepEqual(errors.slice(0, 3), [], `${what}: no errors (${errors.length})`);
      assert.deepEqual(await locks(), before, `${what}: the same locks`);
      assert.equal(await newConnection(), `ok ${n}`, `${what}: a new connection`);
      assert.deepEqual(await locks(), before, `${what}: the same locks after a new connection`);
      // Another process of the target is refused the dead-man switch while the two hold it.
      const probe = await host.exec("nsenter", [
        "-t",
        String(pid),
        "-m",
        "python3",
        "-c",
        TRY_LOCK,
        `${db}-shm`,
      ]);
      assert.equal(probe.stdout.trim(), "refused", `${what}: the lock is seen by other processes`);
    };
    /** Runs with new connections coming and going until BETWEEN more inserts are acknowledged. */
    const run = async () => {
      const from = await acked();
      await resume();
      await waitFor(
        `${BETWEEN} more inserts`,
        async () => {
          const c = await newConnection();
          assert.match(c, /^ok \d+$/);
          return (await acked()) >= from + BETWEEN ? true : undefined;
        },
        60_000,
      );
    };

    await waitFor("inserts on A", async () => ((await acked()) >= 100 ? true : undefined));
    let n = await pause();
    let held = await locks();
    assert.deepEqual(held.writer, ["POSIX READ 1073741826-1073742335", "POSIX READ 128-128"]);
    assert.deepEqual(held.reader, held.writer);
    await resume();

    let previous: { host: Host; id: string } | undefined;
    for (let hop = 1; hop <= HOPS; hop++) {
      const to = host === pair.a ? pair.b : pair.a;
      n = await pause();
      held = await locks();
      const r = await cli(to, [
        "migrate",
        "--from",
        `ssh://root@${host.address}`,
        "--pid",
        String(pid),
        "-i",
        sshdB.identityFile,
        "--known-hosts",
        knownHosts,
        "--file-locks",
        "--prefetch",
        "immediate",
        "--json",
      ]).catch(async (err) => {
        const d = await to.exec(
          "sh",
          [
            "-c",
            `ps -eo pid,stat,wchan:20,args | grep -v ' ps ' | cut -c1-160; for f in ${stateOf(to)}/*/restore.log; do echo $f; grep -E 'Error|lock|posix' $f | tail -5; tail -n 3 $f; done; tail -n 15 ${stateOf(to)}/*/daemon.log`,
          ],
          { allowFailure: true },
        );
        const o = await host.exec(
          "sh",
          [
            "-c",
            `ps -eo pid,stat,wchan:20,args | grep -v ' ps ' | cut -c1-160; for p in ${pid} ${reader}; do cat /proc/$p/stack; done; tail -n 15 ${stateOf(host)}/*/daemon.log`,
          ],
          { allowFailure: true },
        );
        throw new Error(
          `hop ${hop}: ${err}\n${d.stdout}${d.stderr}\norigin ${host.role}:\n${o.stdout}${o.stderr}`,
        );
      });
      const m = JSON.parse(r.stdout) as Migrated;
      assert.equal(m.pid, pid);
      host = to;
      const here = host;
      // Its end by a hop's dump (SIGKILL) is not a death; a stale record from the host's
      // earlier run of the same pid is one of those too.
      void here.reaped(pid).then((s) => {
        if (s.signal !== "SIGKILL") deaths.push(`writer on ${here.role}: ${JSON.stringify(s)}`);
      });
      await check(`hop ${hop} to ${host.role}`, held, n);
      await run();
      // The next hop takes the process from here: the previous host's LazyFS may go once
      // this one holds everything.
      await waitFor(
        "independence",
        async () => ((await status(host, m.id)).originState === "released" ? true : undefined),
        60_000,
      );
      if (previous) await cli(previous.host, ["unmount", previous.id, "--force"]);
      previous = { host, id: m.id };
    }
    // Daemon kills while both are busy (writes, reads, checkpoints and the -shm index in
    // flight); between kills they pause so that their locks and the rows can be compared.
    const m = previous!;
    for (let kill = 1; kill <= KILLS; kill++) {
      n = await pause();
      held = await locks();
      const from = n;
      await resume();
      await waitFor("busy again", async () => ((await acked()) >= from + 50 ? true : undefined));
      const st = await status(host, m.id);
      assert.ok(await host.kill(st.daemonPid, "SIGKILL"));
      await waitFor("a new daemon", async () => {
        const s = await status(host, m.id).catch(() => undefined);
        return s && s.daemonPid !== st.daemonPid ? true : undefined;
      });
      const killedAt = await acked();
      await waitFor(
        `${BETWEEN} more inserts`,
        async () => ((await acked()) >= killedAt + BETWEEN ? true : undefined),
        60_000,
      );
      n = await pause();
      await check(`daemon kill ${kill}`, held, n);
      await resume();
    }
    n = await pause();
    await check("the end", held, n);
    const errors = [...(await writerLines()), ...(await readerLines())].filter((l) =>
      l.startsWith("ERROR"),
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(deaths, []);
    await host.kill(pid, "SIGKILL");
  });
});
