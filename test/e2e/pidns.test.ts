/**
 * End to end: a process whose pid is taken on the target migrates with no extra flags. Its
 * tree is restored into a new pid namespace of its own (it keeps its pid there), the CLI says
 * so in one line, and `status` shows both pids. A second migration from there (B -> C, run on
 * C) dumps it from inside its namespace and, its pid being taken on C too, restores it into a
 * new one again; detach there does the same once more. A counter's output goes on exactly
 * through all of it.
 */
import assert from "node:assert/strict";
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import type { DaemonStatus } from "../../src/daemon/index.js";
import type { DetachResult } from "../../src/detach/index.js";
import {
  type ClientHostPair,
  DATA_DIR,
  type Host,
  type SshdHandle,
} from "../../src/hosts/index.js";
import {
  CLI,
  errorLines,
  type LazyfsOnB,
  type Migrated,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

let pair: ClientHostPair;
let lazyfs: LazyfsOnB;
let sshdB: SshdHandle;
/** known_hosts with A's and B's keys; B's client key is admitted by A's sshd too. */
let knownHosts: string;
const stateC = `/var/lib/lazyfs-test-${process.pid}-c`;

type WithNs = Migrated & { pidNamespace?: { nsPid: number; initPid: number; taken?: number } };

function onC(args: string[], allowFailure = false) {
  return pair.c.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...process.env, LAZYFS_STATE_DIR: stateC },
    timeoutMs: 180_000,
  });
}

/** The counter's lines as the process itself sees its output file, on the host it runs on. */
async function counted(host: Host, pid: number, path: string): Promise<number[]> {
  const text = await host.readFile(`/proc/${pid}/root${path}`).catch(() => "");
  return text.split("\n").filter(Boolean).map(Number);
}

/** The counter went on exactly: 1, 2, 3, ... with nothing lost or repeated. */
function assertExact(lines: number[]): void {
  assert.ok(lines.length > 0);
  for (let i = 0; i < lines.length; i++) assert.equal(lines[i], i + 1, `line ${i + 1}`);
}

async function grows(host: Host, pid: number, path: string, beyond: number): Promise<number[]> {
  return waitFor(
    `output beyond ${beyond} lines`,
    async () => {
      const l = await counted(host, pid, path);
      return l.length > beyond ? l : undefined;
    },
    60_000,
  );
}

/** Takes `pid` on `host`: ns_last_pid set just below it, then a sleeper started. */
async function holdPid(host: Host, pid: number): Promise<number> {
  const r = await host.exec("sh", [
    "-c",
    `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid; setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!`,
  ]);
  return Number(r.stdout.trim());
}

