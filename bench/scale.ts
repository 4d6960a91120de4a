/**
 * Scale benchmark (issue 22): N small processes drained from one origin at once
 * (`lazyfs migrate --pid P1,...,PN --parallel N`), for N in LAZYFS_BENCH_SCALE (default
 * 1,10,25,50). Each process appends a line to a file of its own every 10 ms and reads another.
 * Per N: wall time of the whole drain, freeze per process (median, max, and the max against the
 * single migration's median), resident memory of every LazyFS process on the target divided
 * by N (daemons, supervisors, standbys: their RSS from /proc), and `lazyfs status --json`
 * latency with the N migrations running (median of 5). Every process's output is checked to
 * go on after the migration. Prints a table; the last line is JSON.
 */
import { DATA_DIR, type Host } from "../src/hosts/index.js";
import {
  CLI,
  type LazyfsOnB,
  type Migrated,
  startHosts,
  stopHosts,
  waitFor,
} from "../test/e2e/helpers.js";

const SCALES = (process.env.LAZYFS_BENCH_SCALE ?? "1,10,25,50").split(",").map(Number);

/** Appends a numbered line every 10 ms to argv[1]; reads argv[2] now and then. */
const WORKLOAD = `import sys,time
i=0
with open(sys.argv[1],'a') as out, open(sys.argv[2],'rb') as inp:
  while True:
    out.write('%08d\\n' % i); out.flush(); i+=1
    if i % 50 == 0: inp.seek(0); inp.read(4096)
    time.sleep(0.01)`;

interface DrainJson {
  wallMs: number;
  trees: ({ originPid: number } & (Migrated | { error: string }))[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Resident memory (KiB) of every LazyFS process on the host (`main.js mount`). */
async function lazyfsRssKiB(b: Host): Promise<{ kib: number; processes: number }> {
  const r = await b.exec("sh", [
    "-c",
    "for p in $(pgrep -f '[m]ain.js mount'); do awk '/^VmRSS/ {print $2}' /proc/$p/status 2>/dev/null; done",
  ]);
  const values = r.stdout.split("\n").filter(Boolean).map(Number);
  return { kib: values.reduce((a, b) => a + b, 0), processes: values.length };
}

async function lines(host: Host, path: string): Promise<number> {
  return (await host.readFile(path).catch(() => "")).split("\n").filter(Boolean).length;
}

async function runScale(n: number, lazyfs: LazyfsOnB, a: Host, b: Host, address: string) {
  const dir = (i: number) => `${DATA_DIR}/scale-${n}/p${i}`;
  const pids: number[] = [];
  for (let i = 0; i < n; i++) {
    await a.exec("mkdir", ["-p", dir(i)]);
    await a.writeFile(`${dir(i)}/in.bin`, "x".repeat(64 * 1024));
    const wl = await a.startWorkload(
      "python3",
      ["-u", "-c", WORKLOAD, `${dir(i)}/out.txt`, `${dir(i)}/in.bin`],
      { stdout: "/dev/null", cwd: dir(i) },
    );
    pids.push(wl.pid);
  }
  for (let i = 0; i < n; i++) {
    await waitFor(`process ${i} runs`, async () =>
      (await lines(a, `${dir(i)}/out.txt`)) > 5 ? true : undefined,
    );
  }
  const t0 = performance.now();
  const r = await b.exec(
    process.execPath,
    [
      CLI,
      "migrate",
      "--from",
      `ssh://root@${address}`,
      "--pid",
      pids.join(","),
      "--parallel",
      String(n),
      ...lazyfs.sshArgs(),
      "--json",
    ],
    // A drain of 50 on a 2-core machine takes minutes.
    {
      allowFailure: true,
      env: { ...process.env, LAZYFS_STATE_DIR: lazyfs.stateDir },
      timeoutMs: 3_600_000,
    },
  );
  // One pid is a plain migration (its own JSON), several a drain.
  const parsed = JSON.parse(r.stdout) as DrainJson | Migrated;
  const report: DrainJson =
    "trees" in parsed
      ? parsed
      : { wallMs: Math.round(performance.now() - t0), trees: [{ originPid: pids[0]!, ...parsed }] };
  const migrated = report.trees.filter((t): t is { originPid: number } & Migrated => "id" in t);
  if (migrated.length !== n) {
    throw new Error(`${n - migrated.length} of ${n} not migrated: ${r.stderr.trim()}`);
  }
  // Every process goes on on the target.
  for (const [i, m] of migrated.entries()) {
    const out = `${m.mountpoint}${dir(i)}/out.txt`;
    const before = await lines(b, out);
    await waitFor(`process ${i} goes on`, async () =>
      (await lines(b, out)) > before ? true : undefined,
    );
  }
  const rss = await lazyfsRssKiB(b);
  const statusMs: number[] = [];
  for (let k = 0; k < 5; k++) {
    const t0 = performance.now();
    await lazyfs.run(["status", "--json"]);
    statusMs.push(performance.now() - t0);
  }
  const freezes = migrated.map((m) => m.timeline.freezeMs);
  for (const m of migrated) await lazyfs.stop(m);
  return {
    n,
    wall_ms: report.wallMs,
    freeze_median_ms: Math.round(median(freezes)),
    freeze_max_ms: Math.round(Math.max(...freezes)),
    rss_mib_per_migration: Math.round((rss.kib / 1024 / n) * 10) / 10,
    lazyfs_processes: rss.processes,
    status_ms: Math.round(median(statusMs)),
  };
}

const env = await startHosts();
try {
  const rows = [];
  for (const n of SCALES) {
    rows.push(await runScale(n, env.lazyfs, env.pair.a, env.pair.b, env.pair.a.address));
  }
  const single = rows.find((r) => r.n === 1)?.freeze_median_ms;
  console.log(
    "| trees | wall | freeze median | freeze max | max / single | LazyFS RSS per migration | LazyFS processes | status --json |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    const ratio = single ? `${(r.freeze_max_ms / single).toFixed(1)}x` : "-";
    console.log(
      `| ${r.n} | ${(r.wall_ms / 1000).toFixed(1)} s | ${r.freeze_median_ms} ms | ${r.freeze_max_ms} ms | ${ratio} | ${r.rss_mib_per_migration} MiB | ${r.lazyfs_processes} | ${r.status_ms} ms |`,
    );
  }
  console.log(JSON.stringify({ scales: rows }));
} finally {
  await stopHosts(env);
}
