/**
 * Outages, NFS-like: by default (hard) a read waits for an unreachable origin and goes on
 * when it is back; with `--origin-timeout` (soft) it fails with EIO after that long, later
 * reads of the same outage fail at once, and reads work again once the origin is back; `status` answers throughout; `lazyfs origin ID
 * URL` moves a live migration to the origin's new address and the waiting read goes on.
 *
 * Figures (status answer times, time to EIO) are printed as `figure: ...` lines; nothing here
 * asserts a time.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { callControl, type DaemonStatus } from "../../src/daemon/index.js";
import type { HostPair } from "../../src/hosts/index.js";
import { errorLines, type LazyfsOnB, sleep, startHosts, stopHosts, waitFor } from "./helpers.js";
import {
  assertExact,
  blockOrigin,
  chunks,
  goReader,
  MiB,
  readerOnA,
  results,
  stageDone,
} from "./origin-helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;
const EIO = 5;

/** The daemon's answer to a status request over its control socket, and how long it took. */
async function timedStatus(id: string): Promise<{ ms: number; st: DaemonStatus }> {
  const socket = `${lazyfs.stateDir}/${id}/control.sock`;
  const t0 = performance.now();
  // The state directory is on the root file system, visible here as on host b.
  const st = (await callControl(socket, { op: "status" }, 10_000)) as DaemonStatus;
  return { ms: performance.now() - t0, st };
}

/** `lazyfs status --json` (the whole CLI, Node start included), timed. */
async function timedCliStatus(id: string): Promise<number> {
  const t0 = performance.now();
  await lazyfs.status(id);
  return performance.now() - t0;
}

const figures: Record<string, unknown> = {};

/**
 * Runs `fn` while host a is cut off from b; `restore` (also run at the end) lifts the cut.
 * The reader's output file is served too: what it holds is fetched first, so that the test
 * can read it (locally) while the origin is away.
 */
async function withOriginCut(onB: string, fn: (restore: () => Promise<void>) => Promise<void>) {
  await results(pair.b, onB);
  const lift = await blockOrigin(pair, { cut: true });
  let lifted = false;
  const restore = async () => {
    if (lifted) return;
    lifted = true;
    await lift();
  };
  try {
    await fn(restore);
  } finally {
    await restore();
  }
}

/** A reader of one file of `size` random bytes in DATA_DIR/name, migrated to b. */
async function migrateReader(
  name: string,
  size: number,
  stages: [number, number, number][][],
  args: string[],
) {
  const r = await readerOnA(pair, { name }, [{ name: "data.bin", size }], stages);
  const m = await lazyfs.migrate(r.pid, ["--ssh-timeout", "3000", ...args]);
  return { m, onB: `${m.mountpoint}${r.out}`, data: r.data[0]! };
}

/** Median, max and count of `ms`, rounded to 0.1 ms. */
function spread(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { median: r(s[Math.floor(s.length / 2)] ?? 0), max: r(s[s.length - 1] ?? 0), n: s.length };
}

