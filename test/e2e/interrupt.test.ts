/**
 * Ctrl-C during `lazyfs migrate`, at any moment, leaves one of two outcomes: the process runs
 * on at the origin and nothing of the attempt is left on either host (one line, exit 130), or
 * the migration completed (exit 0, its normal output). The signal is sent when an observable
 * condition holds (the origin's CRIU reached a gate, a mount or a state directory appeared,
 * the original ended); a CRIU on the origin that waits at a gate holds the migration at a
 * known step while the signal arrives.
 */
import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus } from "../../src/daemon/index.js";
import { CRIU_BIN, DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import {
  assertNothingLeft,
  CLI,
  errorLines,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  privateDevShm,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

/** Prints 0, 1, 2, ... every 5 ms. */
const COUNTER = "import time\ni=0\nwhile True:\n  print(i, flush=True); i+=1; time.sleep(0.005)";

/** A CRIU that, called with `stage` as its first argument, waits at a gate. */
function gatedCriu(tag: string, stage: "--version" | "dump" | "restore") {
  const base = `/tmp/lazyfs-gate-${process.pid}-${tag}`;
  const gate = {
    path: `${base}.sh`,
    reached: () => existsSync(`${base}.reached`),
    open: () => writeFileSync(`${base}.go`, ""),
    remove: () => {
      for (const f of [gate.path, `${base}.reached`, `${base}.go`]) rmSync(f, { force: true });
    },
  };
  // /tmp is the same directory on every simulated host and here.
  writeFileSync(
    gate.path,
    `#!/bin/sh\nif [ "$1" = ${stage} ]; then : > ${base}.reached; while [ ! -e ${base}.go ]; do sleep 0.02; done; fi\nexec ${CRIU_BIN} "$@"\n`,
    { mode: 0o755 },
  );
  return gate;
}

interface Run {
  /** The CLI's pid inside b, once it runs. */
  pid: Promise<number>;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/**
 * `lazyfs migrate` started in b (not awaited), so that a signal can reach it midway; `setsid`:
 * as the leader of its own process group, like a command a terminal runs in the foreground.
 */
function startMigrate(wlPid: number, extra: string[] = [], opts: { setsid?: boolean } = {}): Run {
  const argv = [process.execPath, CLI, ...lazyfs.migrateArgs(wlPid, extra)];
  if (opts.setsid) argv.unshift("setsid");
  const child = pair.b.spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, LAZYFS_STATE_DIR: lazyfs.stateDir },
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on("close", (code) => resolve({ code, stdout, stderr })),
  );
  const pid = waitFor("lazyfs migrate running in b", async () => {
    const r = await pair.b.exec("pgrep", ["-f", `main.js migrate .*--pid ${wlPid} `], {
      allowFailure: true,
    });
    const pids = r.stdout.trim().split("\n").filter(Boolean).map(Number);
    return pids.length === 1 ? pids[0] : undefined;
  });
  return { pid, done };
}

async function startCounter(name: string): Promise<{ pid: number; out: string }> {
  const out = `${DATA_DIR}/interrupt-${name}.txt`;
  const wl = await pair.a.startWorkload("python3", ["-c", COUNTER], { stdout: out });
  await waitFor("counting on A", async () =>
    (await linesIn(pair.a, out)).length >= 20 ? true : undefined,
  );
  return { pid: wl.pid, out };
}

/** Every number once, in order, and more of them a moment later: the process runs on. */
async function assertCountingOn(host: "a" | "b", path: string): Promise<void> {
  const h = host === "a" ? pair.a : pair.b;
  const check = async () => {
    const lines = await linesIn(h, path);
    assert.deepEqual(
      lines.map(Number),
      lines.map((_, i) => i),
      "every number once, in order: no gap, no repeat",
    );
    return lines.length;
  };
  const n = await check();
  await waitFor(`counting on ${host}`, async () => ((await check()) > n + 20 ? true : undefined));
}

/** Interrupted before the dump: one line, exit 130, the process counting on A, nothing left. */
async function assertInterrupted(
  r: { code: number | null; stdout: string; stderr: string },
  wl: { pid: number; out: string },
): Promise<void> {
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.stdout, "");
  const lines = errorLines(r.stderr);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(
    lines[0]!,
    /^lazyfs: interrupted \(SIGINT\) before the dump: nothing was migrated; the process runs on at root@\S+$/,
  );
  await assertCountingOn("a", wl.out);
  await assertNothingLeft(pair, lazyfs);
}

/** Completed: exit 0, the normal JSON result, the process counting on B. */
async function assertCompleted(
  r: { code: number | null; stdout: string; stderr: string },
  wl: { pid: number; out: string },
): Promise<void> {
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout) as Migrated;
  try {
    assert.equal(m.pid, wl.pid);
    assert.equal(m.originKept, "stopped");
    assert.equal(await pair.a.pidAlive(wl.pid), false, "the original ended on A");
    await assertCountingOn("b", `${m.mountpoint}${wl.out}`);
    const dumps = await pair.a.exec("sh", ["-c", "ls -d /dev/shm/lazyfs-dump.* 2>/dev/null; true"]);
    assert.equal(dumps.stdout.trim(), "", "no dump directory left on the origin");
  } finally {
    await lazyfs.stop(m);
  }
}

