/**
 * No single process of ours is a single point of failure, and `status` says when something
 * is broken. (1) A SQLite writer in WAL mode goes on through the supervisor's death
 * (kill -9) and a later daemon death: the daemon starts a new supervisor, status shows it,
 * and the writer gets no error at all. (2) Daemon and supervisor both killed: the standby
 * (it holds the connection too) takes over and starts a new supervisor; the process's held
 * descriptors go on. (3) All three killed: the old FUSE connection is gone for good; status
 * says broken and what to run; `lazyfs mount --id ID` brings the process's own view back: what
 * it opens by name works again, while a descriptor it held on the dead connection keeps failing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus, Health } from "../../src/daemon/index.js";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  AWAIT_GO,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  standbyOf,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

type Row = DaemonStatus & { health: Health };

/**
 * argv: db. Inserts one row per commit (autocommit), counting the acknowledged ones; prints
 * "ERROR ..." on a failure and goes on; every 25 inserts "n acked"; on SIGUSR2 "DONE acked
 * errors".
 */
const SQLITE_WRITER = `${AWAIT_GO}
import sqlite3,sys
stop=[]
signal.signal(signal.SIGUSR2, lambda *a: stop.append(1))
db=sqlite3.connect(sys.argv[1],isolation_level=None)
assert db.execute('pragma journal_mode=wal').fetchone()[0]=='wal'
db.execute('create table if not exists t(i integer primary key, v text)')
acked=0
errors=0
def insert():
  global acked, errors
  try:
    db.execute('insert into t(v) values (?)',('row %d' % acked,))
    acked+=1
    if acked % 25 == 0: print(acked, 'acked', flush=True)
  except Exception as e:
    errors+=1
    print('ERROR', repr(e), flush=True)
    time.sleep(0.05)
for _ in range(50): insert()
print('before', flush=True)
await_go()
print('go', flush=True)
while not stop:
  insert()
  time.sleep(0.005)
print('DONE', acked, errors, flush=True)
time.sleep(600)`;

/**
 * argv: log, local, report. Holds `log` (content on the origin, not local at the restore) and
 * `local` (empty: fully local, so the kernel serves it by passthrough) open and appends a
 * numbered line to each (fsync'd) every 50 ms; each time also appends a line to `report`,
 * opened by name: "i held=<ok|ERRNO> local=<ok|ERRNO> byname_failures=N" (N: by-name
 * attempts that failed so far).
 */
const VIEW_WRITER = `${AWAIT_GO}
import errno,os,sys
log,local,report=sys.argv[1],sys.argv[2],sys.argv[3]
fd=os.open(log, os.O_WRONLY|os.O_APPEND)
lfd=os.open(local, os.O_WRONLY|os.O_APPEND|os.O_CREAT, 0o644)
failures=0
def append(fd, i):
  try:
    os.write(fd, b'%06d\\n' % i)
    os.fsync(fd)
    return 'ok'
  except OSError as e:
    return errno.errorcode.get(e.errno, str(e.errno))
await_go()
i=0
while True:
  held=append(fd, i)
  loc=append(lfd, i)
  try:
    with open(report, 'a') as r:
      r.write('%d held=%s local=%s byname_failures=%d\\n' % (i, held, loc, failures))
  except OSError:
    failures+=1
  i+=1
  time.sleep(0.05)`;

let pair: HostPair;
let lazyfs: LazyfsOnB;

/** Asks the SQLite writer to stop (SIGUSR2); its output lines, which hold no ERROR. */
async function stopWriter(pid: number, output: string, noError: string): Promise<string[]> {
  await pair.b.exec("kill", ["-USR2", String(pid)]);
  const lines = await waitFor("the writer to stop", async () => {
    const l = await linesIn(pair.b, output);
    return l.some((x) => x.startsWith("DONE")) ? l : undefined;
  });
  assert.deepEqual(
    lines.filter((l) => l.startsWith("ERROR")),
    [],
    noError,
  );
  return lines;
}

async function row(id: string): Promise<Row> {
  const r = await lazyfs.run(["status", id, "--json"]);
  return (JSON.parse(r.stdout) as Row[])[0]!;
}

/** The status table's line for `id`. */
async function tableLine(id: string): Promise<string> {
  const lines = (await lazyfs.run(["status", id])).stdout.split("\n");
  assert.match(lines[0]!, /HEALTH/);
  return lines.find((l) => l.startsWith(`${id} `)) ?? "";
}

