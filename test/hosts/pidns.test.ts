/**
 * Each simulated host has its own PID namespace: pids from the host's base, processes of one
 * host invisible to the others, an init that reaps orphans, and real CRIU moving a process
 * tree from A to B with its pids while the original stays stopped on A.
 */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import {
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  dumpInHost,
  PID_BASE,
  restoreInHost,
  sendFiles,
} from "../../src/hosts/index.js";
import { PYTHON } from "../../src/hosts/state.js";
import { eventually } from "./leftovers.js";

before(async () => {
  await cleanupStaleHosts();
});

/** A parent and its forked child, each appending "<pid> <n>" lines to its own file. */
const TREE = `
import os, sys, time
pid = os.fork()
out = open(sys.argv[2] if pid == 0 else sys.argv[1], "a")
i = 0
while True:
    out.write("%d %d\\n" % (os.getpid(), i)); out.flush(); i += 1; time.sleep(0.01)
`;

test("pids start at each host's base; a process on A is invisible to B and C", async () => {
  const pair = await createHostPair({ client: true });
  try {
    const { a, b, c } = pair;
    for (const host of [a, b, c]) {
      const pid = Number((await host.exec("sh", ["-c", "echo $$"])).stdout.trim());
      assert.ok(
        pid > PID_BASE[host.role] && pid < PID_BASE[host.role] + 1000,
        `${host.role}: pid ${pid}`,
      );
      assert.equal(host.pidBase, PID_BASE[host.role]);
      // The host's /proc is its own: pid 1 is its init, and no pid of the root namespace.
      const ps = (await host.exec("ps", ["-e", "-o", "pid=,comm="])).stdout.trim().split("\n");
      assert.match(ps[0]!, /^\s*1 python3$/);
      for (const line of ps.slice(1)) {
        const n = Number(line.trim().split(/\s+/)[0]);
        assert.ok(n > PID_BASE[host.role], `${host.role} sees pid ${n}`);
      }
    }

    const w = await a.startWorkload("sleep", ["1000"], { stdout: `${DATA_DIR}/out` });
    assert.ok(w.pid > PID_BASE.a && w.pid < PID_BASE.b, `workload pid ${w.pid}`);
    assert.equal(await a.pidAlive(w.pid), true);
    assert.equal((await a.readFile(`/proc/${w.pid}/comm`)).trim(), "sleep");
    assert.equal(await a.readProcLink(w.pid, "fd/1"), `${DATA_DIR}/out`);
    for (const other of [b, c]) {
      assert.equal(await other.pidAlive(w.pid), false, `${other.role} sees A's workload`);
      assert.equal(await other.kill(w.pid, "SIGKILL"), false);
    }
    assert.equal(await a.kill(w.pid, "SIGKILL"), true);
    assert.equal(await w.exited, null, "a signal ended it");
    assert.equal(await a.processState(w.pid), undefined, "the init reaped it");

    const ok = await b.startWorkload("sh", ["-c", "exit 3"], { stdout: "/dev/null" });
    assert.ok(ok.pid > PID_BASE.b && ok.pid < PID_BASE.c);
    assert.equal(await ok.exited, 3);
    await assert.rejects(
      b.startWorkload("/nonexistent/prog", [], { stdout: "/dev/null" }),
      /cannot start .*nonexistent/,
    );

    // An orphan of a command run in the host (a daemon) lives on and is reaped by the init.
    const daemon = Number(
      (await b.exec("sh", ["-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])).stdout.trim(),
    );
    assert.equal(await b.pidAlive(daemon), true);
    const ppid = (await b.readFile(`/proc/${daemon}/stat`)).split(") ")[1]!.split(" ")[1];
    assert.equal(ppid, "1", "reparented to b's init");
    await b.kill(daemon, "SIGTERM");
    assert.deepEqual(await b.reaped(daemon), { code: null, signal: "SIGTERM" });
  } finally {
    await pair.destroy();
  }
});

test("a tree dumped on A with --leave-stopped restores on B with its pids while A's stays stopped", async () => {
  const pair = await createHostPair();
  try {
    const { a, b } = pair;
    const outP = `${DATA_DIR}/parent.out`;
    const outC = `${DATA_DIR}/child.out`;
    const w = await a.startWorkload(PYTHON, ["-c", TREE, outP, outC], { stdout: "/dev/null" });
    const size = (path: string) =>
      a.readFile(path).then(
        (t) => t.length,
        () => 0,
      );
    await eventually("both writing", async () =>
      (await size(outP)) > 50 && (await size(outC)) > 50 ? true : undefined,
    );
    const child = Number((await a.readFile(`/proc/${w.pid}/task/${w.pid}/children`)).trim());
    assert.ok(child > w.pid, `child ${child}`);

    const dir = `${DATA_DIR}/images`;
    await dumpInHost(a, w.pid, dir, { leaveStopped: true });
    for (const pid of [w.pid, child]) assert.equal(await a.processState(pid), "T", `${pid} on A`);
    const stoppedAt = await a.readFile(outP);
    const childStoppedAt = await a.readFile(outC);
    await sendFiles(a, b, [dir, outP, outC]);
    const restored = await restoreInHost(b, dir);
    assert.equal(restored.pid, w.pid, "the root keeps its pid on B");
    assert.equal(
      Number((await b.readFile(`/proc/${w.pid}/task/${w.pid}/children`)).trim()),
      child,
      "so does the child",
    );
    // Both run on B, as the same pids, while the originals are still stopped on A.
    const onB = await eventually("progress on B", async () => {
      const text = await b.readFile(outP);
      return text.length > stoppedAt.length + 50 ? text : undefined;
    });
    assert.ok(onB.startsWith(stoppedAt));
    assert.ok(
      onB
        .slice(stoppedAt.length)
        .trim()
        .split("\n")
        .every((l) => l.startsWith(`${w.pid} `)),
    );
    const childOnB = await eventually("the child's progress on B", async () => {
      const text = await b.readFile(outC);
      return text.length > childStoppedAt.length + 50 ? text : undefined;
    });
    assert.ok(childOnB.trim().split("\n").at(-1)!.startsWith(`${child} `));
    for (const pid of [w.pid, child]) assert.equal(await a.processState(pid), "T", `${pid} on A`);
    assert.equal(await a.readFile(outP), stoppedAt, "the original did not run on");

    // Now the original goes; the copy on B is untouched by that.
    assert.equal(await a.kill(-w.pid, "SIGKILL"), true);
    assert.equal(await w.exited, null);
    await eventually("A's child reaped", async () =>
      (await a.processState(child)) === undefined ? true : undefined,
    );
    assert.equal(await b.pidAlive(w.pid), true);
    assert.equal(await b.pidAlive(child), true);
    await b.kill(-w.pid, "SIGKILL");
    assert.equal(await restored.exited, 128 + 9);
  } finally {
    await pair.destroy();
  }
});