describe("Ctrl-C during lazyfs migrate", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
    await privateDevShm(pair);
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("before the dump, with the mount up and the origin's CRIU being probed: interrupted, nothing left", async () => {
    const wl = await startCounter("probe");
    const gate = gatedCriu("probe", "--version");
    try {
      const run = startMigrate(wl.pid, ["--origin-criu", gate.path]);
      await waitFor("the origin's CRIU probed", async () => (gate.reached() ? true : undefined));
      await waitFor("the empty tree mounted on the target", async () => {
        const m = await pair.b.exec("cat", ["/proc/self/mountinfo"]);
        return / fuse\.lazyfs /.test(m.stdout) ? true : undefined;
      });
      await pair.b.kill(await run.pid, "SIGINT");
      gate.open();
      await assertInterrupted(await run.done, wl);
    } finally {
      gate.remove();
      await pair.a.kill(wl.pid);
    }
  });

  test("as soon as the migration's state directory appears: interrupted or completed", async () => {
    const wl = await startCounter("state");
    try {
      const run = startMigrate(wl.pid);
      const pid = await run.pid;
      await waitFor("the migration's state directory", async () => {
        const r = await pair.b.exec("sh", ["-c", `ls -A '${lazyfs.stateDir}' 2>/dev/null; true`]);
        return r.stdout.trim() ? true : undefined;
      });
      await pair.b.kill(pid, "SIGINT");
      const r = await run.done;
      if (r.code === 0) await assertCompleted(r, wl);
      else await assertInterrupted(r, wl);
    } finally {
      await pair.a.kill(wl.pid);
    }
  });

  test("during the dump: the migration completes, exit 0 and its normal output", async () => {
    const wl = await startCounter("dump");
    const gate = gatedCriu("dump", "dump");
    try {
      const run = startMigrate(wl.pid, ["--origin-criu", gate.path]);
      await waitFor("the dump started", async () => (gate.reached() ? true : undefined));
      await pair.b.kill(await run.pid, "SIGINT");
      gate.open();
      await assertCompleted(await run.done, wl);
    } finally {
      gate.remove();
      await pair.a.kill(wl.pid);
    }
  });

  test("Ctrl-C at a terminal during the restore (SIGINT to the whole process group): the migration completes", async () => {
    const wl = await startCounter("group");
    const gate = gatedCriu("group", "restore");
    try {
      const run = startMigrate(wl.pid, ["--criu", gate.path], { setsid: true });
      await waitFor("the restore started", async () => (gate.reached() ? true : undefined));
      // The CLI leads its process group: a negative pid reaches it and the children in it.
      await pair.b.kill(-(await run.pid), "SIGINT");
      gate.open();
      await assertCompleted(await run.done, wl);
    } finally {
      gate.remove();
      await pair.a.kill(wl.pid);
    }
  });

  test("once the original ended on the origin: exit 0 and its normal output", async () => {
    const wl = await startCounter("end");
    const run = startMigrate(wl.pid);
    const pid = await run.pid;
    await waitFor("the original ended", async () =>
      (await pair.a.pidAlive(wl.pid)) ? undefined : true,
    );
    await pair.b.kill(pid, "SIGTERM");
    await assertCompleted(await run.done, wl);
  });
  test("while --detach waits for independence: exit 0, the migration's normal output, not detached", async () => {
    // A file the process never reads, with prefetch off: independence never comes.
    const unread = `${DATA_DIR}/interrupt-detach-unread.bin`;
    await pair.a.exec("dd", ["if=/dev/urandom", `of=${unread}`, "bs=64K", "count=16"]);
    const wl = await startCounter("detach");
    const run = startMigrate(wl.pid, ["--detach", "--prefetch", "none"]);
    const pid = await run.pid;
    const endedEarly = run.done.then((r) => {
      throw new Error(`migrate ended before the signal: ${r.code} ${r.stdout} ${r.stderr}`);
    });
    await Promise.race([
      endedEarly,
      waitFor("the original ended", async () =>
        (await pair.a.pidAlive(wl.pid)) ? undefined : true,
      ),
    ]);
    const id = await waitFor("the migration's daemon answering", async () => {
      const r = await lazyfs.run(["status", "--json"], true);
      const rows = JSON.parse(r.stdout || "[]") as { id: string; daemonPid?: number }[];
      return rows.find((x) => x.daemonPid)?.id;
    });
    endedEarly.catch(() => {});
    await pair.b.kill(pid, "SIGINT");
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as Migrated & { detach?: unknown };
    try {
      assert.equal(m.id, id);
      assert.equal(m.pid, wl.pid);
      assert.equal(m.detach, undefined);
      assert.deepEqual(errorLines(r.stderr), [
        `lazyfs: SIGINT: stopped waiting to detach; migration ${m.id} runs on LazyFS (\`lazyfs detach ${m.id} --wait\` detaches it later)`,
      ]);
      await assertCountingOn("b", `${m.mountpoint}${wl.out}`);
      const st = (await lazyfs.status(m.id)) as DaemonStatus & { detached?: unknown };
      assert.equal(st.detached, undefined, "not detached: LazyFS serves it");
      assert.ok(st.daemonPid > 0);
    } finally {
      await lazyfs.stop(m);
      await pair.a.exec("rm", ["-f", unread]);
    }
  });
});
