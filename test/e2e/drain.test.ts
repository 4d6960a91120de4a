/**
 * Draining a host: `lazyfs migrate --pid P1,...,P10` moves ten process trees in one command
 * while one of their daemons is killed; a pid given wrongly is reported and stops none of
 * the others. `--unit` with a cgroup path moves every tree of that cgroup (a parent with its
 * child, and a second tree). Every process's output goes on exactly where it stopped.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus } from "../../src/daemon/index.js";
import { DATA_DIR, type Host, type HostPair } from "../../src/hosts/index.js";
import {
  gatedLineReader,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  sleep,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

const TREES = 10;
const LINES = 200;
const GATE = 20;

interface DrainJson {
  cgroup?: string;
  wallMs: number;
  trees: ({ originPid: number } & (Migrated | { error: string }))[];
}

const lineAt = (t: number, i: number) => `tree ${t} line ${String(i).padStart(5, "0")}`;

/**
 * A gated reader in a directory of its own (with a child process if asked); returns its pid.
 */
async function startReader(a: Host, t: number, dir: string, withChild = false): Promise<number> {
  await a.exec("mkdir", ["-p", dir]);
  const lines = Array.from({ length: LINES }, (_, i) => lineAt(t, i));
  await a.writeFile(`${dir}/in.txt`, `${lines.join("\n")}\n`);
  const wl = await a.startWorkload(
    "python3",
    [
      "-u",
      "-c",
      `${withChild ? "import subprocess; open('child.pid','w').write(str(subprocess.Popen(['sleep', '600']).pid))\n" : ""}${gatedLineReader(GATE)}`,
      `${dir}/in.txt`,
      "0.002",
    ],
    { stdout: `${dir}/out.txt`, cwd: dir },
  );
  return wl.pid;
}

