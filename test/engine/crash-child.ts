/**
 * Child process for crash.test.ts: uses an engine on `cacheDir` (local origin) with fetches
 * and fsync'd writes in flight until it is killed with SIGKILL. After each fsync it prints
 * one JSON line: the slot it wrote and the ranges it read (all durable from then on).
 * argv: cacheDir, meta JSON, first slot.
 */
import { Engine, type FileMeta } from "../../src/fetch/index.js";
import { LocalOrigin } from "../../src/origin/index.js";
import { rng, slotWrite } from "./helpers.js";

const [cacheDir, metaJson, firstSlot] = process.argv.slice(2);
const meta = JSON.parse(metaJson!) as FileMeta;
const engine = await Engine.open({
  cacheDir: cacheDir!,
  origin: new LocalOrigin(),
  blockSize: 64 * 1024,
});
await engine.addFile(meta);
const rand = rng(Number(firstSlot) + 1);
for (let slot = Number(firstSlot); ; slot++) {
  const ranges: [number, number][] = Array.from({ length: 6 }, () => [
    Math.floor(rand() * meta.size),
    1 + Math.floor(rand() * 200_000),
  ]);
  const reads = Promise.all(ranges.map(([o, l]) => engine.read(meta.id, o, l)));
  const { offset, data } = slotWrite(slot);
  await engine.write(meta.id, offset, data);
  await Promise.all([reads, engine.fsync(meta.id)]);
  await engine.fsync(meta.id);
  process.stdout.write(`${JSON.stringify({ slot, reads: ranges })}\n`);
}