describe("origin outages", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(async () => {
    process.stdout.write(`figure: ${JSON.stringify(figures)}\n`);
    await writeFile(
      `/tmp/lazyfs-outage-figures-${process.pid}.json`,
      JSON.stringify(figures),
    ).catch(() => {});
    await stopHosts({ pair, lazyfs });
  });

  test("hard (default): a read waits while the origin is cut off and goes on, exact, when it is back; status answers throughout", async () => {
    const size = 16 * MiB;
    const { m, onB, data } = await migrateReader(
      "outage-hard",
      size,
      [chunks(0, size, 4 * MiB)],
      [],
    );
    try {
      await withOriginCut(onB, async (restore) => {
        await goReader(pair, m.pid);
        const times: number[] = [];
        const cli: number[] = [];
        const seen = new Set<string>();
        const lost = await waitFor(
          "status to show the origin lost",
          async () => {
            const { ms, st } = await timedStatus(m.id);
            times.push(ms);
            seen.add(st.originState);
            return st.originState === "reconnecting" || st.originState === "unreachable"
              ? st
              : undefined;
          },
          60_000,
        );
        assert.ok(lost.originLink, "the link's details");
        // Still waiting (hard): the stage has not finished while the origin is away.
        for (let i = 0; i < 10; i++) {
          const { ms, st } = await timedStatus(m.id);
          times.push(ms);
          seen.add(st.originState);
          cli.push(await timedCliStatus(m.id));
          await sleep(500);
        }
        const table = (await lazyfs.run(["status", m.id])).stdout;
        assert.match(table, /(reconnecting|unreachable).*\(attempt \d+/);
        const doneYet = (await results(pair.b, onB)).some((r) => r.done);
        assert.equal(doneYet, false, "the read waits while the origin is away");
        figures.hardStatusMs = { control: spread(times), cli: spread(cli), states: [...seen] };
        await restore();
        const reads = await stageDone(pair.b, onB, 0, 180_000);
        assertExact(reads, data);
        const st = await lazyfs.status(m.id);
        assert.ok(["connected", "released"].includes(st.originState), st.originState);
      });
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("soft (--origin-timeout 5s): EIO while the origin is away, later reads of the same outage fail at once, reads work once it is back", async () => {
    const size = 8 * MiB;
    const stages: [number, number, number][][] = [
      [[0, 0, MiB]],
      [
        [0, 3 * MiB, 64 * 1024],
        [0, 5 * MiB, 64 * 1024],
      ],
      chunks(0, size, 2 * MiB),
    ];
    const { m, onB, data } = await migrateReader("outage-soft", size, stages, [
      "--origin-timeout",
      "5s",
    ]);
    try {
      await withOriginCut(onB, async (restore) => {
        await goReader(pair, m.pid);
        const times: number[] = [];
        const first = await waitFor(
          "the read to fail",
          async () => {
            times.push((await timedStatus(m.id)).ms);
            const r = await results(pair.b, onB);
            return r.some((x) => x.done) ? r : undefined;
          },
          60_000,
        );
        const read = first.find((r) => !r.done)!;
        assert.equal(read.errno, EIO, `EIO while the origin is away: ${JSON.stringify(read)}`);
        figures.softEioAfterS = read.secs;
        figures.softStatusMs = spread(times);
        // The origin is declared away now: the second and third reads of this outage fail
        // too (at once; bench/outage.ts measures how fast), and status says it is away.
        await goReader(pair, m.pid);
        const later = await stageDone(pair.b, onB, 1, 60_000);
        assert.equal(later.length, 2);
        for (const r of later) {
          assert.equal(r.errno, EIO, `a later read of the outage: ${JSON.stringify(r)}`);
        }
        figures.softLaterEioAfterS = later.map((r) => r.secs);
        const away = await lazyfs.status(m.id);
        assert.equal(away.originState, "unreachable");
        assert.equal(away.originLink?.state, "unreachable");
        await restore();
        // Later reads work once the daemon, which kept trying, is connected again.
        await waitFor(
          "the daemon to reconnect",
          async () => ((await timedStatus(m.id)).st.originState === "connected" ? true : undefined),
          120_000,
        );
        await goReader(pair, m.pid);
        const reads = await stageDone(pair.b, onB, 2, 180_000);
        assertExact(reads, data);
      });
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("lazyfs origin ID URL: moves a live migration to the origin's new address; a foreign host key needs --accept-host-key", async () => {
    const size = 8 * MiB;
    const { m, onB, data } = await migrateReader(
      "outage-move",
      size,
      [chunks(0, size, 2 * MiB)],
      [],
    );
    // The origin's sshd on a second port with the same host key and client key; a third one
    // with a host key of its own.
    const conf = await sshdConfigOf(m.id);
    const same = await extraSshd(conf, 2222, false);
    const other = await extraSshd(conf, 2223, true);
    const unblock = await blockOrigin(pair, { port: 22 });
    try {
      await goReader(pair, m.pid);
      const refused = await lazyfs.run(["origin", m.id, `ssh://root@${pair.a.address}:2223`], true);
      assert.notEqual(refused.code, 0);
      const lines = errorLines(refused.stderr);
      assert.equal(lines.length, 1, refused.stderr);
      assert.match(lines[0]!, /^lazyfs: .*not the origin's.*--accept-host-key SHA256:/);
      const moved = await lazyfs.run(["origin", m.id, `ssh://root@${pair.a.address}:2222`]);
      assert.match(moved.stdout, /origin is now ssh:\/\/root@.*:2222 \(connected\)/);
      const reads = await stageDone(pair.b, onB, 0, 120_000);
      assertExact(reads, data);
      const st = await lazyfs.status(m.id);
      assert.equal(st.origin, `ssh://root@${pair.a.address}:2222`);
      // A foreign key accepted explicitly; recorded for a restarted daemon.
      const fp = /--accept-host-key (SHA256:[A-Za-z0-9+/]+)/.exec(lines[0]!)?.[1];
      assert.ok(fp, lines[0]);
      const accepted = await lazyfs.run([
        "origin",
        m.id,
        `ssh://root@${pair.a.address}:2223`,
        "--accept-host-key",
        fp,
        "--json",
      ]);
      const r = JSON.parse(accepted.stdout) as { origin: string; link: { state: string } };
      assert.equal(r.origin, `ssh://root@${pair.a.address}:2223`);
      const manifest = JSON.parse(
        await pair.b.readFile(`${lazyfs.stateDir}/${m.id}/manifest.json`),
      ) as { origin: string };
      assert.equal(manifest.origin, r.origin, "persisted for a restarted daemon");
    } finally {
      await unblock();
      same.kill("SIGKILL");
      other.kill("SIGKILL");
      await lazyfs.stop(m);
    }
  });
});

/** The sshd_config of the origin's sshd (the one the migration reached). */
async function sshdConfigOf(id: string): Promise<string> {
  const manifest = JSON.parse(await pair.b.readFile(`${lazyfs.stateDir}/${id}/manifest.json`)) as {
    ssh: { identityFile: string };
  };
  return `${manifest.ssh.identityFile.replace(/\/[^/]+$/, "")}/sshd_config`;
}

/** Another sshd on host a at `port`: the origin's own config, or with a new host key. */
async function extraSshd(config: string, port: number, newHostKey: boolean) {
  const dir = config.replace(/\/[^/]+$/, "");
  const conf = `${dir}/sshd_config.${port}`;
  let text = (await pair.a.readFile(config))
    .replace(/^Port .*$/m, `Port ${port}`)
    .replace(/^PidFile .*$/m, `PidFile ${dir}/sshd.${port}.pid`);
  if (newHostKey) {
    const key = `${dir}/host_key_${port}`;
    await pair.a.exec("sh", [
      "-c",
      `rm -f ${key} ${key}.pub; ssh-keygen -q -t ed25519 -N '' -f ${key}`,
    ]);
    text = text.replace(/^HostKey .*$/m, `HostKey ${key}`);
  }
  await pair.a.writeFile(conf, text);
  const child = pair.a.spawn("/usr/sbin/sshd", ["-D", "-e", "-f", conf]);
  let err = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sshd on ${port}: ${err}`)), 15_000);
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
      if (err.includes("Server listening")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.stderr?.resume();
  return child;
}