describe("pid namespaces: a taken pid never blocks a migration", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts({ client: true }));
    sshdB = await pair.startSshdOn(pair.b);
    const sshdA = lazyfs.sshArgs();
    knownHosts = `${sshdB.dir}/known_hosts_ab`;
    const aKnown = await readFile(sshdA[3]!, "utf8");
    await writeFile(knownHosts, `${aKnown.trim()}\n${sshdB.hostKeyLine}\n`, { mode: 0o600 });
    const aDir = sshdA[1]!.replace(/\/id_ed25519$/, "");
    await appendFile(
      `${aDir}/authorized_keys`,
      await readFile(`${sshdB.identityFile}.pub`, "utf8"),
    );
  });
  after(async () => {
    await onC(["unmount", "--all", "--force"], true).catch(() => {});
    await pair?.c.exec("rm", ["-rf", stateC]).catch(() => {});
    await lazyfs?.cleanUp();
    await stopHosts({ pair, lazyfs });
  });

  test("bad --pid-namespace value: one line", async () => {
    const r = await lazyfs.run(lazyfs.migrateArgs(1234, ["--pid-namespace", "sometimes"]), true);
    assert.notEqual(r.code, 0);
    const lines = errorLines(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /--pid-namespace "sometimes": not one of always, never, auto/);
  });

  test("taken pid: never refuses; auto restores into a pid namespace; detach; B -> C", async () => {
    const dir = `${DATA_DIR}/pidns-${process.pid}`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const out = `${dir}/count.out`;
    const wl = await pair.a.startWorkload(
      // No short-lived children: a zombie caught by the dump has no fdinfo image.
      "python3",
      [
        "-c",
        "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.02)",
      ],
      { stdout: out, cwd: dir },
    );
    const holderB = await holdPid(pair.b, wl.pid);
    const holderC = await holdPid(pair.c, wl.pid);
    assert.equal(holderB, wl.pid, "the workload's pid is taken on b");
    assert.equal(holderC, wl.pid, "the workload's pid is taken on c");

    // never: today's refusal, in one line; the process runs on on a.
    const refused = await lazyfs.run(
      lazyfs.migrateArgs(wl.pid, ["--pid-namespace", "never"]),
      true,
    );
    assert.notEqual(refused.code, 0);
    const why = errorLines(refused.stderr);
    assert.equal(why.length, 1, refused.stderr);
    assert.match(why[0]!, new RegExp(`pid\\(s\\) ${wl.pid} \\(sleep\\) in use on this host`));
    const before = (await counted(pair.a, wl.pid, out)).length;
    await grows(pair.a, wl.pid, out, before);

    // auto (no flag): restored into a new pid namespace, said in one line.
    const r = await lazyfs.run(lazyfs.migrateArgs(wl.pid));
    const m = JSON.parse(r.stdout) as WithNs;
    assert.equal(m.pidNamespace?.nsPid, wl.pid);
    assert.equal(m.pidNamespace?.taken, wl.pid);
    assert.notEqual(m.pid, wl.pid);
    assert.match(
      r.stderr,
      new RegExp(
        `pid ${wl.pid} in use here: restored into a new pid namespace; host pid ${m.pid} \\(pid ${wl.pid} inside\\)`,
      ),
    );
    const onB = await grows(pair.b, m.pid, out, before + 20);
    assertExact(onB);

    // status: both pids, in the table and in --json.
    const st = (
      JSON.parse((await lazyfs.run(["status", m.id, "--json"])).stdout) as DaemonStatus[]
    )[0]!;
    assert.equal(st.restoredPid, m.pid);
    assert.equal(st.restoredNsPid, wl.pid);
    const table = await lazyfs.run(["status", m.id]);
    assert.ok(table.stdout.includes(`${m.pid} (ns ${wl.pid})`), table.stdout);

    // B -> C, run on C: CRIU dumps it inside its pid namespace on B; taken on C too.
    const c = await onC([
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
    const mc = JSON.parse(c.stdout) as WithNs;
    assert.equal(mc.pidNamespace?.nsPid, wl.pid, "the process keeps its pid");
    const onCLines = await grows(pair.c, mc.pid, out, onB.length + 20);
    assertExact(onCLines);

    // detach on C: dumped from inside its namespace, restored into a new one.
    const d = JSON.parse(
      (await onC(["detach", mc.id, "--wait", "90000", "--json"])).stdout,
    ) as DetachResult;
    assert.equal(d.nsPid, wl.pid);
    const detached = await grows(pair.c, d.pid, out, onCLines.length + 20);
    assertExact(detached);
    const stC = JSON.parse((await onC(["status", mc.id, "--json"])).stdout) as {
      detached?: { pid: number; alive: boolean };
    }[];
    assert.equal(stC[0]?.detached?.pid, d.pid);
    assert.equal(stC[0]?.detached?.alive, true);
    await pair.c.exec("kill", ["-KILL", String(d.pid)]);
    await lazyfs.run(["unmount", m.id, "--force"], true);
    for (const [host, pid] of [
      [pair.b, holderB],
      [pair.c, holderC],
    ] as const)
      await host.exec("kill", ["-KILL", String(pid)], { allowFailure: true });
  });
});
