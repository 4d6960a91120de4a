/**
 * Fetch benchmark: a 1 GiB file behind a real sshd on loopback.
 *  1. `scp` of the whole file (OpenSSH, SFTP protocol) vs our engine fetching it whole
 *     (prefetch), interleaved, best of ROUNDS each, connection set-up included on both sides;
 *     both copies verified by sha256.
 *  2. A sparse reader: random 64 KiB-aligned 64 KiB reads (a database-like page pattern)
 *     touching 1% of the file; bytes read vs fetched with the default settings (target:
 *     fetched <= 1.2 x read); then the same reads with the old default, 256 KiB blocks
 *     (--block-size 256K).
 * Prints a table; the last line is JSON: { full_fetch_MBps: { lazyfs, scp }, sparse: {...} }.
 * MB = 10^6 bytes. Size override: LAZYFS_BENCH_MB (default 1024 MiB).
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Engine } from "../src/fetch/index.js";
import { startSshd } from "../src/hosts/sshd.js";
import { metaOf, rng, sftpOriginFor } from "../test/engine/helpers.js";

const run = promisify(execFile);
const SIZE = Number(process.env.LAZYFS_BENCH_MB ?? 1024) * 1024 * 1024;
const OLD_BLOCK = 256 * 1024;
const ROUNDS = 3;
const fmt = (runs: number[]) => runs.map((ms) => `${Math.round(ms)} ms`).join(", ");

async function makeFile(path: string, size: number) {
  const fh = await open(path, "w");
  const chunk = 16 * 1024 * 1024;
  for (let off = 0; off < size; off += chunk) {
    const buf = randomBytes(Math.min(chunk, size - off));
    await fh.write(buf, 0, buf.length, off);
  }
  await fh.close();
}

function hashFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path, { highWaterMark: 4 << 20 })
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

async function hashEngine(engine: Engine, id: string, size: number): Promise<string> {
  const h = createHash("sha256");
  for (let off = 0; off < size; off += 8 << 20) h.update(await engine.read(id, off, 8 << 20));
  return h.digest("hex");
}

const mbps = (bytes: number, ms: number) => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;

async function main() {
  const dir = await mkdtemp(join(tmpdir(), "lazyfs-bench-fetch-"));
  const sshd = await startSshd();
  try {
    const src = join(dir, "origin.bin");
    await makeFile(src, SIZE);
    const srcHash = await hashFile(src);
    const meta = await metaOf("big", src);
    const origin = () => sftpOriginFor(sshd);

    // scp: a fresh ssh connection per copy, timed from process start to exit.
    const scpOnce = async (): Promise<number> => {
      const dest = join(dir, "scp.bin");
      const t0 = performance.now();
      await run("scp", [
        "-q",
        "-i",
        sshd.identityFile,
        "-o",
        `UserKnownHostsFile=${sshd.knownHostsFile}`,
        "-o",
        "BatchMode=yes",
        "-P",
        String(sshd.port),
        `${sshd.user}@${sshd.host}:${src}`,
        dest,
      ]);
      const ms = performance.now() - t0;
      if ((await hashFile(dest)) !== srcHash) throw new Error("scp copy differs from the source");
      await rm(dest);
      return ms;
    };
    // engine: connection set-up included, then the whole file fetched by prefetch.
    let requests = 0;
    const engineOnce = async (): Promise<number> => {
      const cacheDir = join(dir, "cache-full");
      const t0 = performance.now();
      const o = origin();
      await o.connect();
      const e = await Engine.open({ cacheDir, origin: o });
      await e.addFile(meta);
      e.startPrefetch();
      await e.whenIndependent();
      const ms = performance.now() - t0;
      requests = e.status().total.requests;
      if ((await hashEngine(e, "big", SIZE)) !== srcHash) {
        throw new Error("engine copy differs from the source");
      }
      await e.close();
      await o.close();
      await rm(cacheDir, { recursive: true });
      return ms;
    };
    // Interleaved rounds so that neither side always runs on a colder or busier machine.
    const scpRuns: number[] = [];
    const engineRuns: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      scpRuns.push(await scpOnce());
      engineRuns.push(await engineOnce());
    }
    const scpMs = Math.min(...scpRuns);
    const engineMs = Math.min(...engineRuns);

    // sparse reader: random 64 KiB reads until 1% of the file was read, with the default
    // settings and with the old default of 256 KiB blocks, the same reads both times.
    const readLen = 64 * 1024;
    const sparseRun = async (blockSize?: number) => {
      const o2 = origin();
      const e2 = await Engine.open({
        cacheDir: join(dir, `cache-sparse-${blockSize ?? "default"}`),
        origin: o2,
        ...(blockSize ? { blockSize } : {}),
      });
      const storeBlock = (
        JSON.parse(
          await readFile(join(dir, `cache-sparse-${blockSize ?? "default"}`, "store.json"), "utf8"),
        ) as { blockSize: number }
      ).blockSize;
      await e2.addFile(meta);
      const rand = rng(42);
      let bytesRead = 0;
      let reads = 0;
      const verify = await open(src, "r");
      const want = Buffer.alloc(readLen);
      const t0 = performance.now();
      while (bytesRead < SIZE / 100) {
        const off = Math.floor((rand() * (SIZE - readLen)) / readLen) * readLen;
        const got = await e2.read("big", off, readLen);
        await verify.read(want, 0, readLen, off);
        if (!got.equals(want)) throw new Error(`sparse read differs at @${off}`);
        bytesRead += got.length;
        reads++;
      }
      const ms = performance.now() - t0;
      await verify.close();
      const { bytesFetched, requests: originReads } = e2.status().total;
      await e2.close();
      await o2.close();
      return { blockSize: storeBlock, ms, bytesRead, reads, bytesFetched, originReads };
    };
    const sparse = await sparseRun();
    const sparseOld = await sparseRun(OLD_BLOCK);
    const { bytesRead, reads } = sparse;
    const ratio = (r: { bytesFetched: number; bytesRead: number }) =>
      Math.round((r.bytesFetched / r.bytesRead) * 100) / 100;

    const lazyfs = mbps(SIZE, engineMs);
    const scp = mbps(SIZE, scpMs);
    const rows: [string, string][] = [
      ["file size", `${SIZE} bytes`],
      ["scp whole file (best)", `${Math.round(scpMs)} ms, ${scp} MB/s; runs ${fmt(scpRuns)}`],
      [
        "lazyfs whole file (best)",
        `${Math.round(engineMs)} ms, ${lazyfs} MB/s; runs ${fmt(engineRuns)}`,
      ],
      ["lazyfs origin reads", String(requests)],
      ["lazyfs / scp", `${(lazyfs / scp).toFixed(2)}x (target >= 0.9x)`],
      ["sparse reads", `${reads} x ${readLen} bytes in ${Math.round(sparse.ms)} ms`],
      ["sparse bytes read", String(bytesRead)],
      [
        `sparse bytes fetched, defaults (${sparse.blockSize >> 10} KiB blocks)`,
        `${sparse.bytesFetched} (${sparse.originReads} origin reads, ${ratio(sparse)}x read; ` +
          `target <= 1.2x -> ${ratio(sparse) <= 1.2 ? "met" : "MISSED"})`,
      ],
      [
        `sparse bytes fetched, --block-size ${OLD_BLOCK >> 10}K (old default)`,
        `${sparseOld.bytesFetched} (${sparseOld.originReads} origin reads, ${ratio(sparseOld)}x read)`,
      ],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    console.log(
      JSON.stringify({
        full_fetch_MBps: { lazyfs, scp },
        ratio: Math.round((lazyfs / scp) * 100) / 100,
        sparse: {
          bytes_read: bytesRead,
          bytes_fetched: sparse.bytesFetched,
          fetched_per_read: ratio(sparse),
          reads,
          origin_reads: sparse.originReads,
          block_size: sparse.blockSize,
        },
        sparse_256k_blocks: {
          bytes_read: sparseOld.bytesRead,
          bytes_fetched: sparseOld.bytesFetched,
          fetched_per_read: ratio(sparseOld),
          reads: sparseOld.reads,
          origin_reads: sparseOld.originReads,
          block_size: sparseOld.blockSize,
        },
      }),
    );
  } finally {
    await sshd.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
