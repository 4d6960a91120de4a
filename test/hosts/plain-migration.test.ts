/**
 * Real CRIU between the two simulated hosts: a Python workload on A reads a data file line by
 * line and prints to an output file, both in A's tmpfs; CRIU dumps it inside A's namespaces,
 * the images go to B over the link, CRIU restores it inside B's namespaces, and the output
 * continues exactly where it stopped.
 */
import assert from "node:assert/strict";
import { stat } from "node:fs/promises";
import { before, test } from "node:test";
import {
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  type Host,
  plainCriuMigration,
  sendFiles,
} from "../../src/hosts/index.js";
import { PYTHON } from "../../src/hosts/state.js";
import { eventually } from "./leftovers.js";

const LINES = 300;
const INPUT = `${DATA_DIR}/input.txt`;
const OUTPUT = `${DATA_DIR}/output.txt`;
const READER = `
import sys, time
with open(sys.argv[1]) as f:
    for line in f:
        print(line.rstrip("\\n"), flush=True)
        time.sleep(0.01)
`;

before(async () => {
  await cleanupStaleHosts();
});

async function nsOf(host: Host, pid: number, kind: "mnt" | "net"): Promise<string> {
  return host.readProcLink(pid, `ns/${kind}`);
}

test("plain CRIU: dump inside A, restore inside B, output continues where it stopped", async (t) => {
  const pair = await createHostPair();
  try {
    const { a, b } = pair;
    const input = Array.from({ length: LINES }, (_, i) => `line ${i + 1} of ${LINES}`).join("\n");
    await a.writeFile(INPUT, `${input}\n`);
    // The baseline has the data file already on the target before the freeze.
    await sendFiles(a, b, [INPUT]);

    const w = await a.startWorkload(PYTHON, ["-c", READER, INPUT], { stdout: OUTPUT });
    // A new session, in A's namespaces, with nothing open but its stdio and the data file.
    const statFields = (await a.exec("cat", [`/proc/${w.pid}/stat`])).stdout.split(") ")[1]!;
    assert.equal(Number(statFields.split(" ")[3]), w.pid, "workload leads its own session");
    assert.equal(Number(statFields.split(" ")[1]), 1, "the host's init is its parent");
    assert.equal(await nsOf(a, w.pid, "mnt"), `mnt:[${(await stat(a.mountNsPath)).ino}]`);
    assert.equal(await nsOf(a, w.pid, "net"), `net:[${(await stat(a.netnsPath)).ino}]`);
    const printed = await eventually("50 lines on A", async () => {
      const out = await a.readFile(OUTPUT);
      return out.split("\n").length > 50 ? out : undefined;
    });
    assert.ok(printed.length > 0);
    for (const fd of (await a.exec("ls", [`/proc/${w.pid}/fd`])).stdout.trim().split("\n")) {
      const target = await a.readProcLink(w.pid, `fd/${fd}`);
      assert.ok(
        ["/dev/null", OUTPUT, INPUT].includes(target),
        `fd ${fd} -> ${target} was inherited`,
      );
    }

    const r = await plainCriuMigration({ from: a, to: b, pid: w.pid, copyAfterDump: [OUTPUT] });
    assert.equal(await w.exited, null, "the dump kills the original");
    assert.equal(r.restored.pid, w.pid, "CRIU gives the restored process its old pid");
    // Running again, now inside B's namespaces.
    assert.equal(await nsOf(b, r.restored.pid, "mnt"), `mnt:[${(await stat(b.mountNsPath)).ino}]`);
    assert.equal(await nsOf(b, r.restored.pid, "net"), `net:[${(await stat(b.netnsPath)).ino}]`);
    assert.ok(r.dumpMs > 0 && r.transferMs > 0 && r.restoreMs > 0);
    assert.ok(r.freezeMs >= r.dumpMs + r.transferMs + r.restoreMs - 1);
    assert.ok(r.transferBytes > 0);
    const { dumpMs, transferMs, restoreMs, freezeMs, transferBytes } = r;
    t.diagnostic(JSON.stringify({ dumpMs, transferMs, restoreMs, freezeMs, transferBytes }));

    assert.equal(await r.restored.exited, 0);
    const onB = await b.readFile(OUTPUT);
    assert.equal(onB, `${input}\n`, "output on B is the whole input, exactly once, in order");
    const leftOnA = await a.readFile(OUTPUT);
    const stoppedAt = leftOnA.split("\n").length - 1;
    assert.ok(stoppedAt > 50 && stoppedAt < LINES, `dumped after line ${stoppedAt}`);
    assert.ok(input.startsWith(leftOnA.slice(0, -1)), "A's output is a prefix of the input");
    // A never saw what B printed after the restore.
    assert.ok(leftOnA.length < onB.length);
  } finally {
    await pair.destroy();
  }
});

test("plain CRIU with leaveStopped: the original waits stopped on A until B runs it", async () => {
  const pair = await createHostPair();
  try {
    const { a, b } = pair;
    const w = await a.startWorkload("sleep", ["1000"], { stdout: "/dev/null" });
    const r = await plainCriuMigration({ from: a, to: b, pid: w.pid, leaveStopped: true });
    assert.equal(r.restored.pid, w.pid);
    assert.equal(await w.exited, null, "killed once the restore succeeded");
    assert.equal(await b.processState(w.pid), "S");
    await b.kill(w.pid, "SIGKILL");
    assert.equal(await r.restored.exited, 128 + 9);
  } finally {
    await pair.destroy();
  }
});