describe("supervision: no single point of failure, and a truthful status", {
  concurrency: false,
}, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(async () => {
    await stopHosts({ pair, lazyfs });
  });

  test("supervisor killed, then the daemon: a new supervisor, the SQLite writer sees no error", async () => {
    const dir = `${DATA_DIR}/supervisor-kill-${process.pid}`;
    const db = `${dir}/test.db`;
    const out = `${dir}/out.txt`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const wl = await pair.a.startWorkload("python3", ["-c", SQLITE_WRITER, db], { stdout: out });
    await waitFor("inserts on A", async () =>
      (await linesIn(pair.a, out)).includes("before") ? true : undefined,
    );
    let m: Migrated | undefined;
    try {
      m = await lazyfs.migrate(wl.pid, ["--file-locks"]);
      const id = m.id;
      const onB = (p: string) => `${m!.mountpoint}${p}`;
      const acked = async () =>
        (await linesIn(pair.b, onB(out))).filter((l) => l.endsWith(" acked")).length;
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const first = await waitFor("a healthy start", async () => {
        const s = await row(id);
        return s.health.state === "ok" ? s : undefined;
      });
      assert.ok(first.supervisorPid);
      assert.ok(await pair.b.kill(first.supervisorPid, "SIGKILL"), "the supervisor to kill");
      const next = await waitFor("a new supervisor", async () => {
        const s = await row(id);
        return s.supervisorPid !== first.supervisorPid && s.health.state === "ok" ? s : undefined;
      });
      assert.ok(next.supervisorPid && (await pair.b.pidAlive(next.supervisorPid)));
      assert.equal(next.daemonPid, first.daemonPid, "the daemon went on serving");
      assert.match(await tableLine(id), new RegExp(` ${next.supervisorPid} +0 .* ok *$`));
      // The new supervisor has a standby ready, and survives the daemon's death.
      const progress = await acked();
      assert.ok(await pair.b.kill(first.daemonPid, "SIGKILL"), "the daemon to kill");
      const after = await waitFor("a new daemon", async () => {
        const s = await row(id);
        return s.daemonPid !== first.daemonPid && s.health.state === "ok" ? s : undefined;
      });
      assert.equal(after.supervisorPid, next.supervisorPid);
      assert.equal(after.serverRestarts, 1);
      await waitFor("inserts after the failover", async () =>
        (await acked()) > progress + 4 ? true : undefined,
      );
      const lines = await stopWriter(m.pid, onB(out), "the writer saw no error");
      const [, count, errors] = lines.find((l) => l.startsWith("DONE"))!.split(" ");
      assert.equal(errors, "0");
      assert.ok(await pair.b.pidAlive(m.pid), "the process lives on");
      await pair.b.kill(m.pid, "SIGKILL");
      const check = await pair.b.exec("python3", [
        "-c",
        "import sqlite3,sys\ndb=sqlite3.connect(sys.argv[1])\nprint(db.execute('pragma integrity_check').fetchone()[0], db.execute('select count(*) from t').fetchone()[0])",
        onB(db),
      ]);
      assert.equal(check.stdout.trim(), `ok ${count}`, "integrity_check ok, every acked row");
    } finally {
      if (m) await lazyfs.stop(m);
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });

  test("daemon and supervisor both killed: the standby takes over, the held descriptors go on", async () => {
    const dir = `${DATA_DIR}/both-killed-standby-${process.pid}`;
    const log = `${dir}/w/log.txt`;
    const local = `${dir}/w/local.txt`;
    const report = `${dir}/w/report.txt`;
    await pair.a.exec("mkdir", ["-p", `${dir}/w`]);
    const origin = Array.from({ length: 20_000 }, (_, i) => `origin line ${i}`);
    await pair.a.writeFile(log, `${origin.join("\n")}\n`);
    const wl = await pair.a.startWorkload("python3", ["-c", VIEW_WRITER, log, local, report], {
      stdout: "/dev/null",
      cwd: `${dir}/w`,
    });
    let m: Migrated | undefined;
    try {
      m = await lazyfs.migrate(wl.pid);
      const id = m.id;
      const pid = m.pid;
      const inView = (p: string) => `/proc/${pid}/root${p}`;
      await pair.b.exec("kill", ["-USR1", String(pid)]);
      await waitFor("the process to write on B", async () =>
        (await linesIn(pair.b, inView(report)).catch(() => [])).length > 5 ? true : undefined,
      );
      const first = await waitFor("a healthy start", async () => {
        const s = await row(id);
        return s.health.state === "ok" ? s : undefined;
      });
      const standby = await standbyOf(pair.b, first);
      const both = [String(first.daemonPid), String(first.supervisorPid)];
      // Read before the stop: a read through a stopped daemon would wait for it.
      const atKill = (await linesIn(pair.b, inView(report))).length;
      // Stopped first, so that neither can react to the other's death.
      await pair.b.exec("kill", ["-STOP", ...both]);
      await pair.b.exec("kill", ["-KILL", ...both]);
      const healed = await waitFor("status to say ok with new processes", async () => {
        const s = await row(id);
        return s.health.state === "ok" &&
          s.daemonPid !== first.daemonPid &&
          s.supervisorPid !== null &&
          s.supervisorPid !== first.supervisorPid
          ? s
          : undefined;
      });
      assert.equal(healed.daemonPid, standby, "the standby serves");
      // The process: 40 more lines, every one written through its held descriptors.
      const after = await waitFor("40 lines more", async () => {
        const l = await linesIn(pair.b, inView(report));
        return l.length >= atKill + 40 ? l : undefined;
      });
      assert.deepEqual(
        after.filter((l) => !/ held=ok local=ok byname_failures=0$/.test(l)),
        [],
        "no write of the process failed",
      );
      const logLines = await linesIn(pair.b, inView(log));
      assert.deepEqual(logLines.slice(0, origin.length), origin);
      const acked = after.map((l) => l.split(" ")[0]!.padStart(6, "0"));
      assert.deepEqual(logLines.slice(origin.length, origin.length + acked.length), acked);
      assert.ok(await pair.b.pidAlive(pid), "the process lives on");
    } finally {
      if (m) await lazyfs.stop(m);
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });

  test("daemon, supervisor and standby killed: status says broken; mount --id brings the process's view back", async () => {
    const dir = `${DATA_DIR}/both-killed-${process.pid}`;
    const log = `${dir}/w/log.txt`;
    const local = `${dir}/w/local.txt`;
    const report = `${dir}/w/report.txt`;
    await pair.a.exec("mkdir", ["-p", `${dir}/w`]);
    const origin = Array.from({ length: 20_000 }, (_, i) => `origin line ${i}`);
    await pair.a.writeFile(log, `${origin.join("\n")}\n`);
    const wl = await pair.a.startWorkload("python3", ["-c", VIEW_WRITER, log, local, report], {
      stdout: "/dev/null",
      cwd: `${dir}/w`,
    });
    let m: Migrated | undefined;
    try {
      m = await lazyfs.migrate(wl.pid);
      const id = m.id;
      const pid = m.pid;
      // The process's own view, as the test sees it from host b.
      const inView = (p: string) => `/proc/${pid}/root${p}`;
      await pair.b.exec("kill", ["-USR1", String(pid)]);
      await waitFor("the process to write on B", async () =>
        (await linesIn(pair.b, inView(report)).catch(() => [])).length > 5 ? true : undefined,
      );
      const first = await waitFor("a healthy start", async () => {
        const s = await row(id);
        return s.health.state === "ok" ? s : undefined;
      });
      const standby = await standbyOf(pair.b, first);
      const all = [String(first.daemonPid), String(first.supervisorPid), String(standby)];
      // Stopped first, so that none can react to another's death.
      await pair.b.exec("kill", ["-STOP", ...all]);
      await pair.b.exec("kill", ["-KILL", ...all]);
      const broken = await waitFor("status to say broken", async () => {
        const s = await row(id);
        return s.health?.state === "broken" ? s : undefined;
      });
      assert.match(broken.health.reason ?? "", /daemon and its supervisor are gone/);
      assert.equal(broken.health.run, `lazyfs mount --id ${id} --background`);
      assert.match(await tableLine(id), /broken: .*; run lazyfs mount --id/);
      // The view is dead: the process's by-name writes fail now.
      const probe = await pair.b.exec("stat", ["-f", inView(`${dir}/w`)], { allowFailure: true });
      assert.notEqual(probe.code, 0, "the process's view is dead before the recovery");
      const r = await lazyfs.run(["mount", "--id", id, "--background"]);
      assert.equal(r.stdout.trim(), id);
      const healed = await waitFor("status to say ok", async () => {
        const s = await row(id);
        return s.health.state === "ok" ? s : undefined;
      });
      assert.notEqual(healed.daemonPid, first.daemonPid);
      assert.notEqual(healed.supervisorPid, first.supervisorPid);
      assert.match(await tableLine(id), / ok *$/);
      // The process itself: by name it writes again, after failing during the outage.
      const lines = await waitFor("the process to write by name again", async () => {
        const l = await linesIn(pair.b, inView(report));
        return l.some((x) => !x.endsWith("byname_failures=0")) ? l : undefined;
      });
      const lastBefore = lines.filter((l) => l.endsWith("byname_failures=0")).at(-1)!;
      const resumed = lines.find((l) => !l.endsWith("byname_failures=0"))!;
      assert.match(lastBefore, / held=ok local=ok /);
      // Descriptors opened on the dead connection keep failing: nothing can move them.
      assert.match(resumed, / held=(EIO|ENOTCONN|ECONNABORTED) local=(EIO|ENOTCONN|ECONNABORTED) /);
      // Every line it wrote through the first before the deaths (fsync'd) is there.
      const acked = lines.filter((l) => / held=ok /.test(l)).map((l) => Number(l.split(" ")[0]));
      const logLines = await linesIn(pair.b, inView(log));
      assert.deepEqual(logLines.slice(0, origin.length), origin);
      assert.deepEqual(
        logLines.slice(origin.length, origin.length + acked.length),
        acked.map((i) => String(i).padStart(6, "0")),
      );
      assert.ok(await pair.b.pidAlive(pid), "the process lives on");
    } finally {
      if (m) await lazyfs.stop(m);
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });

  test("a daemon that dies at start is retried for as long as it takes; status says so meanwhile", async () => {
    const dir = `${DATA_DIR}/dies-at-start-${process.pid}`;
    const db = `${dir}/test.db`;
    const out = `${dir}/out.txt`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const wl = await pair.a.startWorkload("python3", ["-c", SQLITE_WRITER, db], { stdout: out });
    await waitFor("inserts on A", async () =>
      (await linesIn(pair.a, out)).includes("before") ? true : undefined,
    );
    let m: Migrated | undefined;
    const cache = () => `${lazyfs.stateDir}/${m!.id}/cache`;
    try {
      m = await lazyfs.migrate(wl.pid, ["--file-locks"]);
      const id = m.id;
      const onB = (p: string) => `${m!.mountpoint}${p}`;
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const first = await waitFor("a healthy start", async () => {
        const s = await row(id);
        return s.health.state === "ok" ? s : undefined;
      });
      // Every new daemon fails to open its block store, until it is put back.
      await pair.b.exec("sh", ["-c", 'mv "$1" "$1.away" && touch "$1"', "sh", cache()]);
      assert.ok(await pair.b.kill(first.daemonPid, "SIGKILL"), "the daemon to kill");
      const broken = await waitFor(
        "status to say the daemon keeps dying at start",
        async () => {
          const s = await row(id);
          const m = /died (\d+) time\(s\) in a row at start .*tries again in/.exec(
            s.health.reason ?? "",
          );
          return m && Number(m[1]) >= 6 ? s : undefined;
        },
        90_000,
      );
      assert.equal(broken.health.state, "broken");
      assert.match(await tableLine(id), /broken: the daemon died \d+ time\(s\) in a row at start/);
      const log = await pair.b.readFile(`${lazyfs.stateDir}/${id}/daemon.log`);
      assert.match(log, /server died at start again; retrying/);
      await pair.b.exec("sh", ["-c", 'rm "$1" && mv "$1.away" "$1"', "sh", cache()]);
      const healed = await waitFor(
        "a daemon that serves again",
        async () => {
          const s = await row(id);
          return s.health.state === "ok" ? s : undefined;
        },
        60_000,
      );
      assert.equal(healed.supervisorPid, first.supervisorPid, "the same supervisor went on");
      assert.ok(healed.serverRestarts >= 6);
      const progress = (await linesIn(pair.b, onB(out))).length;
      await waitFor("inserts after the recovery", async () =>
        (await linesIn(pair.b, onB(out))).length > progress + 4 ? true : undefined,
      );
      await stopWriter(m.pid, onB(out), "the writer waited, and saw no error");
    } finally {
      if (m) {
        await pair.b
          .exec(
            "sh",
            ["-c", '[ -e "$1.away" ] && rm -f "$1" && mv "$1.away" "$1"', "sh", cache()],
            {
              allowFailure: true,
            },
          )
          .catch(() => {});
        await lazyfs.stop(m);
      }
      await pair.a.exec("rm", ["-rf", dir]).catch(() => {});
    }
  });
});
