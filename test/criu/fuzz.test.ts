/**
 * Seeded, bounded fuzzing of the image codec and `lazyfs inspect` with mutations of a real
 * dump made here (a small process tree with an open file, dumped by CRIU): bit flips,
 * truncation, inflated length fields, duplicated entries (a task repeated 40,000 times), random
 * bytes. Asserted: the only errors are LazyFS's typed ones (one `lazyfs: ...` line from the
 * CLI, never a stack trace), no case hangs (each is bounded: the in-process cases run in a
 * worker that is stopped after CASE_LIMIT_MS without progress, the CLI under a kill timeout),
 * and memory stays bounded (RSS growth of the worker below RSS_LIMIT).
 *
 * LAZYFS_FUZZ_SEED=N replays a run (the seed is printed always and in every failure);
 * LAZYFS_FUZZ_CASES sets the number of in-process cases (default 1000).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import { criuDump, isRawImageName } from "../../src/criu/index.js";
import { startWorkload, type Workload, waitForFile } from "../support/workload.js";
import { MUTATIONS, mutate, rng } from "./fuzz-mutate.js";

const CLI = resolve(import.meta.dirname, "../../src/cli/main.js");
const WORKER = resolve(import.meta.dirname, "fuzz-worker.js");
const SEED = Number(process.env.LAZYFS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CASES = Number(process.env.LAZYFS_FUZZ_CASES ?? 1000);
const CLI_CASES = 16;
/** A case making no progress for this long is a hang. */
const CASE_LIMIT_MS = 20_000;
/** Largest RSS growth of the worker over all cases. */
const RSS_LIMIT = 512 * 1024 * 1024;

const SCRIPT = `
import os, sys, time
d = sys.argv[1]
f = open(os.path.join(d, "data.txt"), "rb")
f.read(3)
if os.fork() == 0:
    while True: time.sleep(1)
open(os.path.join(d, "ready"), "w").close()
while True: time.sleep(1)
`;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { timeout: CASE_LIMIT_MS, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; killed?: boolean }) | null;
        const code = e ? (e.killed ? -1 : typeof e.code === "number" ? e.code : -2) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

describe(`fuzzing the image codec and inspect (LAZYFS_FUZZ_SEED=${SEED})`, () => {
  let dir: string;
  let images: string;
  let names: string[];
  let workload: Workload | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "lazyfs-fuzz-"));
    images = join(dir, "images");
    writeFileSync(join(dir, "data.txt"), "fuzz me\n");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(images);
    workload = startWorkload({ argv: ["python3", "-c", SCRIPT, dir] });
    await waitForFile(join(dir, "ready"));
    await criuDump({ pid: workload.pid, imagesDir: images });
    names = readdirSync(images).filter((n) => n.endsWith(".img") && !isRawImageName(n));
  });

  after(async () => {
    await workload?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("codec and loadDump in-process: typed errors only, no hang, bounded memory", async (t) => {
    t.diagnostic(`seed ${SEED}, ${CASES} cases over ${names.length} images`);
    const result = await new Promise<{ rssGrowth: number; peak: string }>((done, fail) => {
      const worker = new Worker(WORKER, {
        workerData: { dir: images, names, seed: SEED, cases: CASES },
      });
      let last = "start";
      let peak = "";
      let timer: NodeJS.Timeout;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          void worker.terminate();
          fail(new Error(`seed ${SEED}: ${last} made no progress for ${CASE_LIMIT_MS} ms (hang)`));
        }, CASE_LIMIT_MS);
      };
      arm();
      worker.on("message", (m: Record<string, unknown>) => {
        if (m.failure) {
          clearTimeout(timer);
          fail(new Error(String(m.failure)));
        } else if (m.peak) {
          peak = String(m.peak);
        } else if (m.done) {
          clearTimeout(timer);
          done({ rssGrowth: Number(m.rssGrowth), peak });
        } else {
          last = `case ${m.case} (${m.kind} of ${m.name})`;
          arm();
        }
      });
      worker.on("error", (err) => {
        clearTimeout(timer);
        fail(new Error(`seed ${SEED}: ${last}: worker died: ${err.stack ?? err}`));
      });
    });
    t.diagnostic(
      `RSS growth ${(result.rssGrowth / 1048576).toFixed(1)} MiB (peak at ${result.peak})`,
    );
    assert.ok(
      result.rssGrowth < RSS_LIMIT,
      `seed ${SEED}: RSS grew by ${result.rssGrowth} bytes (limit ${RSS_LIMIT})`,
    );
  });

  test("inspect CLI on a sample: exit 0, or one `lazyfs:` line and exit 1", async (t) => {
    const r = rng(SEED ^ 0x5eed);
    for (let i = 0; i < CLI_CASES; i++) {
      const name = names[Math.floor(r() * names.length)]!;
      // The duplicated pstree task is the case the issue reproduced: always in the sample.
      const kind = i === 0 ? "duplicate" : MUTATIONS[Math.floor(r() * MUTATIONS.length)]!;
      const file = join(images, i === 0 ? "pstree.img" : name);
      const pristine = readFileSync(file);
      writeFileSync(file, mutate(pristine, file, kind, r));
      try {
        const res = await cli(["inspect", ...(i % 2 ? ["--json"] : []), images]);
        const where = `seed ${SEED} CLI case ${i}: ${kind} of ${name}`;
        assert.notEqual(res.code, -1, `${where}: inspect hung (killed after ${CASE_LIMIT_MS} ms)`);
        assert.ok(res.code === 0 || res.code === 1, `${where}: exit ${res.code}: ${res.stderr}`);
        assert.doesNotMatch(res.stderr, /\n\s+at /, `${where}: stack trace: ${res.stderr}`);
        if (res.code !== 0) {
          assert.match(res.stderr, /^lazyfs: [^\n]+\n$/, `${where}: not one line: ${res.stderr}`);
        }
      } finally {
        writeFileSync(file, pristine);
      }
    }
    t.diagnostic(`seed ${SEED}, ${CLI_CASES} CLI cases`);
  });
});
