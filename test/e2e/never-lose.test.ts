/**
 * A migration that fails never loses the process: it runs on at the origin exactly where it
 * stopped, and nothing of the attempt is left on either host.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CRIU_BIN, DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  assertNothingLeft,
  errorLines,
  type LazyfsOnB,
  linesIn,
  privateDevShm,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

/** Prints 0, 1, 2, ... every 5 ms, holding open a log that another process appends to. */
const COUNTER =
  "import sys,time\nlog=open(sys.argv[1])\ni=0\nwhile True:\n  print(i, flush=True); i+=1; time.sleep(0.005)";
const APPENDER =
  "import sys,time\nf=open(sys.argv[1],'a')\ni=0\nwhile True:\n  f.write('entry %d\\n' % i); f.flush(); i+=1; time.sleep(0.01)";

async function assertCounting(path: string, atLeast: number): Promise<number> {
  // Whole lines only: the counter may be halfway through one.
  const text = await pair.a.readFile(path);
  const lines = text
    .slice(0, text.lastIndexOf("\n") + 1)
    .split("\n")
    .filter(Boolean);
  assert.ok(lines.length >= atLeast, `${lines.length} lines, expected at least ${atLeast}`);
  assert.deepEqual(
    lines.map(Number),
    lines.map((_, i) => i),
    "every number once, in order: no gap, no repeat",
  );
  return lines.length;
}

/**
 * A CRIU that dumps like CRIU but refuses every restore (outside the data directory: the
 * process's view of that is LazyFS's, where CRIU runs); in /tmp, the same on every host.
 */
async function refusingCriu(): Promise<string> {
  const path = `/tmp/lazyfs-criu-refusing-restore-${process.pid}`;
  await pair.b.writeFile(
    path,
    `#!/bin/sh\n[ "$1" = restore ] && { echo "Error (test): this CRIU refuses to restore" >&2; exit 1; }\nexec ${CRIU_BIN} "$@"\n`,
  );
  await pair.b.exec("chmod", ["755", path]);
  return path;
}

