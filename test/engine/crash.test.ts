import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Engine, type FileMeta } from "../../src/fetch/index.js";
import { LocalOrigin } from "../../src/origin/index.js";
import {
  metaOf,
  RecordingOrigin,
  randomFile,
  SLOT,
  sha256,
  slotWrite,
  tempDir,
} from "./helpers.js";

const CHILD = fileURLToPath(new URL("./crash-child.js", import.meta.url));

interface Round {
  confirmed: number[];
  reads: [number, number][];
  /** The slot being written when the process died: its bytes may be old or new. */
  uncertain: number;
}

/** Runs the child until it has confirmed `lines` fsyncs, then kills it with SIGKILL. */
function runAndKill(
  cacheDir: string,
  meta: FileMeta,
  firstSlot: number,
  lines: number,
): Promise<Round> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CHILD, cacheDir, JSON.stringify(meta), String(firstSlot)],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const round: Round = { confirmed: [], reads: [], uncertain: firstSlot };
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const msg = JSON.parse(line) as { slot: number; reads: [number, number][] };
      round.confirmed.push(msg.slot);
      round.reads.push(...msg.reads);
      round.uncertain = msg.slot + 1;
      if (round.confirmed.length === lines) child.kill("SIGKILL");
    });
    child.on("exit", (code, signal) => {
      if (signal === "SIGKILL" && round.confirmed.length >= lines) resolve(round);
      else reject(new Error(`child exited (${code ?? signal}) early: ${stderr}`));
    });
  });
}

describe("crash safety", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => {
    ({ dir, cleanup } = await tempDir("crash"));
  });
  after(() => cleanup());

  it("keeps every fsync'd write and fetched block across kill -9, never a half-fetched block", async () => {
    const src = join(dir, "origin.bin");
    const source = await randomFile(src, 32 * 1024 * 1024);
    const meta = await metaOf("f", src);
    const cacheDir = join(dir, "cache");
    const rounds = [
      await runAndKill(cacheDir, meta, 0, 40),
      await runAndKill(cacheDir, meta, 300, 25),
      await runAndKill(cacheDir, meta, 500, 30),
    ];

    const expected = Buffer.from(source);
    const uncertain: number[] = [];
    for (const r of rounds) {
      for (const slot of r.confirmed) {
        const { offset, data } = slotWrite(slot);
        data.copy(expected, offset);
      }
      uncertain.push(r.uncertain);
    }

    const origin = new RecordingOrigin(new LocalOrigin());
    const engine = await Engine.open({ cacheDir, origin, blockSize: 64 * 1024 });
    await engine.addFile(meta);
    // Every block read before a confirmed fsync is still local: nothing is fetched again.
    for (const r of rounds) {
      for (const [o, l] of r.reads) {
        const got = await engine.read("f", o, l);
        assert.equal(got.length, Math.min(l, source.length - o));
      }
    }
    assert.equal(origin.reads.length, 0, "blocks fetched before the crash were fetched again");

    const whole = await engine.read("f", 0, source.length);
    for (const slot of uncertain) {
      // Mask the slot whose write was in flight: old or new bytes are both correct there.
      whole.fill(0, slot * SLOT, (slot + 1) * SLOT);
      expected.fill(0, slot * SLOT, (slot + 1) * SLOT);
    }
    assert.equal(sha256(whole), sha256(expected));
    await engine.close();
  });
});
