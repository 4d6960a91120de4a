/**
 * Outage benchmark: a migrated reader on two simulated hosts whose link is cut (nft drop
 * inside the origin's namespace).
 *  - `status` while the origin is reachable and while it is cut off: the daemon's answer over
 *    its control socket and the whole `lazyfs status --json` (Node start included);
 *    target: the daemon answers within 200 ms whatever the origin does;
 *  - soft (`--origin-timeout 5s`): how long the first read of an outage waits before EIO, and
 *    how long the second and third reads of the same outage take to fail (at once);
 *  - after the link is back: time until the daemon is connected again, and (hard mount)
 *    until the waiting read has finished.
 * Prints a table; the last line is JSON. Samples per status figure: LAZYFS_BENCH_SAMPLES (20).
 */

import { callControl, type DaemonStatus } from "../src/daemon/index.js";
import type { HostPair } from "../src/hosts/index.js";
import {
  type LazyfsOnB,
  type Migrated,
  sleep,
  startHosts,
  stopHosts,
  waitFor,
} from "../test/e2e/helpers.js";
import {
  blockOrigin,
  chunks,
  goReader,
  MiB,
  readerOnA,
  results,
  stageDone,
} from "../test/e2e/origin-helpers.js";

const SAMPLES = Number(process.env.LAZYFS_BENCH_SAMPLES ?? 20);

let pair: HostPair;
let lazyfs: LazyfsOnB;

function spread(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    median: r(s[Math.floor(s.length / 2)] ?? 0),
    p95: r(s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] ?? 0),
    max: r(s[s.length - 1] ?? 0),
    n: s.length,
  };
}

async function controlStatus(id: string): Promise<{ ms: number; st: DaemonStatus }> {
  const t0 = performance.now();
  const st = (await callControl(`${lazyfs.stateDir}/${id}/control.sock`, {
    op: "status",
  })) as DaemonStatus;
  return { ms: performance.now() - t0, st };
}

async function statusSamples(id: string) {
  const control: number[] = [];
  const cli: number[] = [];
  const states = new Set<string>();
  for (let i = 0; i < SAMPLES; i++) {
    const { ms, st } = await controlStatus(id);
    control.push(ms);
    states.add(st.originState);
    const t0 = performance.now();
    await lazyfs.status(id);
    cli.push(performance.now() - t0);
    await sleep(100);
  }
  return { control: spread(control), cli: spread(cli), states: [...states] };
}

async function migrated(name: string, args: string[]): Promise<{ m: Migrated; onB: string }> {
  const size = 8 * MiB;
  const r = await readerOnA(
    pair,
    { name },
    [{ name: "data.bin", size }],
    [
      [[0, 0, MiB]],
      [
        [0, 3 * MiB, 64 * 1024],
        [0, 5 * MiB, 64 * 1024],
      ],
      chunks(0, size, 2 * MiB),
    ],
  );
  const m = await lazyfs.migrate(r.pid, ["--ssh-timeout", "3000", ...args]);
  const onB = `${m.mountpoint}${r.out}`;
  await results(pair.b, onB); // the output file local before the cut
  return { m, onB };
}

async function connectedAfter(id: string, t0: number): Promise<number> {
  await waitFor(
    "reconnected",
    async () => ((await controlStatus(id)).st.originState === "connected" ? true : undefined),
    180_000,
  );
  return performance.now() - t0;
}

async function main() {
  ({ pair, lazyfs } = await startHosts());
  try {
    // Soft: status reachable / cut off, time to EIO, reconnect after the link is back.
    const soft = await migrated("bench-soft", ["--origin-timeout", "5s"]);
    const reachable = await statusSamples(soft.m.id);
    let lift = await blockOrigin(pair, { cut: true });
    await goReader(pair, soft.m.pid);
    const first = await stageDone(pair.b, soft.onB, 0, 120_000);
    const cutOff = await statusSamples(soft.m.id);
    // Later in the same outage (the reconnect loop now mostly waits out its backoff).
    await goReader(pair, soft.m.pid);
    const later = await stageDone(pair.b, soft.onB, 1, 120_000);
    const t0 = performance.now();
    await lift();
    const softReconnectMs = await connectedAfter(soft.m.id, t0);
    await lazyfs.stop(soft.m);

    // Hard: a read waits through a 10 s cut and finishes once the link is back.
    const hard = await migrated("bench-hard", []);
    lift = await blockOrigin(pair, { cut: true });
    await goReader(pair, hard.m.pid);
    await sleep(10_000);
    const t1 = performance.now();
    await lift();
    await stageDone(pair.b, hard.onB, 0, 180_000);
    const hardResumeMs = performance.now() - t1;
    await lazyfs.stop(hard.m);

    const figures = {
      status_reachable_ms: reachable,
      status_cut_off_ms: cutOff,
      soft_eio_after_s: first[0]?.secs ?? null,
      soft_errno: first[0]?.errno ?? null,
      soft_later_reads_eio_after_ms: later.map((r) =>
        r.secs === undefined ? null : Math.round(r.secs * 1000 * 10) / 10,
      ),
      soft_later_errnos: later.map((r) => r.errno ?? null),
      soft_reconnect_after_link_back_ms: Math.round(softReconnectMs),
      hard_read_done_after_link_back_ms: Math.round(hardResumeMs),
    };
    const row = (k: string, v: string) => `| ${k} | ${v} |`;
    const s = (x: ReturnType<typeof spread>) =>
      `median ${x.median}, p95 ${x.p95}, max ${x.max} ms (n=${x.n})`;
    process.stdout.write(
      `${[
        "| figure | value |",
        "| --- | --- |",
        row("status, origin reachable: daemon answer", s(reachable.control)),
        row("status, origin reachable: `lazyfs status --json`", s(reachable.cli)),
        row("status, origin cut off: daemon answer", s(cutOff.control)),
        row("status, origin cut off: `lazyfs status --json`", s(cutOff.cli)),
        row("origin state while cut off", cutOff.states.join(", ")),
        row(
          "soft (--origin-timeout 5s): read failed after",
          `${figures.soft_eio_after_s} s (errno ${figures.soft_errno})`,
        ),
        row(
          "soft: 2nd and 3rd read of the same outage failed after",
          `${figures.soft_later_reads_eio_after_ms.join(" ms, ")} ms (errno ${figures.soft_later_errnos.join(", ")})`,
        ),
        row(
          "soft: connected again after the link is back",
          `${figures.soft_reconnect_after_link_back_ms} ms`,
        ),
        row(
          "hard: waiting read done after the link is back (10 s cut)",
          `${figures.hard_read_done_after_link_back_ms} ms`,
        ),
      ].join("\n")}\n`,
    );
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    await stopHosts({ pair, lazyfs });
  }
}

await main();
