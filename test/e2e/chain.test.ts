/**
 * End to end: chained migration A -> B -> C. A process migrated from A to B runs on B's
 * LazyFS (B fetched only what it read); `lazyfs migrate` run on C takes it from B: C's plan
 * sees the process's own paths, blocks B holds come from B, the rest straight from A. Once C
 * is independent, B's LazyFS is stopped and C is cut off from both A and B; the process goes
 * on exactly (a reader: the hash of every input line in order; a writer: its file exact).
 */
import assert from "node:assert/strict";
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus } from "../../src/daemon/index.js";
import {
  type ClientHostPair,
  DATA_DIR,
  type Host,
  type SshdHandle,
} from "../../src/hosts/index.js";
import { CLI, type LazyfsOnB, type Migrated, startHosts, stopHosts, waitFor } from "./helpers.js";
import { sha, startReaderAndWriter } from "./line-workloads.js";

let pair: ClientHostPair;
let lazyfs: LazyfsOnB;
let sshdB: SshdHandle;
/** known_hosts with A's and B's keys; B's client key is admitted by A's sshd too. */
let knownHosts: string;
const stateC = `/var/lib/lazyfs-test-${process.pid}-c`;

function onC(args: string[], allowFailure = false) {
  return pair.c.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...process.env, LAZYFS_STATE_DIR: stateC },
    timeoutMs: 180_000,
  });
}

async function statusOn(run: typeof onC, id: string): Promise<DaemonStatus> {
  return (JSON.parse((await run(["status", id, "--json"])).stdout) as DaemonStatus[])[0]!;
}

async function lines(host: Host, path: string): Promise<string[]> {
  const text = await host.readFile(path).catch(() => "");
  return text.split("\n").filter(Boolean);
}

describe("chained migration A -> B -> C", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts({ client: true }));
    sshdB = await pair.startSshdOn(pair.b);
    const sshdA = JSON.parse(JSON.stringify(lazyfs.sshArgs())) as string[];
    const aKnown = await readFile(sshdA[3]!, "utf8");
    knownHosts = `${sshdB.dir}/known_hosts_ab`;
    await writeFile(knownHosts, `${aKnown.trim()}\n${sshdB.hostKeyLine}\n`, { mode: 0o600 });
    // One key for both hops, as a user would have.
    const aDir = sshdA[1]!.replace(/\/id_ed25519$/, "");
    await appendFile(
      `${aDir}/authorized_keys`,
      await readFile(`${sshdB.identityFile}.pub`, "utf8"),
    );
  });
  after(async () => {
    await onC(["unmount", "--all", "--force"], true).catch(() => {});
    await pair?.c.exec("rm", ["-rf", stateC]).catch(() => {});
    await stopHosts({ pair, lazyfs });
  });

  test("a reader and a writer go on on C with A and B gone", async () => {
    const dir = `${DATA_DIR}/chain-${process.pid}`;
    const n = 5000;
    const { reader, writer, input, output, log, inputLines, expectedLog } =
      await startReaderAndWriter(pair.a, dir, n);
    // A -> B, no prefetch: B holds only what the processes touched.
    const onB: Migrated[] = [];
    for (const wl of [reader, writer])
      onB.push(await lazyfs.migrate(wl.pid, ["--block-size", "64K"]));
    await waitFor("progress on B", async () =>
      (await lines(pair.b, `${onB[0]!.mountpoint}${output}`)).length > 200 ? true : undefined,
    );
    const stB = await lazyfs.status(onB[0]!.id);
    assert.ok(stB.total.bytesOnOrigin > 0, "B has not fetched all of the reader's input");
    // B -> C, run on C, with prefetch: C becomes independent of both.
    const onC_: (Migrated & { pid: number })[] = [];
    for (const m of onB) {
      const r = await onC([
        "migrate",
        "--from",
        `ssh://root@${pair.b.address}`,
        "--pid",
        String(m.pid),
        "-i",
        sshdB.identityFile,
        "--known-hosts",
        knownHosts,
        "--prefetch",
        "immediate",
        "--json",
      ]);
      onC_.push(JSON.parse(r.stdout) as Migrated);
    }
    for (const m of onC_) {
      await waitFor(
        "C independent",
        async () => {
          const s = await statusOn(onC, m.id);
          return s.originState === "released" ? true : undefined;
        },
        90_000,
      );
    }
    // The reader's input: what B had read came from B's store, the rest straight from A.
    const log0 = await pair.c.readFile(`${stateC}/${onC_[0]!.id}/daemon.log`);
    const fromB = Number(/bytesFromOriginStore=(\d+)/.exec(log0)?.[1] ?? -1);
    const fromA = Number(/bytesFromFirstOrigin=(\d+)/.exec(log0)?.[1] ?? -1);
    assert.ok(fromB > 0 && fromA > 0, `bytes from B's store ${fromB}, straight from A ${fromA}`);
    // C's plan saw the process's own paths.
    const stC = await statusOn(onC, onC_[0]!.id);
    assert.ok(
      stC.perFile.some((f) => f.path === input),
      stC.perFile.map((f) => f.path).join(", "),
    );
    // A and B go away: B's LazyFS stops, and C's links to both go down.
    for (const m of onB) await lazyfs.run(["unmount", m.id, "--force"], true);
    await pair.c.exec("ip", ["link", "set", "veth-a", "down"]);
    await pair.c.exec("ip", ["link", "set", "veth-b", "down"]);
    const hashes = await waitFor(
      "the reader to finish on C",
      async () => {
        const l = await lines(pair.c, `${onC_[0]!.mountpoint}${output}`);
        return l.length >= n ? l : undefined;
      },
      120_000,
    ).catch(async (err) => {
      const l = await lines(pair.c, `${onC_[0]!.mountpoint}${output}`);
      const d = await pair.c.exec(
        "sh",
        [
          "-c",
          `head -3 /proc/${onC_[0]!.pid}/status; ls -l /proc/${onC_[0]!.pid}/fd; tail -20 ${stateC}/${onC_[0]!.id}/daemon.log`,
        ],
        { allowFailure: true },
      );
      throw new Error(`${err}: ${l.length} lines, last ${l.slice(-2)}; ${d.stdout} ${d.stderr}`);
    });
    assert.deepEqual(hashes, inputLines.map(sha));
    const written = await waitFor(
      "the writer to finish on C",
      async () => {
        const l = await lines(pair.c, `${onC_[1]!.mountpoint}${log}`);
        return l.length >= n + 1 ? l : undefined;
      },
      120_000,
    );
    assert.deepEqual(written, expectedLog);
    for (const m of onC_) {
      await pair.c.exec("kill", ["-KILL", String(m.pid)], { allowFailure: true });
      await onC(["unmount", m.id, "--force"], true);
    }
  });
});