describe("a failed migration never loses the process", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
    await privateDevShm(pair);
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("the target's restore fails: the process runs on at the origin, even after its log changed there", async () => {
    const dir = `${DATA_DIR}/never-lose`;
    const out = `${dir}/count.txt`;
    const log = `${dir}/app.log`;
    await pair.a.exec("mkdir", ["-p", dir]);
    await pair.a.writeFile(log, "start\n");
    // Another origin process keeps appending to a file the migrated process holds open.
    await pair.a.startWorkload("python3", ["-c", APPENDER, log], { stdout: "/dev/null" });
    const wl = await pair.a.startWorkload("python3", ["-c", COUNTER, log], { stdout: out });
    await waitFor("counting on A", async () =>
      (await linesIn(pair.a, out)).length >= 50 ? true : undefined,
    );
    const refuse = await refusingCriu();
    // --allow-changed: the log grew since the dump; let the attempt reach CRIU's restore.
    const r = await lazyfs.run(
      lazyfs.migrateArgs(wl.pid, ["--criu", refuse, "--allow-changed"]),
      true,
    );
    assert.notEqual(r.code, 0);
    const lines = errorLines(r.stderr);
    assert.equal(lines.length, 1, `one error line: ${r.stderr}`);
    assert.match(lines[0]!, /^lazyfs: criu restore failed .*refuses to restore/);
    assert.match(lines[0]!, /the process runs on at .* where it stopped$/);
    // It goes on counting on the origin, from where it stopped, with nothing lost.
    const before = await assertCounting(out, 50);
    await waitFor("more counts on the origin", async () =>
      (await linesIn(pair.a, out)).length > before + 20 ? true : undefined,
    );
    await assertCounting(out, before + 20);
    await pair.a.exec("kill", ["-0", String(wl.pid)]);
    await assertNothingLeft(pair, lazyfs);
    await pair.a.exec("kill", ["-KILL", String(wl.pid)], { allowFailure: true });
    await pair.b.exec("rm", ["-f", refuse]);
  });

  test("a dump CRIU refuses (an established TCP connection without --tcp-established): the process runs on", async () => {
    const out = `${DATA_DIR}/never-lose-tcp.txt`;
    // Holds a connection to its own listening socket, and counts.
    const holder =
      "import socket,time\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\nc=socket.create_connection(l.getsockname()); s,_=l.accept()\ni=0\nwhile True:\n  print(i, flush=True); i+=1; time.sleep(0.005)";
    const wl = await pair.a.startWorkload("python3", ["-c", holder], { stdout: out });
    await waitFor("counting on A", async () =>
      (await linesIn(pair.a, out)).length >= 20 ? true : undefined,
    );
    const r = await lazyfs.run(lazyfs.migrateArgs(wl.pid), true);
    assert.notEqual(r.code, 0);
    const lines = errorLines(r.stderr);
    assert.equal(lines.length, 1, `one error line: ${r.stderr}`);
    assert.match(lines[0]!, /criu dump of pid \d+ failed: .*tcp-established/);
    assert.match(lines[0]!, /the process runs on at /);
    const n = await assertCounting(out, 20);
    await waitFor("more counts on the origin", async () =>
      (await linesIn(pair.a, out)).length > n + 1 ? true : undefined,
    );
    await assertCounting(out, n + 1);
    await assertNothingLeft(pair, lazyfs);
    await pair.a.exec("kill", ["-KILL", String(wl.pid)], { allowFailure: true });
  });

  test("an origin without CRIU gets the target's pushed to it, cached for the next migration", async () => {
    // Inside host a only: no /opt/lazyfs (the private CRIU prefix), an empty /var/lib/lazyfs.
    await pair.a.exec("sh", [
      "-c",
      "mkdir -p /var/lib/lazyfs && mount -t tmpfs -o mode=0755 none /opt/lazyfs && mount -t tmpfs -o mode=0700 none /var/lib/lazyfs",
    ]);
    try {
      const none = await pair.a.exec("sh", ["-c", "command -v criu || ls /opt/lazyfs"]);
      assert.equal(none.stdout.trim(), "", "no CRIU on the origin");
      for (const [i, want] of (["pushed", "cached"] as const).entries()) {
        const out = `${DATA_DIR}/never-lose-push-${i}.txt`;
        const wl = await pair.a.startWorkload("python3", ["-c", COUNTER, "/dev/null"], {
          stdout: out,
        });
        await waitFor("counting on A", async () =>
          (await linesIn(pair.a, out)).length >= 20 ? true : undefined,
        );
        const m = await lazyfs.migrate(wl.pid);
        try {
          assert.equal(m.criu.origin.source, want);
          assert.match(m.criu.origin.version, /^4\.([2-9]|\d\d)/);
          if (want === "pushed") assert.ok(m.criu.origin.pushedBytes > 1_000_000);
          else assert.equal(m.criu.origin.pushedBytes, 0);
          const onB = `${m.mountpoint}${out}`;
          const n = (await linesIn(pair.a, out)).length;
          await waitFor("counting on B", async () =>
            (await linesIn(pair.b, onB)).length > n + 20 ? true : undefined,
          );
          const lines = await linesIn(pair.b, onB);
          assert.deepEqual(
            lines.map(Number),
            lines.map((_, k) => k),
            "no gap, no repeat",
          );
        } finally {
          await lazyfs.stop(m);
        }
      }
    } finally {
      await pair.a.exec("sh", ["-c", "umount /var/lib/lazyfs; umount /opt/lazyfs"]);
    }
  });

  test("a pid that does not exist: one line, nothing left", async () => {
    const r = await lazyfs.run(lazyfs.migrateArgs(31999), true);
    assert.notEqual(r.code, 0);
    const lines = errorLines(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /pid 31999/);
    await assertNothingLeft(pair, lazyfs);
  });
  test("a zombie and the host's init are refused, each in one accurate line", async () => {
    // The child exits at once and is never reaped: a zombie as long as its parent sleeps.
    const out = `${DATA_DIR}/never-lose-zombie.txt`;
    const parent = await pair.a.startWorkload(
      "python3",
      [
        "-c",
        "import os,time\np=os.fork()\nif p==0: os._exit(0)\nprint(p, flush=True)\ntime.sleep(600)",
      ],
      { stdout: out },
    );
    try {
      const zombie = Number(
        await waitFor("the zombie", async () => {
          const [line] = await linesIn(pair.a, out);
          return line && (await pair.a.processState(Number(line))) === "Z" ? line : undefined;
        }),
      );
      const z = await lazyfs.run(lazyfs.migrateArgs(zombie), true);
      assert.notEqual(z.code, 0);
      assert.deepEqual(errorLines(z.stderr), [
        `lazyfs: root@${pair.a.address}:22: pid ${zombie} is a zombie (exited, not reaped)`,
      ]);
      await assertNothingLeft(pair, lazyfs);
    } finally {
      await pair.a.kill(parent.pid);
    }
    const init = await lazyfs.run(lazyfs.migrateArgs(1), true);
    assert.notEqual(init.code, 0);
    const lines = errorLines(init.stderr);
    assert.equal(lines.length, 1, init.stderr);
    assert.match(lines[0]!, /: pid 1 is the host's init .*cannot be migrated/);
    await assertNothingLeft(pair, lazyfs);
  });

  test("--cache DIR: the migration keeps its blocks there; a failed one removes the new DIR", async () => {
    const cache = `/var/lib/lazyfs-test-cache-${process.pid}`;
    const out = `${DATA_DIR}/never-lose-cache.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", COUNTER, "/dev/null"], {
      stdout: out,
    });
    await waitFor("counting on A", async () =>
      (await linesIn(pair.a, out)).length >= 20 ? true : undefined,
    );
    const refuse = await refusingCriu();
    try {
      const failed = await lazyfs.run(
        lazyfs.migrateArgs(wl.pid, ["--cache", cache, "--criu", refuse]),
        true,
      );
      assert.notEqual(failed.code, 0);
      assert.match(errorLines(failed.stderr)[0]!, /the process runs on at .* where it stopped$/);
      assert.equal((await pair.b.exec("ls", ["-d", cache], { allowFailure: true })).code, 2);
      await assertNothingLeft(pair, lazyfs);
      const m = await lazyfs.migrate(wl.pid, ["--cache", cache]);
      try {
        const onB = `${m.mountpoint}${out}`;
        const n = (await linesIn(pair.a, out)).length;
        await waitFor("counting on B", async () =>
          (await linesIn(pair.b, onB)).length > n + 20 ? true : undefined,
        );
        // What the process wrote is in the given cache, not in the state directory.
        const inCache = await pair.b.exec("sh", ["-c", `ls -A '${cache}'`]);
        assert.match(inCache.stdout, /^store\.json$/m);
        assert.match(inCache.stdout, /^files$/m);
        const inState = await pair.b.exec("sh", ["-c", `ls -A '${lazyfs.stateDir}/${m.id}'`]);
        assert.doesNotMatch(inState.stdout, /^cache$/m);
      } finally {
        await lazyfs.stop(m);
      }
      assert.equal((await pair.b.exec("ls", ["-d", cache], { allowFailure: true })).code, 2);
    } finally {
      await pair.a.kill(wl.pid);
      await pair.b.exec("rm", ["-rf", refuse, cache]);
    }
  });

  test("restoring back on a one-kernel origin fails: its images are kept there, as the error says", async () => {
    // Origin and target one host: the original ends at the dump, and a failed restore here
    // is restored back there from the images; a CRIU that refuses every restore fails both.
    const sshd = await pair.startSshdOn(pair.b, { port: 2222 });
    const out = `${DATA_DIR}/never-lose-back.txt`;
    const wl = await pair.b.startWorkload("python3", ["-c", COUNTER, "/dev/null"], {
      stdout: out,
    });
    await waitFor("counting on B", async () =>
      (await linesIn(pair.b, out)).length >= 20 ? true : undefined,
    );
    const refuse = await refusingCriu();
    let images = "";
    try {
      const r = await lazyfs.run(
        [
          "migrate",
          "--from",
          `ssh://root@${pair.b.address}:2222`,
          "--pid",
          String(wl.pid),
          "-i",
          sshd.identityFile,
          "--known-hosts",
          sshd.knownHostsFile,
          "--criu",
          refuse,
          "--origin-criu",
          refuse,
        ],
        true,
      );
      assert.notEqual(r.code, 0);
      const lines = errorLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      const kept = /restoring it back on \S+ failed too: its images are kept in (\S+) there$/.exec(
        lines[0]!,
      );
      assert.ok(kept, lines[0]);
      images = kept[1]!;
      assert.equal(await pair.b.pidAlive(wl.pid), false, "the original ended at the dump");
      // The images are there, and they bring the process back where it stopped.
      await pair.b.exec("sh", ["-c", `ls '${images}'/inventory.img`]);
      await pair.b.exec(CRIU_BIN, ["restore", "-d", "-D", images, "-o", "by-hand.log"]);
      const n = (await linesIn(pair.b, out)).length;
      await waitFor("counting on B again", async () =>
        (await linesIn(pair.b, out)).length > n + 20 ? true : undefined,
      );
      const lines2 = await linesIn(pair.b, out);
      assert.deepEqual(
        lines2.map(Number),
        lines2.map((_, k) => k),
        "no gap, no repeat",
      );
    } finally {
      await pair.b.kill(wl.pid);
      await pair.b.exec("rm", ["-rf", refuse, ...(images ? [images] : [])]);
    }
  });
});
