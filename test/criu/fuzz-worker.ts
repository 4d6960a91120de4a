/**
 * The in-process half of the fuzz test, in a worker thread so that the test can stop a case
 * that hangs (a busy loop would block its own timers). For each case: one image of the dump
 * mutated, then the codec (parseImage + decodeEntries of that image) and loadDump of the whole
 * directory. Every error must be a UserError (ImageError is one); anything else is reported
 * with the seed and case. Posts {case} before each case, {done, rssGrowth} at the end.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { UserError } from "../../src/common/errors.js";
import { decodeEntries, loadDump, parseImage } from "../../src/criu/index.js";
import { MUTATIONS, mutate, rng } from "./fuzz-mutate.js";

interface Job {
  dir: string;
  names: string[];
  seed: number;
  cases: number;
}

const job = workerData as Job;
const pristine = new Map(job.names.map((n) => [n, readFileSync(join(job.dir, n))]));
const r = rng(job.seed);
const rss0 = process.memoryUsage().rss;
let maxRss = rss0;

function expected(err: unknown): boolean {
  return err instanceof UserError;
}

for (let i = 0; i < job.cases; i++) {
  const name = job.names[Math.floor(r() * job.names.length)]!;
  const kind = MUTATIONS[Math.floor(r() * MUTATIONS.length)]!;
  parentPort!.postMessage({ case: i, name, kind });
  const bytes = mutate(pristine.get(name)!, name, kind, r);
  const where = `seed ${job.seed} case ${i}: ${kind} of ${name}`;
  try {
    const image = parseImage(bytes, join(job.dir, name));
    if (image.kind?.message) decodeEntries(image);
  } catch (err) {
    if (!expected(err)) {
      parentPort!.postMessage({
        failure: `${where}: codec threw ${String(err)}\n${(err as Error).stack}`,
      });
      process.exit(1);
    }
  }
  writeFileSync(join(job.dir, name), bytes);
  try {
    await loadDump(job.dir);
  } catch (err) {
    if (!expected(err)) {
      parentPort!.postMessage({
        failure: `${where}: loadDump threw ${String(err)}\n${(err as Error).stack}`,
      });
      process.exit(1);
    }
  }
  writeFileSync(join(job.dir, name), pristine.get(name)!);
  const rss = process.memoryUsage().rss;
  if (rss > maxRss) {
    maxRss = rss;
    parentPort!.postMessage({ peak: `${where}: RSS ${rss}` });
  }
}
parentPort!.postMessage({ done: true, rssGrowth: maxRss - rss0 });