describe("draining many trees in one command", { concurrency: false }, () => {
  const env: { pair?: HostPair; lazyfs?: LazyfsOnB } = {};
  before(async () => Object.assign(env, await startHosts()));
  after(() => stopHosts(env));

  /** Lets every migrated reader go on, then checks its whole output on the target. */
  async function checkGoesOn(migrated: Map<number, Migrated>, dirOf: (t: number) => string) {
    const { pair } = env;
    for (const m of migrated.values()) await pair!.b.exec("kill", ["-USR1", String(m.pid)]);
    for (const [t, m] of migrated) {
      const out = `${m.mountpoint}${dirOf(t)}/out.txt`;
      const lines = await waitFor(
        `tree ${t}'s reader to finish on B`,
        async () => {
          const l = await linesIn(pair!.b, out);
          return l.length >= LINES ? l : undefined;
        },
        60_000,
      );
      assert.deepEqual(
        lines,
        Array.from({ length: LINES }, (_, i) => lineAt(t, i)),
        `tree ${t}: every line once, in order`,
      );
    }
  }

  test(`${TREES} trees in one command, a wrong pid among them, a daemon killed during the drain`, async () => {
    const { pair, lazyfs } = env;
    const a = pair!.a;
    const dirOf = (t: number) => `${DATA_DIR}/drain/t${t}`;
    const pids: number[] = [];
    for (let t = 0; t < TREES; t++) pids.push(await startReader(a, t, dirOf(t)));
    for (const [t, pid] of pids.entries()) {
      await waitFor(`tree ${t} (pid ${pid}) to print ${GATE} lines`, async () =>
        (await linesIn(a, `${dirOf(t)}/out.txt`).catch(() => [])).length >= GATE ? true : undefined,
      );
    }
    // A pid given wrongly: one no process has on the origin.
    let wrong = 999;
    while ((await a.exec("test", ["-e", `/proc/${wrong}`], { allowFailure: true })).code === 0) {
      wrong--;
    }
    const given = [...pids.slice(0, 5), wrong, ...pids.slice(5)];
    const drain = lazyfs!.run(
      [
        "migrate",
        "--from",
        `ssh://root@${pair!.a.address}`,
        "--pid",
        given.join(","),
        "--parallel",
        "4",
        ...lazyfs!.sshArgs(),
        "--json",
      ],
      true,
      900_000,
    );
    // Kill the daemon of the first migration that runs, while the others are still moving.
    let killed: { id: string; daemonPid: number } | undefined;
    let done = false;
    void drain.finally(() => {
      done = true;
    });
    while (!done && !killed) {
      const st = await lazyfs!.run(["status", "--json"], true);
      const running = st.code === 0 ? (JSON.parse(st.stdout) as DaemonStatus[]) : [];
      const first = running.find((s) => s.daemonPid > 0 && s.restoredPid);
      if (first && (await pair!.b.kill(first.daemonPid, "SIGKILL"))) {
        killed = { id: first.id, daemonPid: first.daemonPid };
      } else await sleep(100);
    }
    const r = await drain;
    assert.equal(r.code, 1, `one tree not migrated: exit 1 (stderr: ${r.stderr})`);
    assert.match(r.stderr, new RegExp(`1 of ${TREES + 1} trees not migrated \\(pid ${wrong}\\)`));
    const report = JSON.parse(r.stdout) as DrainJson;
    assert.deepEqual(
      report.trees.map((t) => t.originPid),
      given,
      "one row per pid given, in order",
    );
    const wrongRow = report.trees.find((t) => t.originPid === wrong)!;
    assert.ok("error" in wrongRow && /no process with pid/.test(wrongRow.error), "why it stayed");
    const migrated = new Map<number, Migrated>();
    for (const [t, pid] of pids.entries()) {
      const row = report.trees.find((x) => x.originPid === pid)!;
      assert.ok("id" in row, `tree ${t} migrated: ${JSON.stringify(row)}`);
      migrated.set(t, row);
      assert.equal(
        (await a.exec("test", ["-e", `/proc/${pid}`], { allowFailure: true })).code,
        1,
        `tree ${t} is gone from the origin`,
      );
    }
    assert.ok(killed, "a daemon was killed during the drain");
    await waitFor("a new daemon for the killed one", async () => {
      const s = await lazyfs!.status(killed!.id).catch(() => undefined);
      return s && s.daemonPid > 0 && s.daemonPid !== killed!.daemonPid ? true : undefined;
    });
    await checkGoesOn(migrated, dirOf);
    for (const m of migrated.values()) await lazyfs!.stop(m);
  });

  test("--unit with a cgroup path: every tree of the cgroup, children with their parent", async () => {
    const { pair, lazyfs } = env;
    const a = pair!.a;
    const dirOf = (t: number) => `${DATA_DIR}/unit/t${t}`;
    // The hierarchy a cgroup path names: cgroup v2 (hybrid or unified), else systemd's v1.
    const root = (
      await a.exec("sh", [
        "-c",
        "for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do test -f $d/cgroup.procs && { echo $d; exit; }; done",
      ])
    ).stdout.trim();
    assert.ok(root, "a cgroup hierarchy");
    const name = `/lazyfs-drain-test-${process.pid}`;
    await a.exec("mkdir", ["-p", `${root}${name}`]);
    try {
      const pids = [await startReader(a, 0, dirOf(0), true), await startReader(a, 1, dirOf(1))];
      await a.exec("mkdir", ["-p", dirOf(2)]);
      const sleeper = (await a.startWorkload("sleep", ["600"], { stdout: `${dirOf(2)}/out.txt` }))
        .pid;
      // Python is started through pyenv's shell wrappers: once it prints, the pid is python's.
      await waitFor("both readers started", async () => {
        for (let t = 0; t < 2; t++) {
          if ((await linesIn(a, `${dirOf(t)}/out.txt`).catch(() => [])).length < GATE) return;
        }
        return true;
      });
      // Tree 0's child is in the cgroup too: it moves with its parent, not on its own.
      const child = Number(await a.readFile(`${dirOf(0)}/child.pid`));
      for (const pid of [...pids, child, sleeper]) {
        await a.exec("sh", ["-c", `echo ${pid} > '${root}${name}/cgroup.procs'`]);
      }
      const r = await lazyfs!.run(
        [
          "migrate",
          "--from",
          `ssh://root@${pair!.a.address}`,
          "--unit",
          name,
          ...lazyfs!.sshArgs(),
          "--json",
        ],
        false,
        900_000,
      );
      const report = JSON.parse(r.stdout) as DrainJson;
      assert.equal(report.cgroup, `${root}${name}`);
      assert.deepEqual(
        report.trees.map((t) => t.originPid),
        [...pids, sleeper].sort((x, y) => x - y),
        "the cgroup's three trees (not tree 0's child)",
      );
      const migrated = new Map<number, Migrated>();
      for (const [t, pid] of pids.entries()) {
        const row = report.trees.find((x) => x.originPid === pid)!;
        assert.ok("id" in row, JSON.stringify(row));
        migrated.set(t, row);
      }
      await checkGoesOn(migrated, dirOf);
      for (const row of report.trees) if ("id" in row) await lazyfs!.stop(row);
    } finally {
      await a.exec("sh", ["-c", `rmdir '${root}${name}' 2>/dev/null; true`]);
    }
  });

  test("a unit name where systemd does not run: one line naming the way out", async () => {
    const { pair, lazyfs } = env;
    const r = await lazyfs!.run(
      [
        "migrate",
        "--from",
        `ssh://root@${pair!.a.address}`,
        "--unit",
        "nginx.service",
        ...lazyfs!.sshArgs(),
      ],
      true,
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^lazyfs: .*systemd does not run there.*--unit \/path/);
    const both = await lazyfs!.run(["migrate", "--from", "x", "--pid", "1,2", "--unit", "u"], true);
    assert.equal(both.code, 1);
    assert.match(
      both.stderr,
      /exactly one of --pid PID\[,PID\.\.\.\], --unit NAME and --container/,
    );
  });
});
